//! Reading, trimming, validating and de-duplicating ID lists.
//!
//! Every line is checked before any request is made, so that a typo on line 4,000 fails the run
//! in a millisecond instead of after an hour of downloads.

use std::collections::HashSet;
use std::fmt;

use uuid::Uuid;

/// Which IDs a provider accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// UUID version 7 (RFC 9562 variant) only: Veridox.
    UuidV7,
    /// Any UUID: Keelvar.
    AnyUuid,
}

/// A valid, de-duplicated list of IDs in input order.
#[derive(Debug, Default)]
pub struct IdList {
    pub ids: Vec<Uuid>,
    /// How many lines repeated an ID seen earlier (folded into the first occurrence).
    pub duplicates: usize,
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Most bad lines listed in one error; the rest are counted.
pub const MAX_LISTED_BAD_LINES: usize = 20;

/// All the bad lines of an input (the first [`MAX_LISTED_BAD_LINES`] of them, and how many in all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub lines: Vec<BadLine>,
    pub total: usize,
}

/// Parse an ID list. Blank lines and `#` comments are ignored, whitespace and `\r` trimmed,
/// duplicates folded (first occurrence wins). Returns every bad line, not just the first.
pub fn parse_ids(input: &[u8], rule: IdRule) -> Result<IdList, BadInput> {
    let mut list = IdList::default();
    let mut seen = HashSet::new();
    let mut bad = BadInput {
        lines: Vec::new(),
        total: 0,
    };
    // A trailing newline does not make an extra line.
    let input = input.strip_suffix(b"\n").unwrap_or(input);
    if input.is_empty() {
        return Ok(list);
    }
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let result = match std::str::from_utf8(raw) {
            Err(_) => Err("not valid UTF-8 text".to_string()),
            Ok(text) => {
                let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
                if text.is_empty() || text.starts_with('#') {
                    continue;
                }
                parse_one(text, rule)
            }
        };
        match result {
            Ok(id) => {
                if seen.insert(id) {
                    list.ids.push(id);
                } else {
                    list.duplicates += 1;
                }
            }
            Err(reason) => {
                bad.total += 1;
                if bad.lines.len() < MAX_LISTED_BAD_LINES {
                    bad.lines.push(BadLine {
                        line: line_no,
                        reason,
                    });
                }
            }
        }
    }
    if bad.total > 0 { Err(bad) } else { Ok(list) }
}

/// Validate one trimmed, non-empty line.
pub fn parse_one(text: &str, rule: IdRule) -> Result<Uuid, String> {
    let shown = shorten(text);
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !well_formed {
        return Err(format!(
            "{shown} is not a UUID (expected 36 characters: 8-4-4-4-12 hex digits with hyphens, \
             like 01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d)"
        ));
    }
    let id = Uuid::parse_str(text).map_err(|e| format!("{shown} is not a UUID ({e})"))?;
    if rule == IdRule::UuidV7 {
        let version = id.get_version_num();
        if version != 7 {
            return Err(format!(
                "{shown} is a version {version} UUID; Veridox file IDs are UUID version 7 \
                 (the 13th hex digit is 7)"
            ));
        }
        if !matches!(bytes[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B') {
            return Err(format!(
                "{shown} has the wrong UUID variant (the 17th hex digit must be 8, 9, a or b)"
            ));
        }
    }
    Ok(id)
}

/// Quote a piece of user input for an error message: control characters escaped, and the
/// escaped text (not the raw one, which can grow eightfold) cut to about 60 characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::from("\"");
    for c in text.chars() {
        let escaped: String = c.escape_debug().collect();
        if out.len() + escaped.len() > MAX {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V7: &str = "01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d";
    const V7B: &str = "01932c07-a5e4-7c3b-8d2f-3b6a1e0c4f8e";
    const V4: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn trims_skips_comments_and_folds_duplicates() {
        let input = format!(
            "# nightly list\r\n\r\n  {V7}  \r\n{V7B}\n{}\n\t\n{V7}\n",
            V7.to_uppercase()
        );
        let list = parse_ids(input.as_bytes(), IdRule::UuidV7).unwrap();
        assert_eq!(list.ids.len(), 2);
        assert_eq!(list.ids[0].to_string(), V7);
        assert_eq!(list.ids[1].to_string(), V7B);
        assert_eq!(list.duplicates, 2);
    }

    #[test]
    fn empty_input_is_an_empty_list() {
        assert!(parse_ids(b"", IdRule::UuidV7).unwrap().ids.is_empty());
        assert!(
            parse_ids(b"\n# only a comment\n", IdRule::AnyUuid)
                .unwrap()
                .ids
                .is_empty()
        );
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let input = format!("{V7}\nnot-an-id\n{V4}\n{}\n", &V7[..35]);
        let err = parse_ids(input.as_bytes(), IdRule::UuidV7).unwrap_err();
        assert_eq!(err.total, 3);
        let lines: Vec<usize> = err.lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(err.lines[0].reason.contains("not a UUID"));
        assert!(err.lines[1].reason.contains("version 4"));
    }

    #[test]
    fn keelvar_accepts_any_uuid_version() {
        let input = format!("{V4}\n{V7}\n");
        assert_eq!(
            parse_ids(input.as_bytes(), IdRule::AnyUuid)
                .unwrap()
                .ids
                .len(),
            2
        );
    }

    #[test]
    fn rejects_other_uuid_spellings() {
        for s in [
            "{01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d}",
            "01932c07a5e47c3b9d2f3b6a1e0c4f8d",
            "urn:uuid:01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d",
            "01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8g",
        ] {
            assert!(parse_one(s, IdRule::AnyUuid).is_err(), "{s}");
        }
    }

    #[test]
    fn rejects_wrong_variant_for_veridox() {
        let s = "01932c07-a5e4-7c3b-cd2f-3b6a1e0c4f8d";
        assert!(
            parse_one(s, IdRule::UuidV7)
                .unwrap_err()
                .contains("variant")
        );
    }

    #[test]
    fn invalid_utf8_is_a_bad_line() {
        let err = parse_ids(b"\xff\xfe\n", IdRule::AnyUuid).unwrap_err();
        assert_eq!(err.lines[0].line, 1);
        assert!(err.lines[0].reason.contains("UTF-8"));
    }

    #[test]
    fn long_garbage_is_shortened_in_messages() {
        let junk = "x".repeat(10_000);
        let err = parse_one(&junk, IdRule::AnyUuid).unwrap_err();
        assert!(err.len() < 300);
        // Found by fuzzing: control characters escape to 6+ bytes each.
        let controls = "\u{1e}".repeat(60);
        let err = parse_one(&controls, IdRule::AnyUuid).unwrap_err();
        assert!(err.len() < 300, "{} bytes", err.len());
        assert!(err.starts_with("\"\\u{1e}"), "{err}");
    }

    #[test]
    fn lists_at_most_twenty_bad_lines_but_counts_all() {
        let input = "bad\n".repeat(50);
        let err = parse_ids(input.as_bytes(), IdRule::AnyUuid).unwrap_err();
        assert_eq!(err.total, 50);
        assert_eq!(err.lines.len(), MAX_LISTED_BAD_LINES);
    }
}
