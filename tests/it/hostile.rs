//! Hostile or broken servers never cause a panic, a hang, or a lost file: each fault becomes a
//! retry or a per-file failure with a reason.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, KeelvarConfig, TestFaults};

fn no_panic(out: &std::process::Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

#[test]
fn stalled_short_and_unsized_bodies_are_retried_into_whole_files() {
    // Each file meets each fault once: a body that stalls half-way (cut by --read-timeout), one
    // that ends cleanly short of its Content-Length, one with no Content-Length at all.
    let faults = Faults {
        max_per_item: 1,
        test: TestFaults {
            stall_percent: 100,
            short_body_percent: 100,
            no_length_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(12, 31), faults);
    let (out, report) = env.run(&env.all_ids(), &["--read-timeout", "1"]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (12, 12, 0, 0));
    env.assert_intact(&report);
    assert!(env.partial_files().is_empty());
}

#[test]
fn a_server_that_ignores_range_or_answers_the_wrong_range_costs_a_restart_not_a_corrupt_file() {
    let faults = Faults {
        cut_percent: 100,
        max_per_item: 1,
        test: TestFaults {
            ignore_range_percent: 100,
            bad_range_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(10, 32), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
}

#[test]
fn file_host_redirects_are_followed_without_credentials() {
    let faults = Faults {
        max_per_item: 1,
        test: TestFaults {
            redirect_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(6, 33), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.file_requests, 12, "one redirect each: {s:?}");
    assert_eq!(s.file_requests_with_credentials, 0);
    assert_eq!(
        s.file_requests_with_referer, 0,
        "the signed URL is not passed on in Referer: {s:?}"
    );
}

#[test]
fn garbage_oversized_and_noisy_api_answers_are_survived() {
    let faults = Faults {
        max_per_item: 1,
        test: TestFaults {
            api_garbage_percent: 100,
            api_huge_percent: 100,
            api_noise: true,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(30, 34), faults);
    let (out, report) = env.run(&env.all_ids(), &["-v"]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (30, 30, 0, 0));
    env.assert_intact(&report);
    let err = stderr(&out);
    assert!(
        err.contains("cannot read") || err.contains("larger than"),
        "{err}"
    );
    assert!(
        err.contains("not requested"),
        "noise was seen and ignored: {err}"
    );
}

#[test]
fn non_http_download_urls_fail_that_file_with_a_reason() {
    let catalog = Catalog::generate(4, 35);
    let bad = catalog.files()[2].id;
    let faults = Faults::from(TestFaults {
        bad_scheme_ids: vec![bad],
        ..TestFaults::default()
    });
    let env = Env::new(catalog, faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 3, 0, 1));
    let e = report["files"][2]["error"].as_str().unwrap();
    assert!(e.contains("unsupported scheme (ftp:)"), "{e}");
    env.assert_intact(&report);
}

#[test]
fn an_api_redirect_is_not_followed_with_the_key() {
    let faults = Faults::from(TestFaults {
        api_redirect: true,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(3, 36), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 0, 0, 3));
    let e = report["files"][0]["error"].as_str().unwrap();
    assert!(e.contains("redirect") && e.contains("--base-url"), "{e}");
}

#[test]
fn garbage_job_polls_are_retried() {
    let faults = Faults {
        max_per_item: 1,
        test: TestFaults {
            api_garbage_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let kcfg = KeelvarConfig {
        polls_to_complete: 1,
        ..KeelvarConfig::default()
    };
    let env = Env::keelvar(Catalog::generate(8, 37), faults, kcfg);
    let (out, report) = env.run(&env.all_ids(), &[]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
}

/// Mount a tmpfs with `options` at `dir` for the life of the guard. Only root can; CI runs as
/// root. Where it cannot, the test says it did not run.
#[cfg(target_os = "linux")]
fn tmpfs(dir: &std::path::Path, options: &str) -> Option<Unmount> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Unmount(dir.to_path_buf()))
}

#[cfg(target_os = "linux")]
struct Unmount(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills up mid-run: a clear message, the temporary file removed, exit 1, and the
/// run stops instead of failing every remaining file the same way.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_stops_the_run_cleanly() {
    let env = Env::new(
        Catalog::new(
            (0..6)
                .map(|i| file(i + 1, &format!("big{i}.bin"), 400_000))
                .collect(),
        ),
        Faults::default(),
    );
    let Some(_mounted) = tmpfs(&env.out(), "size=1m") else {
        eprintln!("NOT RUN: a_full_disk_stops_the_run_cleanly needs root to mount a tmpfs");
        return;
    };
    let (out, report) = env.run(&env.all_ids(), &["-j", "1"]);
    no_panic(&out);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("stopping the run"), "{err}");
    let (requested, downloaded, _, failed) = summary(&report);
    assert_eq!(requested, 6);
    assert!(downloaded >= 1 && failed >= 1, "{report}");
    env.assert_intact(&report);
    env.assert_no_partial_under_final_names();
    assert!(env.partial_files().is_empty(), "{:?}", env.partial_files());
}

/// An output directory that cannot be written is refused before any request, with exit 2.
#[cfg(target_os = "linux")]
#[test]
fn a_read_only_output_directory_is_refused_before_any_request() {
    let env = Env::generated(3);
    let Some(_mounted) = tmpfs(&env.out(), "ro,size=1m") else {
        eprintln!("NOT RUN: a_read_only_output_directory_is_refused needs root to mount a tmpfs");
        return;
    };
    let (out, _) = env.run(&env.all_ids(), &[]);
    no_panic(&out);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains(&env.out().display().to_string()), "{err}");
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

/// An output path below a regular file cannot be created: exit 2, nothing requested.
#[test]
fn an_output_path_below_a_file_is_refused() {
    let env = Env::generated(2);
    std::fs::write(env.path("plain"), b"x").unwrap();
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .arg("-o")
        .arg(env.path("plain").join("sub"))
        .arg("--ids")
        .arg(ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot create the output directory"));
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn a_reset_connection_to_iso_certificate_pdf_is_retried_not_taken_for_a_tls_failure() {
    // The file host resets the first connection for the file before answering. The request
    // error's text names the URL, and the URL ends in the file's name: …/ISO_Certificate.pdf.
    // Only a real certificate error is fatal; this one is a reset, retried like any other.
    let faults = Faults::from(TestFaults {
        reset_first_requests: 1,
        ..TestFaults::default()
    });
    let env = Env::new(
        Catalog::new(vec![file(1, "ISO_Certificate.pdf", 48_213)]),
        faults,
    );
    let (out, report) = env.run(&env.all_ids(), &["-v"]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (1, 1, 0, 0));
    env.assert_intact(&report);
    assert_eq!(report["files"][0]["path"], "ISO_Certificate.pdf");
    let s = env.sandbox.stats();
    assert_eq!(s.file_resets, 1, "the reset happened: {s:?}");
    assert_eq!(s.file_requests, 1, "then one answered request: {s:?}");
}

/// A file replaced on its host after its first answer, which was cut half-way: what ends under
/// the final name is the new version whole, never half of each.
fn replaced_mid_download(extra: Faults) {
    let faults = Faults {
        cut_percent: 100,
        max_per_item: 1,
        test: TestFaults {
            replace_after_first_request: true,
            ..extra.test
        },
        ..extra
    };
    let env = Env::new(Catalog::generate(6, 41), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (6, 6, 0, 0));
    for f in report["files"].as_array().unwrap() {
        let id: uuid::Uuid = f["id"].as_str().unwrap().parse().unwrap();
        let got = std::fs::read(env.out().join(f["path"].as_str().unwrap())).unwrap();
        let new = env.catalog.get(&id).unwrap().version(1).bytes();
        assert_eq!(got.len(), new.len());
        assert!(
            sha256(&got) == sha256(&new),
            "{id}: not the new version whole (spliced?)"
        );
    }
    assert!(env.partial_files().is_empty());
}

#[test]
fn a_file_replaced_mid_download_is_fetched_whole_when_the_host_honours_if_range() {
    replaced_mid_download(Faults::default());
}

#[test]
fn a_file_replaced_mid_download_is_fetched_whole_when_the_host_ignores_if_range() {
    // The host answers the resume with a range of the new version: its ETag gives it away.
    replaced_mid_download(Faults::from(TestFaults {
        ignore_if_range: true,
        ..TestFaults::default()
    }));
}

#[test]
fn a_206_that_ends_short_of_the_file_is_not_taken_as_complete() {
    // Each first answer is cut half-way; each resume is answered `206 bytes N-M/*` with M short
    // of the end. The length the first answer announced settles it: start over.
    let faults = Faults {
        cut_percent: 100,
        max_per_item: 1,
        test: TestFaults {
            star_range_short: true,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(6, 42), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (6, 6, 0, 0));
    env.assert_intact(&report);
    env.assert_no_partial_under_final_names();
}

#[test]
fn a_body_without_a_length_is_accepted_when_it_ends_cleanly_and_the_report_says_so() {
    let faults = Faults {
        max_per_item: 0,
        test: TestFaults {
            no_length_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(4, 43), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    for f in report["files"].as_array().unwrap() {
        let note = f["note"].as_str().unwrap_or_default();
        assert!(note.contains("announced no length"), "{f}");
    }
}

#[test]
fn a_host_that_says_expired_with_a_400_gets_a_fresh_url_not_a_failure() {
    // Some object stores refuse an expired signature with 400 and an XML body that says so.
    // Each file's first URL is refused that way although the API said it was good.
    let faults = Faults::from(TestFaults {
        refuse_first_requests: 1,
        expired_as_400: true,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(8, 73), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (8, 8, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.file_requests, 16, "a refusal and a download each: {s:?}");
}

#[test]
fn a_host_that_drips_is_cut_by_the_speed_limit_and_the_file_resumed() {
    // The first answer for each file drips 64 bytes a second: never silent long enough for
    // the read timeout, far below --speed-limit.
    let faults = Faults::from(TestFaults {
        drip_first_requests: 1,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(4, 81), faults);
    let started = std::time::Instant::now();
    let (out, report) = env.run(
        &env.all_ids(),
        &["--speed-limit", "1024", "--speed-time", "2"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 4, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(
        s.file_requests, 8,
        "one cut and one whole answer each: {s:?}"
    );
    // A generous bound: without the speed limit each file would take minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn files_larger_than_max_file_size_fail_announced_or_not() {
    let files = vec![file(1, "small.pdf", 1_000), file(2, "big.pdf", 50_000)];
    for no_length in [0, 100] {
        let faults = Faults {
            max_per_item: 0,
            test: TestFaults {
                no_length_percent: no_length,
                ..TestFaults::default()
            },
            ..Faults::default()
        };
        let env = Env::new(Catalog::new(files.clone()), faults);
        let (out, report) = env.run(&env.all_ids(), &["--max-file-size", "20K"]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert_eq!(summary(&report), (2, 1, 0, 1));
        let big = &report["files"][1];
        assert!(
            big["error"].as_str().unwrap().contains("--max-file-size"),
            "{big}"
        );
        assert!(
            listing(&env.out()) == ["small.pdf"],
            "{:?}",
            listing(&env.out())
        );
        assert!(env.partial_files().is_empty(), "nothing left on the disk");
    }
}
