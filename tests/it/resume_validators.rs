//! A resume continues the bytes kept only when the host repeats the validator they came with:
//! a host that ignores `If-Range` answers a changed file with a 206 of the new bytes, and
//! only a changed (or missing) `ETag` or `Last-Modified` gives it away. Also: what fetchdocs
//! keeps beside a `.part` is read only from a regular file.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, TestFaults};

/// Each file is cut half-way on its first answer, then replaced on the host (same length,
/// other bytes); the host ignores `If-Range`. What ends under the final name is the new
/// version whole, never half of each.
fn replaced_behind_a_host_that_ignores_if_range(extra: Faults) {
    let faults = Faults {
        cut_percent: 100,
        max_per_item: 1,
        test: TestFaults {
            replace_after_first_request: true,
            ignore_if_range: true,
            ..extra.test
        },
        ..extra
    };
    let env = Env::new(Catalog::generate(4, 57), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 4, 0, 0));
    for f in report["files"].as_array().unwrap() {
        let id: uuid::Uuid = f["id"].as_str().unwrap().parse().unwrap();
        let got = std::fs::read(env.out().join(f["path"].as_str().unwrap())).unwrap();
        let file = env.catalog.get(&id).unwrap();
        let new = file.version(1).bytes();
        assert_eq!(got.len(), new.len());
        assert!(
            sha256(&got) == sha256(&new),
            "{id}: not the new version whole (spliced?)"
        );
        assert_eq!(f["sha256"], sha256(&new));
        assert_eq!(f["bytes"], new.len() as u64);
    }
    assert!(env.partial_files().is_empty());
    // Each file: the cut first answer, the resume that was refused, the whole new version.
    let s = env.sandbox.stats();
    assert_eq!(s.range_requests, 4, "{s:?}");
    assert_eq!(s.file_requests, 12, "{s:?}");
}

#[test]
fn a_resume_answered_with_another_last_modified_starts_over() {
    // Last-Modified is the only validator (strong: well before the host's Date).
    replaced_behind_a_host_that_ignores_if_range(Faults::from(TestFaults {
        no_etag: true,
        ..TestFaults::default()
    }));
}

#[test]
fn a_resume_answered_without_the_etag_kept_starts_over() {
    // The first answer had an ETag; the 206 has none (and the same Last-Modified would not
    // vouch for it either: here it differs, as the file was replaced).
    replaced_behind_a_host_that_ignores_if_range(Faults::from(TestFaults {
        no_etag_on_ranges: true,
        ..TestFaults::default()
    }));
}

#[cfg(unix)]
#[test]
fn a_fifo_planted_as_the_meta_of_a_part_is_not_opened_and_the_file_starts_over() {
    let env = Env::new(Catalog::generate(2, 58), Faults::default());
    let ids = env.all_ids();
    let partial = env.out().join(".fetchdocs/partial");
    std::fs::create_dir_all(&partial).unwrap();
    // A non-empty `.part` (bytes that belong to nothing), its meta a FIFO with no writer:
    // opening it to read would wait for ever, past SIGTERM, the lock held.
    let part = partial.join(format!("{}.part", ids[0]));
    std::fs::write(&part, vec![b'x'; 1000]).unwrap();
    let meta = partial.join(format!("{}.part.meta", ids[0]));
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&meta)
            .status()
            .unwrap()
            .success()
    );
    // (`run` kills the binary after 120 s: a hang fails the test rather than hanging it.)
    let (out, report) = env.run(&ids, &[]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (2, 2, 0, 0));
    env.assert_intact(&report);
    // No usable kept bytes: the file was asked for whole, never resumed.
    let s = env.sandbox.stats();
    assert_eq!(s.range_requests, 0, "{s:?}");
    assert_eq!(s.file_requests, 2, "{s:?}");
    assert!(env.partial_files().is_empty(), "{:?}", env.partial_files());
    assert!(!meta.exists());
}
