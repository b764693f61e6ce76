//! Feeding the scheduler: IDs taken in portions, what earlier runs completed skipped, and,
//! where runs share the directory, each ID claimed first (those another run holds wait).

use super::*;

/// How often IDs another run holds are tried again.
pub(super) const CLAIM_RETRY: Duration = Duration::from_millis(200);

/// Most IDs a run claims at once (each claim holds a descriptor open): the scheduler is fed
/// no more until some are finished.
pub(super) const MAX_CLAIMS: usize = 512;

/// Where IDs are claimed, the scheduler is fed once it has room for this many (it holds
/// hundreds), so that the look at other runs' records after claiming is paid once for many.
pub(super) const CLAIM_BATCH: usize = 32;

/// IDs another run sharing the directory holds (see [`Claims`]): not handed to the scheduler
/// (no URL is minted, no download slot taken) until this run gets them.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    /// Each ID's index, and since when it waits.
    pub(super) ids: Vec<(u32, uuid::Uuid, Instant)>,
    /// When they are tried next.
    pub(super) next: Option<Instant>,
    /// What the other runs record meanwhile (read once this run first claims an ID).
    pub(super) others: Option<crate::state::Others>,
}

/// Most IDs looked at per turn of the loop when feeding the scheduler (skipping what earlier
/// runs completed costs a file-system check each): the loop keeps answering in between.
pub(super) const FEED_PER_TURN: usize = 4096;

impl<P: Provider> Pipeline<'_, P> {
    /// The record of `id` (at `index`) if an earlier run completed it and it is still there
    /// whole: in the output directory's record, or the bucket's (IDs from a listing too).
    pub(super) fn completed(&self, id: &uuid::Uuid, index: u32) -> Option<crate::state::Record> {
        self.state
            .completed(id, index)
            .or_else(|| self.dest.completed(id))
    }

    /// Whether IDs are left that the scheduler has not seen.
    pub(super) fn more_to_feed(&self) -> bool {
        self.cursor < self.recorder.ids().len()
    }

    /// Hand the scheduler as many of the recorder's IDs as it has room for, skipping those an
    /// earlier run completed (reported as skipped, without a request). `listing_open`: more
    /// IDs may still come.
    pub(super) fn feed(&mut self, scheduler: &mut Scheduler, listing_open: bool) -> Vec<Action> {
        let mut items = Vec::new();
        let mut room = scheduler.room();
        let mut claimed = self.retry_waiting(room);
        room -= claimed.len();
        let mut looked = 0;
        if !self.can_feed(room) {
            room = 0;
        }
        while room > 0
            && looked < FEED_PER_TURN
            && self.more_to_feed()
            && self.claims.held() < MAX_CLAIMS
        {
            let index = self.cursor;
            self.cursor += 1;
            looked += 1;
            let id = self.recorder.ids()[index];
            let index = index as u32;
            if self.recorder.is_finished(index) {
                continue;
            }
            if !self.settings.force
                && let Some(rec) = self.completed(&id, index)
            {
                self.recorder.finish(index, FileEntry::skipped(rec));
                self.ui.file_skipped();
                continue;
            }
            // Before its URL is asked for: another run sharing the directory may be on it.
            match self.claims.try_claim(id) {
                Ok(true) if self.claims.active() => {
                    claimed.push((index, id));
                    room -= 1;
                    continue;
                }
                Ok(true) => {}
                Ok(false) => {
                    log::debug!("{id}: another run sharing the directory is on it; waiting");
                    self.waiting.ids.push((index, id, Instant::now()));
                    self.waiting
                        .next
                        .get_or_insert(Instant::now() + CLAIM_RETRY);
                    continue;
                }
                Err(e) => {
                    self.fail(&Item::new(index, id, None), self.claim_failed(e), true);
                    continue;
                }
            }
            items.push(Item::new(index, id, self.state.previous_name(&id, index)));
            room -= 1;
        }
        self.take_claimed(claimed, &mut items);
        // (IDs another run holds do not keep a partial batch waiting: they may wait long.)
        scheduler.set_input_open(self.more_to_feed() || listing_open);
        scheduler.add(items)
    }

    /// Whether IDs not handed to the scheduler yet may be now, with `room` for them.
    pub(super) fn can_feed(&self, room: usize) -> bool {
        let enough = match self.claims.active() {
            true => room >= CLAIM_BATCH,
            false => room > 0,
        };
        enough && self.more_to_feed() && self.claims.held() < MAX_CLAIMS
    }

    pub(super) fn claim_failed(&self, e: std::io::Error) -> String {
        format!(
            "cannot claim it in {} ({e})",
            self.settings
                .output_dir
                .join(".fetchdocs")
                .join("claims")
                .display()
        )
    }

    /// Try again the IDs another run held, when it is time (at most `room` of them): returns
    /// those this run holds now. One that waits longer than a download may take
    /// (`--give-up-after`) fails, to be picked up by a later run.
    pub(super) fn retry_waiting(&mut self, room: usize) -> Vec<(u32, uuid::Uuid)> {
        let now = Instant::now();
        let mut got = Vec::new();
        if self.waiting.ids.is_empty() || self.waiting.next.is_some_and(|t| now < t) {
            return got;
        }
        // (Set even when there is no room now: the loop's wake never lies in the past.)
        self.waiting.next = Some(now + CLAIM_RETRY);
        if room == 0 {
            return got;
        }
        let mut still = Vec::new();
        for (index, id, since) in std::mem::take(&mut self.waiting.ids) {
            if self.recorder.is_finished(index) {
                continue;
            }
            if got.len() >= room || self.claims.held() >= MAX_CLAIMS {
                still.push((index, id, since));
                continue;
            }
            match self.claims.try_claim(id) {
                Ok(true) => got.push((index, id)),
                Ok(false)
                    if now.saturating_duration_since(since) >= self.settings.give_up_after =>
                {
                    let reason = format!(
                        "another run sharing the output directory has been working on it for \
                         {}; not downloaded twice at once (run again once it is done)",
                        human_duration(now.saturating_duration_since(since))
                    );
                    self.fail(&Item::new(index, id, None), reason, true);
                }
                Ok(false) => still.push((index, id, since)),
                Err(e) => {
                    self.fail(&Item::new(index, id, None), self.claim_failed(e), true);
                }
            }
        }
        self.waiting.ids = still;
        got
    }

    /// IDs this run has just claimed: each goes to the scheduler (into `items`) unless another
    /// run sharing the directory completed it since this run read the record (read afresh
    /// now, after the claim, so nothing that run completed can be missed): that one is skipped
    /// as downloaded.
    pub(super) fn take_claimed(&mut self, claimed: Vec<(u32, uuid::Uuid)>, items: &mut Vec<Item>) {
        if claimed.is_empty() {
            return;
        }
        let others = self
            .waiting
            .others
            .get_or_insert_with(|| self.state.others());
        if let Err(e) = others.refresh() {
            log::warn!("cannot read the records of other runs sharing the directory ({e})");
        }
        for (index, id) in claimed {
            let done = self.waiting.others.as_ref().and_then(|o| o.completed(&id));
            match done {
                Some(rec) => {
                    let entry = FileEntry {
                        note: Some(
                            "downloaded meanwhile by another run sharing the output directory"
                                .into(),
                        ),
                        ..FileEntry::skipped(rec)
                    };
                    self.recorder.finish(index, entry);
                    self.ui.file_skipped();
                    self.claims.release(&id);
                }
                None => items.push(Item::new(index, id, self.state.previous_name(&id, index))),
            }
        }
    }

    /// `id` is finished: other runs sharing the directory may have it, and read this run's
    /// record of it.
    pub(super) fn release(&mut self, id: &uuid::Uuid) {
        if !self.claims.active() {
            return;
        }
        if let Some(log) = self.state.log()
            && let Err(e) = log.write_out()
        {
            log::debug!("cannot write the record out for other runs ({e})");
        }
        self.claims.release(id);
    }
}
