//! The scheduler's policy, one case a test, with explicit instants (it never reads the clock).

use super::*;

// The policy end to end, as the driver sees it: synchronous calls with `now` passed in.
// Each test builds its instants from one `t0` (nothing sleeps, no runtime is needed).

const VERIDOX: Settings = Settings {
    concurrency: 4,
    max_batch: 25,
    url_lifetime: Duration::from_secs(3600),
    dry_run: false,
    give_up_after: Duration::from_secs(3600),
    time_scale: 1,
};
const KEELVAR: Settings = Settings {
    concurrency: 4,
    max_batch: 50,
    url_lifetime: Duration::from_secs(60),
    dry_run: false,
    give_up_after: Duration::from_secs(3600),
    time_scale: 1,
};

fn whole(bytes: u64) -> Whole {
    Whole {
        bytes,
        sha256: String::new(),
        verified: Vec::new(),
        unchecked: Vec::new(),
        note: None,
        renamed: None,
    }
}

/// An `api_delay` that keeps the scheduler from minting.
const BUSY: Duration = Duration::from_secs(1);

fn items(n: u128) -> Vec<Item> {
    (1..=n)
        .map(|i| Item::new(i as u32, Uuid::from_u128(i), None))
        .collect()
}

fn mints(actions: &[Action]) -> Vec<Vec<Uuid>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Mint(batch) => Some(batch.iter().map(|i| i.id).collect()),
            _ => None,
        })
        .collect()
}

fn take_mint(actions: Vec<Action>) -> Vec<Item> {
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::Mint(batch) => Some(batch),
            _ => None,
        })
        .expect("a mint call")
}

fn starts(actions: Vec<Action>) -> Vec<Ready> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Start { ready, .. } => Some(ready),
            _ => None,
        })
        .collect()
}

/// The answer of a mint call that resolved every item, issued at `issued`.
fn answer(batch: &[Item], issued: Instant, expires: Option<Instant>) -> MintOutcome {
    MintOutcome {
        files: batch
            .iter()
            .map(|i| Minted {
                id: i.id,
                url: Url::parse(&format!("https://files.example/{}", i.id)).unwrap(),
                label: format!("{}.pdf", i.id),
                issued,
                expires,
            })
            .collect(),
        ..MintOutcome::default()
    }
}

#[test]
fn idle_slots_are_filled_at_once_then_only_full_batches_are_asked_for() {
    let now = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(100), now);
    let (actions, _) = s.next(now, Duration::ZERO);
    assert_eq!(
        mints(&actions).iter().map(Vec::len).collect::<Vec<_>>(),
        [4]
    );
    let batch = take_mint(actions);
    // While that call is out, nothing else is asked for: its URLs will fill the slots.
    let (actions, wake) = s.next(now, Duration::ZERO);
    assert!(actions.is_empty());
    assert_eq!(wake, now + TICK);
    let out = answer(&batch, now, None);
    assert!(
        s.minted(batch, Ok(out), Duration::from_millis(100), now)
            .is_empty()
    );
    let started = starts(s.next(now, Duration::ZERO).0);
    assert_eq!(started.len(), 4, "-j 4: four downloads");
    assert_eq!(s.stats().mint_calls, 1);
}

#[test]
fn long_lived_urls_are_minted_in_full_batches_from_the_first() {
    let now = Instant::now();
    let mut s = Scheduler::new(VERIDOX, items(60), now);
    let first = take_mint(s.next(now, Duration::ZERO).0);
    assert_eq!(
        first.len(),
        25,
        "a full first batch: URLs that live an hour can wait"
    );
    // Nothing more until the API has answered once…
    assert!(mints(&s.next(now, Duration::ZERO).0).is_empty());
    let out = answer(&first, now, None);
    s.minted(first, Ok(out), Duration::ZERO, now);
    // …then another full batch while the first is in hand (and downloads start)…
    let (actions, _) = s.next(now, Duration::ZERO);
    let second = mints(&actions);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].len(), 25);
    assert_eq!(starts(actions).len(), 4);
    // …and nothing beyond that: the last 10 wait for a single request.
    assert!(mints(&s.next(now, Duration::ZERO).0).is_empty());
    let second: Vec<Item> = second[0]
        .iter()
        .map(|&id| Item::new(id.as_u128() as u32, id, None))
        .collect();
    let out = answer(&second, now, None);
    s.minted(second, Ok(out), Duration::ZERO, now);
    // The last 10 are asked for only once nothing is in hand: one request, not several.
    assert!(mints(&s.next(now, Duration::ZERO).0).is_empty());
}

#[test]
fn nothing_is_minted_while_the_rate_limiter_holds_requests_back() {
    let now = Instant::now();
    let mut s = Scheduler::new(VERIDOX, items(10), now);
    let (actions, wake) = s.next(now, Duration::from_secs(3));
    assert!(actions.is_empty());
    assert_eq!(wake, now + TICK.min(Duration::from_secs(3)));
    let (actions, _) = s.next(now, Duration::ZERO);
    assert_eq!(mints(&actions).len(), 1);
}

#[test]
fn the_first_keelvar_batch_is_full_when_it_starts_within_a_few_waves() {
    let now = Instant::now();
    let wide = Settings {
        concurrency: 16,
        ..KEELVAR
    };
    let mut s = Scheduler::new(wide, items(3000), now);
    assert_eq!(take_mint(s.next(now, Duration::ZERO).0).len(), 50);
    // With -j 4 a batch of 50 would wait through 12 waves: only what can start now.
    let mut s = Scheduler::new(KEELVAR, items(3000), now);
    assert_eq!(take_mint(s.next(now, Duration::ZERO).0).len(), 4);
}

#[test]
fn one_mint_call_until_the_api_answers_then_several_at_once() {
    // Slots enough for every call the cap allows to be wanted at once.
    let settings = Settings {
        concurrency: 1024,
        ..KEELVAR
    };
    let now = Instant::now();
    let mut s = Scheduler::new(settings, items(2000), now);
    let mut calls = Vec::new();
    for _ in 0..5 {
        calls.extend(take_mints(s.next(now, Duration::ZERO).0));
    }
    assert_eq!(calls.len(), 1, "one call until the API has answered");
    let first = calls.pop().unwrap();
    let out = answer(&first, now, None);
    s.minted(first, Ok(out), Duration::from_millis(50), now);
    for _ in 0..2 * MAX_MINTS_IN_FLIGHT {
        calls.extend(take_mints(s.next(now, Duration::ZERO).0));
    }
    assert_eq!(
        calls.len(),
        MAX_MINTS_IN_FLIGHT,
        "then up to the cap at once"
    );
    // A call that fails through its retries: back to one at a time.
    let failed = calls.pop().unwrap();
    s.minted(
        failed,
        Err(crate::error::samples::down_503()),
        Duration::ZERO,
        now,
    );
    let more: usize = (0..4)
        .map(|_| take_mints(s.next(now, Duration::ZERO).0).len())
        .sum();
    assert_eq!(more, 0, "{} calls still open", calls.len());
}

fn take_mints(actions: Vec<Action>) -> Vec<Vec<Item>> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Mint(batch) => Some(batch),
            _ => None,
        })
        .collect()
}

#[test]
fn a_url_near_its_stated_expiry_is_reminted_unused() {
    let now = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(1), now);
    let batch = take_mint(s.next(now, Duration::ZERO).0);
    // The vendor says the URL dies in 2 s: inside the 5 s start margin.
    let out = answer(&batch, now, Some(now + Duration::from_secs(2)));
    s.minted(batch, Ok(out), Duration::from_millis(100), now);
    let (actions, _) = s.next(now, Duration::ZERO);
    assert_eq!(s.stats().stale_before_start, 1);
    // Not started, and asked for again straight away.
    assert_eq!(mints(&actions), [vec![Uuid::from_u128(1)]]);
    assert!(starts(actions).is_empty());
}

/// A run of 3,000 files through `-j 16` in simulated time: each mint call is answered
/// `latency` after it goes out, each download takes `each`. Returns the most mint calls
/// that were out at once, and the share of the time that all 16 slots were busy, from when
/// the pace is known (the first call's answer, the first downloads, and a call sent after
/// them answered: nothing can keep slots busy before that) until nothing is left to mint.
fn simulate(settings: Settings, latency: Duration, each: Duration) -> (usize, f64) {
    let mut now = Instant::now();
    let mut s = Scheduler::new(
        Settings {
            concurrency: 16,
            ..settings
        },
        items(3000),
        now,
    );
    let step = each / 4;
    let mut calls: Vec<(Instant, Vec<Item>)> = Vec::new();
    let mut downloads: Vec<(Instant, Ready)> = Vec::new();
    let (mut most_calls, mut steps, mut full) = (0, 0u32, 0u32);
    let learned = now + 2 * latency + 2 * each;
    while !s.is_idle() {
        for (_, batch) in extract(&mut calls, now) {
            let out = answer(&batch, now, None);
            s.minted(batch, Ok(out), latency, now);
        }
        for (_, r) in extract(&mut downloads, now) {
            s.finished(r.item, "x".into(), Outcome::Whole(whole(1)), now);
        }
        loop {
            let (actions, _) = s.next(now, Duration::ZERO);
            if actions.is_empty() {
                break;
            }
            for a in actions {
                match a {
                    Action::Mint(batch) => calls.push((now + latency, batch)),
                    Action::Start { ready, .. } => downloads.push((now + each, ready)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        most_calls = most_calls.max(calls.len());
        if now >= learned && (!s.pending.is_empty() || !calls.is_empty()) {
            steps += 1;
            full += u32::from(downloads.len() == 16);
        }
        now += step;
    }
    (most_calls, f64::from(full) / f64::from(steps.max(1)))
}

/// Take out what is due at `now`.
fn extract<T>(v: &mut Vec<(Instant, T)>, now: Instant) -> Vec<(Instant, T)> {
    let (due, later) = std::mem::take(v).into_iter().partition(|(t, _)| *t <= now);
    *v = later;
    due
}

#[test]
fn a_slow_api_gets_enough_calls_at_once_to_keep_fast_downloads_busy() {
    let ms = Duration::from_millis;
    let busy_enough = |busy: f64| busy > 0.9;
    // 16 downloads a millisecond and an API that takes 20 ms: a batch of 25 lasts 1.6 ms,
    // so with two or three calls out the slots would sit idle most of the time.
    for settings in [VERIDOX, KEELVAR] {
        let (calls, busy) = simulate(settings, ms(20), ms(1));
        assert!(calls > 8 && calls <= MAX_MINTS_IN_FLIGHT, "{calls} calls");
        assert!(busy_enough(busy), "slots all busy {busy:.2} of the time");
    }
    // An API as fast as the downloads: a few calls ahead are enough.
    let (calls, busy) = simulate(VERIDOX, ms(1), ms(1));
    assert!(calls <= 4, "{calls} calls");
    assert!(busy_enough(busy), "slots all busy {busy:.2} of the time");
    // Downloads of a second each: a slow API is far ahead of them; what is asked for stays
    // within -j and two batches (16 + 50), so at most three calls are ever out.
    let (calls, _) = simulate(VERIDOX, ms(20), ms(1000));
    assert!(calls <= 3, "{calls} calls");
}

/// Mint for what is wanted now, answer every ID with a URL issued `now`, and start what
/// can start (the API then busy for a moment, so that nothing more is minted).
fn mint_and_start(s: &mut Scheduler, now: Instant) -> Vec<Ready> {
    let batch = take_mint(s.next(now, Duration::ZERO).0);
    let out = answer(&batch, now, None);
    s.minted(batch, Ok(out), Duration::ZERO, now);
    starts(s.next(now, BUSY).0)
}

/// Mint one at `now`, start it, and finish it 10 ms later (where `now` then is).
fn download_one(s: &mut Scheduler, now: &mut Instant) {
    for r in mint_and_start(s, *now) {
        *now += Duration::from_millis(10);
        s.finished(r.item, "x".into(), Outcome::Whole(whole(1)), *now);
    }
}

#[test]
fn refusals_of_two_files_at_similar_ages_prove_expiry_and_settle_the_batch() {
    let settings = Settings {
        concurrency: 1,
        ..KEELVAR
    };
    let mut now = Instant::now();
    let mut s = Scheduler::new(settings, items(100), now);
    // A fast file: at the pace it shows, a full batch is used long before it expires.
    download_one(&mut s, &mut now);
    let t0 = now;
    let batch = take_mint(s.next(t0, Duration::ZERO).0);
    assert_eq!(batch.len(), 50, "full batch");
    let out = answer(&batch, t0, None);
    s.minted(batch, Ok(out), Duration::ZERO, t0);
    let first = starts(s.next(t0, BUSY).0).pop().expect("one start");
    // 10 s later the host refuses it. One file refused says nothing about the others.
    let now = t0 + Duration::from_secs(10);
    let refuse = |s: &mut Scheduler, r: Ready, now: Instant| {
        s.finished(
            r.item,
            "a.pdf".into(),
            Outcome::Expired { requested_at: now },
            now,
        )
    };
    let actions = refuse(&mut s, first, now);
    assert!(
        actions.is_empty(),
        "a fresh URL, not a failure: {actions:?}"
    );
    assert_eq!(s.lifetime.estimate(), Duration::from_secs(60));
    let second = starts(s.next(now, BUSY).0).pop().expect("tried");
    assert_eq!(s.stats().stale_before_start, 0);
    // A second file refused at a similar age: URLs die at about 10 s.
    let now = now + Duration::from_millis(500);
    assert!(refuse(&mut s, second, now).is_empty());
    assert_eq!(s.stats().expired_hits, 2);
    assert_eq!(s.lifetime.estimate(), Duration::from_secs(5));
    // The other 48 URLs of that batch are as old: provably dead, re-minted without a try.
    let (actions, _) = s.next(now, Duration::ZERO);
    assert_eq!(s.stats().stale_before_start, 48);
    assert!(starts(actions).is_empty());
}

#[test]
fn one_file_always_refused_costs_that_file_only() {
    let settings = Settings {
        concurrency: 1,
        ..KEELVAR
    };
    let mut now = Instant::now();
    let mut s = Scheduler::new(settings, items(100), now);
    download_one(&mut s, &mut now);
    let t0 = now;
    let batch = take_mint(s.next(t0, Duration::ZERO).0);
    let out = answer(&batch, t0, None);
    s.minted(batch, Ok(out), Duration::ZERO, t0);
    // The same file refused four times, its other 49 URLs waiting: they are all tried.
    let refused = Uuid::from_u128(3);
    let mut failures = Vec::new();
    let mut done = 0;
    while let Some(r) = starts(s.next(now, BUSY).0).pop() {
        now += Duration::from_secs(1);
        let outcome = if r.item.id == refused {
            Outcome::Expired { requested_at: now }
        } else {
            done += 1;
            Outcome::Whole(whole(1))
        };
        for a in s.finished(r.item, "x".into(), outcome, now) {
            if let Action::Fail { item, reason } = a {
                failures.push((item.id, reason));
            }
        }
        // Fresh URLs for the refused file come from later mints.
        if s.ready.is_empty() && !s.pending.is_empty() {
            let batch = take_mint(s.next(now, Duration::ZERO).0);
            let out = answer(&batch, now, None);
            s.minted(batch, Ok(out), Duration::ZERO, now);
        }
    }
    assert_eq!(s.stats().stale_before_start, 0, "no URL discarded unused");
    assert_eq!(s.lifetime.estimate(), Duration::from_secs(60));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, refused);
    assert!(
        failures[0]
            .1
            .contains("refused by the file host (HTTP 403)")
    );
    assert!(done >= 49, "{done}");
}

#[test]
fn an_id_is_minted_a_bounded_number_of_times() {
    let now = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(1), now);
    let mut failed = None;
    for round in 1..=MAX_MINTS_PER_FILE {
        let batch = take_mint(s.next(now, Duration::ZERO).0);
        // Every URL the API gives is already at its stated end.
        let out = answer(&batch, now, Some(now));
        assert!(s.minted(batch, Ok(out), Duration::ZERO, now).is_empty());
        let (actions, _) = s.next(now, BUSY);
        assert!(!actions.iter().any(|a| matches!(a, Action::Start { .. })));
        let fail = actions.into_iter().find_map(|a| match a {
            Action::Fail { reason, .. } => Some(reason),
            _ => None,
        });
        if round < MAX_MINTS_PER_FILE {
            assert_eq!(fail, None, "round {round}: asked again");
        } else {
            failed = fail;
        }
    }
    let reason = failed.expect("failed after the last mint");
    assert!(reason.contains("expired or about to expire"), "{reason}");
    assert!(reason.contains("gave up after 8 tries"), "{reason}");
    assert!(s.is_idle());
}

#[test]
fn an_id_that_keeps_needing_fresh_urls_fails_when_its_time_is_up() {
    let settings = Settings {
        give_up_after: Duration::from_secs(10),
        ..VERIDOX
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(settings, items(1), t0);
    let ready = mint_and_start(&mut s, t0).pop().expect("started");
    // Refused after 11 s (a slow host, a long queue): its 10 s are spent.
    let now = t0 + Duration::from_secs(11);
    let actions = s.finished(
        ready.item,
        "a".into(),
        Outcome::Expired { requested_at: now },
        now,
    );
    assert!(
        matches!(&actions[..], [Action::Fail { reason, .. }] if reason.contains("--give-up-after")),
        "{actions:?}"
    );
}

#[test]
fn three_failed_mint_calls_in_a_row_fail_every_pending_id_with_the_cause() {
    let now = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(200), now);
    let mut failed = Vec::new();
    for _ in 0..BREAKER_AFTER {
        let batch = take_mint(s.next(now, Duration::ZERO).0);
        let result = Err(crate::error::samples::down_503());
        for a in s.minted(batch, result, Duration::ZERO, now) {
            if let Action::Fail { item, reason } | Action::NotAttempted { item, reason } = a {
                failed.push((item.id, reason));
            }
        }
    }
    assert_eq!(failed.len(), 200, "every ID, at once");
    assert!(
        failed
            .iter()
            .all(|(_, r)| r.contains("the API kept failing"))
    );
    assert!(failed.iter().all(|(_, r)| r.contains("HTTP 503")));
    assert!(s.is_idle());
}

/// A mint call that failed through its retries (what trips the breaker).
fn down() -> Result<MintOutcome, ApiError> {
    Err(crate::error::samples::down_503())
}

/// The next mint call at `now` fails through its retries: what the scheduler does then.
fn fail_a_call(s: &mut Scheduler, now: Instant) -> Vec<Action> {
    let batch = take_mint(s.next(now, Duration::ZERO).0);
    s.minted(batch, down(), Duration::ZERO, now)
}

/// The next mint call at `now` is answered, and its downloads start and finish a second
/// later (so that slots are free for the next call).
fn answer_a_call(s: &mut Scheduler, now: Instant) -> Instant {
    let batch = take_mint(s.next(now, Duration::ZERO).0);
    let out = answer(&batch, now, None);
    assert!(s.minted(batch, Ok(out), Duration::ZERO, now).is_empty());
    let done = now + Duration::from_secs(1);
    for r in starts(s.next(now, BUSY).0) {
        let outcome = Outcome::Whole(whole(1));
        assert!(matches!(
            &s.finished(r.item, "x".into(), outcome, done)[..],
            [Action::Complete { .. }]
        ));
    }
    done
}

#[test]
fn the_breaker_trips_at_the_nth_failed_call_in_a_row_and_not_before() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(200), t0);
    for n in 1..BREAKER_AFTER {
        // The call's IDs are asked for again; nothing fails yet.
        let actions = fail_a_call(&mut s, t0 + Duration::from_secs(n.into()));
        assert!(actions.is_empty(), "call {n}: {actions:?}");
        assert_eq!(s.abandoned(), None);
        assert_eq!(s.to_mint(), 200);
    }
    let actions = fail_a_call(&mut s, t0 + Duration::from_secs(BREAKER_AFTER.into()));
    assert!(s.abandoned().is_some());
    assert_eq!(actions.len(), 200);
    assert!(s.is_idle());
}

#[test]
fn an_answer_between_failed_calls_starts_the_breakers_count_over() {
    let mut now = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(200), now);
    for _ in 1..BREAKER_AFTER {
        assert!(fail_a_call(&mut s, now).is_empty());
    }
    now = answer_a_call(&mut s, now);
    // As many failures again as tripped nothing before: still nothing.
    for _ in 1..BREAKER_AFTER {
        assert!(fail_a_call(&mut s, now).is_empty());
    }
    assert_eq!(s.abandoned(), None);
    // One more in a row trips it.
    assert!(!fail_a_call(&mut s, now).is_empty());
    assert!(s.abandoned().is_some());
}

#[test]
fn once_tripped_every_pending_id_is_not_attempted_with_the_cause_said_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(KEELVAR, items(200), t0);
    let mut actions = Vec::new();
    for _ in 0..BREAKER_AFTER {
        actions = fail_a_call(&mut s, t0);
    }
    let why = format!(
        "the API kept failing ({BREAKER_AFTER} requests in a row, each after its retries): {}",
        crate::error::samples::down_503()
    );
    assert_eq!(s.abandoned(), Some(why.as_str()));
    // Those never asked for and those of the failed call alike: not attempted (the run's
    // error says why once), not failed one by one.
    let mut ids: Vec<u128> = actions
        .into_iter()
        .map(|a| match a {
            Action::NotAttempted { item, reason } if reason == why => item.id.as_u128(),
            other => panic!("{other:?}"),
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    // Nothing more is asked for, and IDs that come later are not attempted either.
    assert!(s.next(t0, Duration::ZERO).0.is_empty());
    let later = s.add([Item::new(201, Uuid::from_u128(201), None)]);
    assert!(
        matches!(&later[..], [Action::NotAttempted { reason, .. }] if *reason == why),
        "{later:?}"
    );
}

#[test]
fn urls_arrive_with_the_least_life_any_of_them_has_left() {
    let t0 = Instant::now();
    let secs = Duration::from_secs;
    let minute = secs(60);
    let url = |issued: Instant, expires: Option<Instant>| Minted {
        id: Uuid::from_u128(1),
        url: Url::parse("https://files.example/1").unwrap(),
        label: "1.pdf".into(),
        issued,
        expires,
    };
    assert_eq!(
        life_on_arrival(&[], minute, t0),
        None,
        "no URL, nothing learned"
    );
    // No stated expiry: a lifetime from issue.
    let issued_10s_ago = url(t0, None);
    assert_eq!(
        life_on_arrival(&[issued_10s_ago], minute, t0 + secs(10)),
        Some(secs(50))
    );
    // The stated expiry, when it comes first.
    let stated = url(t0, Some(t0 + secs(30)));
    assert_eq!(life_on_arrival(&[stated], minute, t0), Some(secs(30)));
    // A job found done late may state a minute from then: at most half a lifetime more
    // than the earliest issue allows.
    let found_late = url(t0, Some(t0 + secs(200)));
    assert_eq!(life_on_arrival(&[found_late], minute, t0), Some(secs(90)));
    // The least of several; none left once past.
    let both = [url(t0, None), url(t0, Some(t0 + secs(20)))];
    assert_eq!(life_on_arrival(&both, minute, t0), Some(secs(20)));
    assert_eq!(
        life_on_arrival(&both, minute, t0 + secs(100)),
        Some(Duration::ZERO)
    );
}

#[test]
fn an_unreachable_api_stops_minting_and_lets_downloads_under_way_finish() {
    let now = Instant::now();
    let mut s = Scheduler::new(VERIDOX, items(60), now);
    let first = take_mint(s.next(now, Duration::ZERO).0);
    let out = answer(&first, now, None);
    s.minted(first, Ok(out), Duration::ZERO, now);
    let (actions, _) = s.next(now, Duration::ZERO);
    let second = mints(&actions);
    assert_eq!(second.len(), 1);
    let started = starts(actions);
    assert_eq!(started.len(), 4);
    let second: Vec<Item> = second[0]
        .iter()
        .map(|&id| Item::new(id.as_u128() as u32, id, None))
        .collect();
    let actions = s.minted(
        second,
        Err(crate::error::samples::unreachable()),
        Duration::ZERO,
        now,
    );
    let not_attempted = actions
        .iter()
        .filter(|a| matches!(a, Action::NotAttempted { .. }))
        .count();
    assert_eq!(not_attempted, 60 - 25, "the second batch and the rest");
    assert!(matches!(
        actions.last(),
        Some(Action::Stop(Stop::Unreachable(_)))
    ));
    // The URLs in hand are still used; nothing more is minted.
    let (actions, _) = s.next(now, Duration::ZERO);
    assert!(mints(&actions).is_empty());
    for r in started {
        let done = Outcome::Whole(whole(1));
        s.finished(r.item, "x".into(), done, now);
    }
    let more = starts(s.next(now, Duration::ZERO).0);
    assert_eq!(more.len(), 4, "the ready URLs keep downloading");
}

#[test]
fn an_id_left_out_is_asked_again_twice_with_others_then_fails() {
    for settings in [VERIDOX, KEELVAR] {
        let settings = Settings {
            concurrency: 2,
            ..settings
        };
        let mut now = Instant::now();
        let mut s = Scheduler::new(settings, items(60), now);
        let left_out = Uuid::from_u128(1);
        let mut batches = Vec::new();
        let mut failed = Vec::new();
        // The API leaves one ID out of every answer; every download finishes at once.
        while !s.is_idle() {
            for a in s.next(now, Duration::ZERO).0 {
                match a {
                    Action::Mint(batch) => {
                        batches.push(batch.iter().map(|i| i.id).collect::<Vec<_>>());
                        let mut out = answer(&batch, now, None);
                        out.files.retain(|f| f.id != left_out);
                        if batch.iter().any(|i| i.id == left_out) {
                            out.missing.push(left_out);
                        }
                        for a in s.minted(batch, Ok(out), Duration::ZERO, now) {
                            if let Action::Fail { item, reason } = a {
                                failed.push((item.id, reason));
                            }
                        }
                    }
                    Action::Start { ready, .. } => {
                        let done = Outcome::Whole(whole(1));
                        s.finished(ready.item, "x".into(), done, now);
                    }
                    other => panic!("{other:?}"),
                }
            }
            now += Duration::from_millis(10);
        }
        let asked: Vec<&Vec<Uuid>> = batches.iter().filter(|b| b.contains(&left_out)).collect();
        assert_eq!(asked.len(), 3, "asked once, then again twice: {batches:?}");
        // Asked again inside a batch with other IDs while others were still to be asked.
        assert!(asked[1].len() > 1, "{batches:?}");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, left_out);
        assert!(
            failed[0].1.contains("not returned by the API"),
            "{}",
            failed[0].1
        );
    }
}

#[test]
fn a_file_refused_with_every_fresh_url_fails_alone() {
    let mut now = Instant::now();
    let mut s = Scheduler::new(VERIDOX, items(1), now);
    let mut last = Vec::new();
    for _ in 0..=MAX_FRESH_URLS {
        let ready = mint_and_start(&mut s, now).pop().expect("started");
        now += Duration::from_secs(1);
        last = s.finished(
            ready.item,
            "a".into(),
            Outcome::Expired { requested_at: now },
            now,
        );
        now += Duration::from_secs(1);
    }
    assert!(
        matches!(&last[..], [Action::Fail { reason, .. }] if reason.contains("also with 3 fresh")),
        "{last:?}"
    );
}

#[test]
fn refused_credentials_and_a_full_disk_stop_the_run() {
    let now = Instant::now();
    let mut s = Scheduler::new(VERIDOX, items(30), now);
    let batch = take_mint(s.next(now, Duration::ZERO).0);
    let actions = s.minted(
        batch,
        Err(crate::error::samples::auth()),
        Duration::ZERO,
        now,
    );
    let bad_key = crate::error::samples::auth().to_string();
    assert!(
        matches!(&actions[..], [Action::Stop(Stop::Credentials(m))] if m.to_string() == bad_key)
    );

    let mut s = Scheduler::new(VERIDOX, items(1), now);
    let ready = mint_and_start(&mut s, now).pop().expect("started");
    let actions = s.finished(
        ready.item,
        "a".into(),
        Outcome::StorageFailed("disk full".into()),
        now,
    );
    assert!(matches!(
        &actions[..],
        [Action::Fail { .. }, Action::Stop(Stop::Storage(_))]
    ));
}

#[test]
fn a_completed_download_is_recorded_and_feeds_the_completion_rate() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(VERIDOX, items(1), t0);
    let ready = mint_and_start(&mut s, t0).pop().expect("started");
    let done = t0 + Duration::from_millis(300);
    let actions = s.finished(ready.item, "a.pdf".into(), Outcome::Whole(whole(7)), done);
    assert!(
        matches!(&actions[..], [Action::Complete { name, file, .. }] if file.bytes == 7 && name == "a.pdf")
    );
    assert_eq!(s.avg_duration, Some(Duration::from_millis(300)));
    assert_eq!(s.completions.back(), Some(&done));
    assert!(s.is_idle());
}

#[test]
fn a_dry_run_resolves_in_full_batches_and_starts_nothing() {
    let settings = Settings {
        dry_run: true,
        ..VERIDOX
    };
    let now = Instant::now();
    let mut s = Scheduler::new(settings, items(60), now);
    let batch = take_mint(s.next(now, Duration::ZERO).0);
    assert_eq!(batch.len(), 25);
    let out = answer(&batch, now, None);
    let actions = s.minted(batch, Ok(out), Duration::ZERO, now);
    assert_eq!(actions.len(), 25);
    assert!(actions.iter().all(|a| matches!(a, Action::Resolved { .. })));
    assert!(starts(s.next(now, Duration::ZERO).0).is_empty());
}

fn demand() -> Demand {
    Demand {
        concurrency: 8,
        max_batch: 50,
        free_slots: 0,
        finishing_soon: 0,
        ready: 0,
        minting: 0,
        pending: 10_000,
    }
}

#[test]
fn mints_for_free_slots_only_when_nothing_is_known() {
    let d = Demand {
        free_slots: 8,
        ..demand()
    };
    assert_eq!(batch_size(&d), 8);
}

#[test]
fn fast_small_files_get_full_batches() {
    let d = Demand {
        free_slots: 3,
        finishing_soon: 400,
        ..demand()
    };
    assert_eq!(batch_size(&d), 50);
}

#[test]
fn slow_large_files_mint_only_for_slots_about_to_free() {
    // A slot is free and nothing is in hand: mint for it and for the one about to free.
    let d = Demand {
        free_slots: 1,
        finishing_soon: 1,
        ..demand()
    };
    assert_eq!(batch_size(&d), 2);
    // Nothing free, one about to free, nothing in hand: wait (the slot frees, then mint).
    let soon = Demand {
        free_slots: 0,
        finishing_soon: 1,
        ..demand()
    };
    assert_eq!(batch_size(&soon), 0);
    let busy = Demand {
        free_slots: 0,
        finishing_soon: 0,
        ..demand()
    };
    assert_eq!(batch_size(&busy), 0);
}

#[test]
fn unstarted_urls_are_capped() {
    // -j + MAX_MINTS_IN_FLIGHT×50 at most in hand (8 + 16×50 = 808). With 10 short of it
    // in hand, a full batch of 50 would pass it, so nothing is minted until one fits again.
    let cap = 8 + MAX_MINTS_IN_FLIGHT * 50;
    let d = Demand {
        free_slots: 8,
        finishing_soon: 10_000,
        ready: 100,
        minting: cap - 100 - 10,
        ..demand()
    };
    assert_eq!(batch_size(&d), 0);
    let room = Demand {
        ready: 100,
        minting: cap - 100 - 50,
        ..d
    };
    assert_eq!(batch_size(&room), 50);
}

#[test]
fn partial_batches_wait_while_urls_are_in_hand() {
    // 10 wanted, 5 URLs in hand and no idle slot: wait for a fuller batch.
    let d = Demand {
        free_slots: 2,
        finishing_soon: 13,
        ready: 5,
        ..demand()
    };
    assert_eq!(batch_size(&d), 0);
    // The last few pending IDs are a full batch of what is left.
    let tail = Demand { pending: 10, ..d };
    assert_eq!(batch_size(&tail), 10);
}

#[test]
fn never_more_than_pending() {
    let d = Demand {
        free_slots: 8,
        pending: 3,
        ..demand()
    };
    assert_eq!(batch_size(&d), 3);
}

#[test]
fn horizons_follow_lifetime() {
    assert_eq!(horizon(Duration::from_secs(60)), Duration::from_secs(15));
    assert_eq!(horizon(Duration::from_secs(3600)), MAX_HORIZON);
    assert_eq!(horizon(Duration::from_secs(2)), Duration::from_millis(500));
    assert_eq!(
        start_margin(Duration::from_secs(60)),
        Duration::from_secs(5)
    );
    assert_eq!(
        start_margin(Duration::from_secs(2)),
        Duration::from_millis(400)
    );
}

#[test]
fn lifetime_is_learned_from_refusals_of_several_files_not_one() {
    let secs = Duration::from_secs;
    let id = Uuid::from_u128;
    let mut l = Lifetime::new(secs(60));
    assert_eq!(l.estimate(), secs(60));
    assert!(!l.provably_expired(secs(59)));
    l.accepted(secs(1));
    assert_eq!(l.estimate(), secs(60), "successes alone change nothing");
    // One file refused, again and again: evidence about that file only.
    assert!(!l.refused(id(1), secs(8)));
    assert!(!l.refused(id(1), secs(9)));
    assert_eq!(l.estimate(), secs(60));
    assert!(!l.provably_expired(secs(30)));
    // A second file refused at a similar age: URLs die at about 8 s.
    assert!(l.refused(id(2), secs(10)));
    assert_eq!(l.estimate(), secs(4));
    assert!(l.provably_expired(secs(8)) && !l.provably_expired(secs(7)));
    assert!(
        !l.refused(id(3), secs(12)),
        "an older refusal teaches nothing"
    );
    // A URL that worked at 9 s contradicts "dead at 8 s": what is left is 10 and 12 s.
    l.accepted(secs(9));
    assert!(!l.provably_expired(secs(9)) && l.provably_expired(secs(10)));
    assert_eq!(
        l.estimate(),
        secs(9),
        "a URL that worked at 9 s proves at least that"
    );
    // Refusals far apart in age prove nothing together.
    let mut apart = Lifetime::new(secs(60));
    apart.refused(id(1), secs(1));
    apart.refused(id(2), secs(30));
    assert_eq!(apart.estimate(), secs(60));
    // Refusals younger than any vendor's URLs live are about the files, however many.
    let mut young = Lifetime::new(secs(60));
    for i in 0..10 {
        young.refused(id(i), Duration::from_millis(100));
    }
    assert_eq!(young.estimate(), secs(60));
    assert!(!young.provably_expired(secs(59)));
}

#[test]
fn completion_rate_predicts_finishes() {
    let now = Instant::now();
    let completions: VecDeque<Instant> = (0..11)
        .map(|i| now - Duration::from_millis(1000 - i * 100))
        .collect();
    // 10 completions per second over 1 s; within 5 s: 50.
    let n = finishing_within(
        &HashMap::new(),
        &completions,
        None,
        16,
        now,
        Duration::from_secs(5),
    );
    assert!((45..=50).contains(&n), "{n}");
}
