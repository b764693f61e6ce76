//! Safe file names and collisions.
//!
//! A vendor's label is whatever someone typed when uploading: it may hold `/`, `..`, control
//! characters, a Windows device name, or 4 KB of text. [`sanitize`] turns any label into one safe
//! path component; [`NameRegistry`] makes sure two IDs never share a name.

use std::hash::BuildHasher;
use std::path::Path;

use hashbrown::HashTable;

use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// Longest file name, in bytes, on the common file systems.
pub const MAX_NAME_BYTES: usize = 255;
/// An extension longer than this is treated as part of the stem when shortening.
const MAX_EXT_BYTES: usize = 16;

/// Turn a label into a single safe file-name component. Never empty (falls back to the ID),
/// never `.`/`..`, never hidden, no separators or control characters, no Windows reserved device
/// names or trailing dots/spaces, at most [`MAX_NAME_BYTES`] bytes.
pub fn sanitize(label: &str, id: &Uuid) -> String {
    // One spelling per name: composed (NFC), as most systems store it and as APFS compares it.
    // (ASCII is NFC already.)
    let safe = |c| if is_unsafe_char(c) { '_' } else { c };
    let mut name: String = match label.is_ascii() {
        true => label.chars().map(safe).collect(),
        false => label.nfc().map(safe).collect(),
    };
    // Windows strips trailing dots and spaces; leading/trailing blanks are never intended.
    name = trim_tail(name.trim_start_matches(char::is_whitespace)).to_string();
    // No hidden files, no `.`/`..`, and nothing that could clash with the `.fetchdocs` directory.
    if name.starts_with('.') {
        name.replace_range(0..1, "_");
    }
    if name.is_empty() {
        return id.to_string();
    }
    // Shorten first: a long label can shorten to a device name (`CONOUT$      …`).
    let name = fit(&name, "");
    if is_windows_reserved(&name) {
        return fit(&format!("_{name}"), "");
    }
    name
}

/// Without trailing dots and white space (in any order: `a. .\u{3000}.`).
fn trim_tail(s: &str) -> &str {
    s.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        // Line and paragraph separators break listings and log lines like a newline would.
        || matches!(c, '\u{2028}' | '\u{2029}')
        || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*')
        // Bidirectional overrides and zero-width marks that make a name display as something else.
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `CON`, `nul.txt`, `COM1.tar.gz`… are device names on Windows whatever their extension.
fn is_windows_reserved(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name).trim_end();
    let upper = base.to_ascii_uppercase();
    matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((upper.starts_with("COM") || upper.starts_with("LPT"))
        && upper.len() == 4
        && upper.as_bytes()[3].is_ascii_digit())
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && matches!(&base[3..], "¹" | "²" | "³"))
}

/// Split `name` into stem and extension (with its dot); an over-long "extension" is no extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_EXT_BYTES => name.split_at(dot),
        _ => (name, ""),
    }
}

/// `stem + suffix + ext`, shortening the stem (at a character boundary) so that the whole fits.
fn fit(name: &str, suffix: &str) -> String {
    let (stem, ext) = split_ext(name);
    let room = MAX_NAME_BYTES.saturating_sub(suffix.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    // A cut can leave a trailing dot or space, which Windows would strip: trim those.
    let stem = if cut < stem.len() {
        trim_tail(&stem[..cut])
    } else {
        stem
    };
    let mut out = String::with_capacity(MAX_NAME_BYTES);
    out.push_str(stem);
    out.push_str(suffix);
    out.push_str(ext);
    out
}

/// The name for `id` when `name` is taken: `stem (0193a2b4).ext`, or the full ID if even that is taken.
pub fn with_id_suffix(name: &str, id: &Uuid, full: bool) -> String {
    let simple = id.simple().to_string();
    let tag = if full { &simple[..] } else { &simple[..8] };
    fit(name, &format!(" ({tag})"))
}

/// Whether two names are one file name on a case-insensitive file system.
pub fn same_name(a: &str, b: &str) -> bool {
    key(a) == key(b)
}

/// Case- and normalisation-insensitive key, so `Report.pdf` and `report.pdf`, or `Café` in NFC
/// and in NFD, collide as they would on macOS (and the first pair on Windows).
fn key(name: &str) -> String {
    match name.is_ascii() {
        // NFC already.
        true => name.to_ascii_lowercase(),
        false => name.nfc().collect::<String>().to_lowercase(),
    }
}

/// Hands out final names so that no two IDs share one, and no file that fetchdocs did not write
/// for that ID is overwritten.
///
/// Names are remembered by a keyed 64-bit fingerprint of their comparison key (8 bytes and a
/// little table overhead each, whatever the name's length). Two names whose fingerprints
/// collide (about one chance in 10^7 in a run of a million) only cost the second one an ID
/// suffix; a taken name is never handed out again.
#[derive(Debug, Default)]
pub struct NameRegistry {
    taken: HashTable<u64>,
    keyer: std::hash::RandomState,
    /// The names of earlier runs are in (they are read only when a name is first needed).
    pub seeded: bool,
}

impl NameRegistry {
    fn fingerprint(&self, name: &str) -> u64 {
        self.keyer.hash_one(key(name))
    }

    /// Record that `name` belongs to some ID (an earlier run's record, or the report's own
    /// file): it is not handed out to another.
    pub fn claim(&mut self, name: &str) {
        self.take_if_free(name);
    }

    /// Make room for `n` more names at once (growing a large table step by step holds the old
    /// and the new one at the same time).
    pub fn reserve(&mut self, n: usize) {
        self.taken.reserve(n, |&t| t);
    }

    /// Take `name` if no ID has it (in any spelling that compares equal); whether it was free.
    fn take_if_free(&mut self, name: &str) -> bool {
        let f = self.fingerprint(name);
        if self.taken.find(f, |&t| t == f).is_some() {
            return false;
        }
        self.taken.insert_unique(f, f, |&t| t);
        true
    }

    /// Take every name in `dir` (the user's files, another tool's, earlier runs'): one read of
    /// the directory instead of a look at each name as it is chosen. What appears there later
    /// (another run sharing the directory) is caught by the move into place, which never
    /// replaces a file. Returns how many entries there were.
    pub fn occupied_in(&mut self, dir: &Path) -> std::io::Result<usize> {
        let mut n = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            self.claim(&entry.file_name().to_string_lossy());
            n += 1;
        }
        Ok(n)
    }

    /// Choose the name for `id` among the names taken so far (see [`NameRegistry::claim`] and
    /// [`NameRegistry::occupied_in`]). `previous` is the name an earlier run saved this ID under
    /// (its own by the record), reused so that re-downloads (`--force`) replace their own file.
    pub fn assign(&mut self, id: Uuid, label: &str, previous: Option<&str>) -> String {
        if let Some(prev) = previous {
            self.claim(prev);
            return prev.to_string();
        }
        let base = sanitize(label, &id);
        // A file we did not write (the user's own, or another tool's) is never replaced.
        if self.take_if_free(&base) {
            return base;
        }
        for full in [false, true] {
            let name = with_id_suffix(&base, &id, full);
            if self.take_if_free(&name) {
                return name;
            }
        }
        // The full-ID name is taken by something that is not ours: fall back to the bare ID plus
        // a counter, which cannot loop forever because each try is a new name.
        let mut n = 1u32;
        loop {
            let name = format!("{} ({n})", id.simple());
            if self.take_if_free(&name) {
                return name;
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(0x0193_2c07_a5e4_7c3b_9d2f_0000_0000_0000 | n)
    }

    fn assert_safe(name: &str) {
        assert!(!name.is_empty());
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
        assert!(!name.contains('/') && !name.contains('\\'));
        assert!(!name.chars().any(|c| c.is_control()));
        assert!(!name.starts_with('.'));
        assert!(!name.ends_with('.') && !name.ends_with(' '));
        assert!(!is_windows_reserved(name), "{name}");
        let p = Path::new(name);
        assert_eq!(p.components().count(), 1, "{name}");
    }

    #[test]
    fn one_name_per_spelling_of_a_label() {
        let nfc = "Caf\u{e9} menu.pdf";
        let nfd = "Cafe\u{301} menu.pdf";
        assert_eq!(sanitize(nfd, &id(1)), nfc, "names are composed (NFC)");
        let mut reg = NameRegistry::default();
        let a = reg.assign(id(1), nfc, None);
        let b = reg.assign(id(2), nfd, None);
        assert_eq!(a, nfc);
        assert_ne!(key(&a), key(&b), "the second gets a name of its own: {b}");
        // A name an earlier run recorded in NFD still owns its NFC spelling.
        let mut reg = NameRegistry::default();
        reg.claim(nfd);
        assert_ne!(reg.assign(id(4), nfc, None), nfc);
    }

    #[test]
    fn hostile_labels_become_one_safe_component() {
        let long_device = format!("CONOUT${}x", " ".repeat(300));
        let cases = [
            ("../../etc/passwd", "_._.._etc_passwd"),
            ("..", ""),
            (".", ""),
            ("/abs/path.pdf", "_abs_path.pdf"),
            ("C:\\Windows\\system32", "C__Windows_system32"),
            ("a\u{0}b\nc\td\u{7f}.pdf", "a_b_c_d_.pdf"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("com1.tar.gz", "_com1.tar.gz"),
            ("LPT9", "_LPT9"),
            ("report. . .", "report"),
            ("  spaced  ", "spaced"),
            (".bashrc", "_bashrc"),
            (".fetchdocs", "_fetchdocs"),
            ("invoice\u{202e}fdp.exe", "invoice_fdp.exe"),
            // Found by fuzzing: white space hidden between trailing dots.
            ("a @..\u{2029}....", "a @.._"),
            ("report. \u{3000}.", "report"),
            // Found by fuzzing: shortening a long label down to a device name.
            (long_device.as_str(), "_CONOUT$"),
            ("", ""),
            ("ISO Certificate (2024).pdf", "ISO Certificate (2024).pdf"),
        ];
        for (label, expected) in cases {
            let got = sanitize(label, &id(1));
            assert_safe(&got);
            assert_eq!(sanitize(&got, &id(1)), got, "idempotent for {label:?}");
            if expected.is_empty() {
                assert_eq!(got, id(1).to_string(), "{label:?}");
            } else {
                assert_eq!(got, expected, "{label:?}");
            }
        }
    }

    #[test]
    fn long_names_keep_their_extension_and_char_boundaries() {
        let label = format!("{}.pdf", "é".repeat(300));
        let got = sanitize(&label, &id(1));
        assert_safe(&got);
        assert!(got.ends_with(".pdf"));
        let suffixed = with_id_suffix(&got, &id(1), true);
        assert_safe(&suffixed);
        assert!(suffixed.ends_with(&format!(" ({}).pdf", id(1).simple())));
    }

    #[test]
    fn registry_disambiguates_collisions_by_id() {
        let mut reg = NameRegistry::default();
        let a = reg.assign(id(1), "report.pdf", None);
        let b = reg.assign(id(2), "Report.PDF", None);
        assert_eq!(a, "report.pdf");
        assert_ne!(a.to_lowercase(), b.to_lowercase());
        assert!(b.contains(&id(2).simple().to_string()[..8]));
        // Same ID asks again: same name.
        assert_eq!(reg.assign(id(1), "report.pdf", Some("report.pdf")), a);
    }

    #[test]
    fn registry_never_takes_a_file_it_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut reg = NameRegistry::default();
        assert_eq!(reg.occupied_in(dir.path()).unwrap(), 2);
        assert_ne!(
            reg.assign(id(4), "sub", None),
            "sub",
            "a directory takes its name too"
        );
        let name = reg.assign(id(3), "notes.txt", None);
        assert_ne!(name, "notes.txt");
        assert!(name.starts_with("notes (") && name.ends_with(").txt"));
    }

    #[test]
    fn registry_honours_earlier_runs_claims() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pdf"), b"x").unwrap();
        let mut reg = NameRegistry::default();
        reg.claim("a.pdf");
        // The owner gets its own file back; another ID does not.
        assert_eq!(reg.assign(id(1), "a.pdf", Some("a.pdf")), "a.pdf");
        assert_ne!(reg.assign(id(2), "a.pdf", None), "a.pdf");
    }
}
