//! The listing's walk (`--from`): a task of its own that reads pages a step ahead of the
//! downloads, and what the pipeline does with each page and with the walk's end.

use super::*;

/// What becomes of the IDs a listing named before its walk stopped, said properly for any count.
pub(super) fn found_so_far(ids: usize) -> String {
    match ids {
        0 => "No file ID was found before it stopped".to_string(),
        1 => "The one file ID found is downloaded".to_string(),
        n => format!("The {n} file IDs found are downloaded"),
    }
}

/// How far the walk of a listing has come.
#[derive(Debug, Default)]
pub(super) struct WalkProgress {
    pub(super) pages: u32,
    pub(super) ids: usize,
    pub(super) bad: usize,
    /// What the walk noticed that the report should say.
    pub(super) notes: Vec<String>,
}

/// The walk of the listing, if the run has one: a task of its own, whose pages come over a
/// channel, and how far it has come.
#[derive(Default)]
pub(super) struct Walk {
    /// Where its pages come from, while they still may.
    pub(super) pages: Option<mpsc::Receiver<Event>>,
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
    pub(super) progress: WalkProgress,
}

impl Walk {
    /// Pages are still coming.
    pub(super) fn is_open(&self) -> bool {
        self.pages.is_some()
    }

    /// The next event of the listing, if one is being walked.
    pub(super) async fn next_event(&mut self) -> Option<Event> {
        match &mut self.pages {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// What the walk hands the run.
#[derive(Debug)]
pub(super) enum Event {
    Page(Box<Listed>),
    End(WalkEnd),
}

/// How a walk ended.
#[derive(Debug)]
pub(super) struct WalkEnd {
    pub(super) pages: u32,
    pub(super) bad: usize,
    /// Why it stopped before the last page, and where (for the report).
    pub(super) incomplete: Option<Incomplete>,
    /// The API refused the credentials: the whole run stops.
    pub(super) auth: Option<Credentials>,
    /// What ends the whole run once the downloads under way finish ([`page_failed`]).
    pub(super) fatal: Option<Fatal>,
}

/// Where the walk stopped when page `page` failed with `e`, and what ends the whole run with
/// it: an API that cannot be reached (exit 5, as for a mint call), a listing endpoint that is
/// not there (exit 2: a wrong base URL or provider; only on the first page, since a later
/// page's 404 is a link gone stale).
///
/// The report's [`Incomplete`] keeps the error as text, as it keeps every other reason a walk
/// stops for: it is what the report says, while the typed error goes to the [`Fatal`].
pub(super) fn page_failed(e: ListError, page: u32) -> (Incomplete, Option<Fatal>) {
    match e {
        ListError::Api(ApiError::Unreachable(e)) => (
            Incomplete::at(StopReason::Unreachable, page, e.to_string()),
            Some(e.into()),
        ),
        ListError::Api(e) => (
            Incomplete::at(StopReason::PageFailed, page, e.to_string()),
            None,
        ),
        ListError::NotFound(msg) => (
            Incomplete::at(StopReason::NotFound, page, msg.clone()),
            (page == 1).then_some(Fatal::Usage(msg)),
        ),
    }
}

/// Walk `source` from its first page to its last (or the first failure), handing each page to
/// `tx` as the run asks for it. A [`Guard`] makes it end whatever the listing does (pages that
/// link in a cycle or repeat, pages without anything new, more than `max_pages`).
///
/// The walk runs as a task of its own and hands each page over a channel of one: it fetches
/// the next page only once the run has taken the last one, and the run takes a page only when
/// it is running out of IDs to hand the scheduler. So listing requests are spent as they are
/// needed, between mint calls on the same rate limiter, and memory holds at most a page or two
/// beyond the per-ID bookkeeping.
pub(super) async fn walk<P: Provider>(
    provider: Arc<P>,
    source: Source,
    page_size: u32,
    max_pages: u32,
    tx: mpsc::Sender<Event>,
) {
    let mut cursor = Cursor::Start;
    let mut guard = Guard::new(max_pages);
    let mut walk = WalkEnd {
        pages: 0,
        bad: 0,
        incomplete: None,
        auth: None,
        fatal: None,
    };
    loop {
        let page_no = walk.pages + 1;
        match provider.list_page(source, page_size, &cursor).await {
            Ok(mut page) => {
                walk.pages = page_no;
                walk.bad += page.bad;
                let verdict = guard.judge(&mut page);
                if tx.send(Event::Page(Box::new(page))).await.is_err() {
                    // The run has ended; nobody is listening.
                    return;
                }
                match verdict {
                    Verdict::Next(c) => cursor = c,
                    Verdict::Last => break,
                    Verdict::Stop(why) => {
                        walk.incomplete = Some(why);
                        break;
                    }
                }
            }
            Err(ListError::Api(ApiError::Auth(e))) => {
                walk.auth = Some(e);
                break;
            }
            Err(e) => {
                let (why, fatal) = page_failed(e, page_no);
                walk.incomplete = Some(why);
                walk.fatal = fatal;
                break;
            }
        }
    }
    let _ = tx.send(Event::End(walk)).await;
}

impl<P: Provider> Pipeline<'_, P> {
    /// Take in a page of the listing: its new IDs (of this shard) join the run. In a dry run,
    /// those whose name the listing gives are resolved at once, without a mint call.
    pub(super) fn take_page(&mut self, page: Listed, progress: &mut WalkProgress) {
        progress.pages += 1;
        progress.bad += page.bad;
        progress.notes.extend(page.notes);
        let mut added = 0u64;
        for found in page.found {
            if self.settings.shard.is_some_and(|s| !s.contains(&found.id)) {
                continue;
            }
            let Some(index) = self.recorder.add(found.id) else {
                continue;
            };
            added += 1;
            progress.ids += 1;
            if let (true, Some(label)) = (self.settings.dry_run, found.label) {
                if !self.settings.force && self.completed(&found.id, index).is_some() {
                    // Reported as skipped when the feed gets to it.
                    continue;
                }
                let previous = self.state.previous_name(&found.id, index);
                self.resolved(Item::new(index, found.id, previous), &label);
            }
        }
        self.ui.more_files(added);
        log::debug!(
            "listing page {}: {added} new ID(s), {} in all so far",
            progress.pages,
            progress.ids
        );
    }

    /// The walk of the listing ended: put how it went in the report, and say so if it did not
    /// reach the end (unless the error that ends the run says it: `said`).
    pub(super) fn end_listing(
        &mut self,
        progress: &WalkProgress,
        incomplete: Option<Incomplete>,
        said: bool,
    ) {
        let Some((source, _)) = self.settings.listing else {
            return;
        };
        match &incomplete {
            // Said once, by the error that ends the run.
            Some(_) if said => {}
            Some(why) => {
                let then = match why.reason {
                    r if r.transient() => "run again to pick up the rest",
                    StopReason::MaxPages => "raise --max-pages to read further",
                    _ => "running again will not get further until the listing is fixed",
                };
                log::error!(
                    "the {source} listing was not read to its end: {why}. {}; {then}",
                    found_so_far(progress.ids)
                );
            }
            None => {}
        }
        if progress.bad > 0 {
            log::warn!(
                "the {source} listing named {} entr{} that are not file IDs; skipped",
                progress.bad,
                if progress.bad == 1 { "y" } else { "ies" }
            );
        }
        self.recorder.set_listing(ListingReport {
            source: source.name(),
            pages: progress.pages,
            ids: progress.ids,
            bad_entries: progress.bad,
            complete: incomplete.is_none(),
            reason: incomplete.as_ref().map(|i| i.reason.code()),
            error: incomplete.map(|i| i.to_string()),
            notes: progress.notes.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::samples;

    #[test]
    fn an_unreachable_api_ends_the_run_with_its_typed_error_and_the_report_keeps_its_words() {
        let (why, fatal) = page_failed(ListError::Api(samples::unreachable()), 3);
        let said = samples::unreachable().to_string();
        assert_eq!(
            why,
            Incomplete::at(StopReason::Unreachable, 3, said.clone())
        );
        let fatal = fatal.expect("an unreachable API ends the run");
        assert!(matches!(fatal, Fatal::Unreachable(_)));
        assert_eq!(fatal.to_string(), said);
    }

    #[test]
    fn a_page_that_failed_otherwise_ends_only_the_walk() {
        let (why, fatal) = page_failed(ListError::Api(samples::down_503()), 2);
        let said = samples::down_503().to_string();
        assert_eq!(why, Incomplete::at(StopReason::PageFailed, 2, said));
        assert!(fatal.is_none());
    }

    #[test]
    fn a_listing_not_found_is_a_usage_error_on_its_first_page_only() {
        let (why, fatal) = page_failed(ListError::NotFound("GET /files: 404".into()), 1);
        assert_eq!(
            why,
            Incomplete::at(StopReason::NotFound, 1, "GET /files: 404")
        );
        assert!(matches!(fatal, Some(Fatal::Usage(m)) if m == "GET /files: 404"));
        let (why, fatal) = page_failed(ListError::NotFound("GET /files: 404".into()), 4);
        assert_eq!(why.page, 4);
        assert!(fatal.is_none(), "a later page's 404 is a link gone stale");
    }

    #[test]
    fn what_a_stopped_listing_found_is_said_properly_for_any_count() {
        assert_eq!(found_so_far(0), "No file ID was found before it stopped");
        assert_eq!(found_so_far(1), "The one file ID found is downloaded");
        assert_eq!(found_so_far(7), "The 7 file IDs found are downloaded");
        assert!(!found_so_far(0).contains("0 ID"));
    }
}
