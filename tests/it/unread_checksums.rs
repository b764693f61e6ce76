//! A checksum header fetchdocs cannot read (hex where the header is base64 only, a key its RFC
//! does not allow) is never silently dropped: each file's report entry says which one was not
//! checked, and the run warns once, however many files; the file itself does not fail for it.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, TestFaults};

fn unread(kind: &'static str, want: &[&str]) {
    let n = 5;
    let faults = Faults::from(TestFaults {
        checksum: kind,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(n, 61), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code(&out), 0, "{kind}: {err}");
    assert_eq!(summary(&report), (n as u64, n as u64, 0, 0), "{kind}");
    env.assert_intact(&report);
    for f in report["files"].as_array().unwrap() {
        assert_eq!(f["unchecked"], serde_json::json!(want), "{kind}: {f}");
        // Nothing was verified that was not read.
        assert!(f.get("verified").is_none(), "{kind}: {f}");
    }
    // The warning is printed once (and, at the end of the run, its count), not once a file.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("checksums that could not be read"))
        .collect();
    assert_eq!(lines.len(), 2, "{kind}: {err}");
    assert!(lines[0].starts_with("warning: "), "{kind}: {err}");
    assert!(
        lines[1].ends_with(&format!("(repeated {n} times)")),
        "{kind}: {err}"
    );
}

#[test]
fn hex_in_x_goog_hash_is_reported_unchecked_and_warned_once() {
    unread(
        "goog-hex",
        &[
            "x-goog-hash crc32c: not a base64 crc32c digest",
            "x-goog-hash md5: not a base64 md5 digest",
        ],
    );
}

#[test]
fn an_uppercase_repr_digest_key_is_reported_unchecked_and_warned_once() {
    unread(
        "repr-upper",
        &["Repr-Digest SHA-256: not a valid key (RFC 9530 algorithm keys are lowercase)"],
    );
}

#[test]
fn an_uppercase_digest_algorithm_is_read_and_checked() {
    // RFC 3230 algorithm names are case-insensitive: `Digest: SHA-256=…` is read and checked
    // (that a wrong one fails the file: tests/it/host_checks.rs).
    let faults = Faults::from(TestFaults {
        checksum: "digest-sha256",
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(2, 62), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("could not be read"),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&report), (2, 2, 0, 0));
    for f in report["files"].as_array().unwrap() {
        assert!(f.get("unchecked").is_none(), "{f}");
        assert_eq!(f["verified"], serde_json::json!(["sha256:digest"]), "{f}");
    }
}
