//! Name sanitising: whatever the label, one safe path component within the output directory.
#![no_main]

use fetchdocs::fuzzing::{MAX_NAME_BYTES, sanitize, with_id_suffix};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fn assert_safe(name: &str) {
    assert!(!name.is_empty());
    assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
    assert!(!name.contains('/') && !name.contains('\\'), "{name:?}");
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert!(!name.starts_with('.'), "{name:?}");
    assert!(unicode_normalization::is_nfc(name), "not NFC: {name:?}");
    assert!(!name.ends_with('.') && !name.ends_with(' '), "{name:?}");
    let mut parts = Path::new(name).components();
    assert!(matches!(parts.next(), Some(Component::Normal(_))), "{name:?}");
    assert!(parts.next().is_none(), "{name:?}");
}

fuzz_target!(|data: &[u8]| {
    let label = String::from_utf8_lossy(data);
    let id = uuid::Uuid::from_u128(0x0193_2c07_a5e4_7c3b_9d2f_3b6a_1e0c_4f8d);
    let name = sanitize(&label, &id);
    assert_safe(&name);
    assert_eq!(sanitize(&name, &id), name, "sanitising is idempotent");
    assert_safe(&with_id_suffix(&name, &id, false));
    assert_safe(&with_id_suffix(&name, &id, true));
});
