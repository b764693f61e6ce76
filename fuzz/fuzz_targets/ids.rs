//! ID-list parsing: never panics; what it accepts is unique, canonical and valid for the rule.
#![no_main]

use fetchdocs::fuzzing::{IdRule, MAX_LISTED_BAD_LINES, parse_ids, parse_one};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for rule in [IdRule::UuidV7, IdRule::AnyUuid] {
        match parse_ids(data, rule) {
            Ok(list) => {
                let mut seen = std::collections::HashSet::new();
                for id in &list.ids {
                    assert!(seen.insert(*id), "duplicate survived");
                    assert_eq!(parse_one(&id.to_string(), rule), Ok(*id));
                    if rule == IdRule::UuidV7 {
                        assert_eq!(id.get_version_num(), 7);
                    }
                }
            }
            Err(bad) => {
                assert!(bad.total >= 1);
                assert!(bad.lines.len() <= MAX_LISTED_BAD_LINES.min(bad.total));
                assert!(bad.lines.windows(2).all(|w| w[0].line < w[1].line));
                assert!(bad.lines.iter().all(|b| b.reason.len() < 400));
            }
        }
    }
});
