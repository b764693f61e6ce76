//! The run's tasks: mint calls on this runtime, downloads in the lanes; what becomes of each
//! file as its task ends (named, recorded, placed, failed), and the wind-down.

use super::*;

/// How a task ended: what it hands back to the scheduler.
pub enum Ended {
    Mint {
        items: Vec<Item>,
        result: Result<MintOutcome, ApiError>,
        took: Duration,
    },
    /// A download ended; a file that arrived whole is handed to the destination
    /// (`placing`), and its slot is free.
    File {
        item: Item,
        name: String,
        outcome: Outcome,
        placing: Option<Placing>,
    },
    /// A file handed over is durable under its name (`Outcome::Whole`), or could not be put
    /// there.
    Placed {
        item: Item,
        name: String,
        outcome: Outcome,
    },
}

/// What is under way: mint calls (and other API work) on this runtime, downloads in lanes.
pub(super) struct Running {
    pub(super) tasks: JoinSet<Ended>,
    pub(super) lanes: Lanes<Ended>,
    /// Files handed to the destination, until each is durable under its name.
    pub(super) placing: JoinSet<Ended>,
}

impl Running {
    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.lanes.in_flight() == 0 && self.placing.is_empty()
    }

    /// The download of `item` ended with `outcome`: what the scheduler makes of it. A file
    /// handed to the destination (`placing`) is not reported complete now: its placement is
    /// waited for in a task of its own, which ends in [`Ended::Placed`].
    pub(super) fn file_ended(
        &mut self,
        scheduler: &mut Scheduler,
        (item, name, outcome): (Item, String, Outcome),
        mut placing: Option<Placing>,
    ) -> Vec<Action> {
        let actions = scheduler.finished(item, name, outcome, Instant::now());
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match (action, placing.take()) {
                (Action::Complete { item, name, file }, Some(placing)) => {
                    self.placing.spawn(async move {
                        let outcome = download::settle(placing.await, file);
                        Ended::Placed {
                            item,
                            name,
                            outcome,
                        }
                    });
                }
                (other, p) => {
                    placing = p;
                    rest.push(other);
                }
            }
        }
        rest
    }

    /// The next task to end: what it returned, or `None` if it was aborted; an error if it
    /// panicked (a bug).
    pub(super) async fn next(&mut self) -> Option<Result<Ended, String>> {
        let joined = |j: Result<Ended, tokio::task::JoinError>| match j {
            Ok(ended) => Some(Ok(ended)),
            Err(e) if e.is_cancelled() => None,
            Err(e) => Some(Err(e.to_string())),
        };
        tokio::select! {
            Some(j) = self.tasks.join_next(), if !self.tasks.is_empty() => joined(j),
            Some(finished) = self.lanes.next(), if self.lanes.in_flight() > 0 => Some(finished),
            Some(j) = self.placing.join_next(), if !self.placing.is_empty() => joined(j),
            else => None,
        }
    }

    pub(super) fn shutdown(mut self) {
        self.tasks.abort_all();
        self.placing.abort_all();
        self.lanes.shutdown();
    }
}

impl<P: Provider> Pipeline<'_, P> {
    /// Ask the API for URLs for `batch`, in a task of its own.
    pub(super) fn spawn_mint(&self, tasks: &mut Running, batch: Vec<Item>) {
        let provider = self.provider.clone();
        // Taken now, before the task runs: the scheduler's next decision sees it.
        let slots = provider.reserve();
        tasks.tasks.spawn(async move {
            let start = Instant::now();
            let ids = batch.iter().map(|i| i.id).collect();
            let result = provider.mint(ids, slots).await;
            Ended::Mint {
                items: batch,
                result,
                took: start.elapsed(),
            }
        });
    }

    /// After a cancel: give in-flight downloads until `deadline` (Ctrl-C: [`WIND_DOWN`]) to
    /// flush their partial data (and record any that finished), then abort whatever is left.
    pub(super) async fn wind_down(
        &mut self,
        scheduler: &mut Scheduler,
        tasks: &mut Running,
        deadline: Instant,
    ) {
        while !tasks.is_empty() {
            let joined = tokio::select! {
                j = tasks.next() => j,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            match joined {
                Some(Ok(Ended::File {
                    item,
                    name,
                    outcome: outcome @ Outcome::Whole(_),
                    placing,
                })) => {
                    // Only the file's completion is recorded; nothing new is started.
                    for action in tasks.file_ended(scheduler, (item, name, outcome), placing) {
                        if let Action::Complete { item, name, file } = action {
                            self.complete(&item, name, file);
                        }
                    }
                }
                Some(Ok(Ended::Placed {
                    item,
                    name,
                    outcome,
                })) => {
                    let _ = self.settled(&item, name, outcome);
                }
                _ => {}
            }
        }
    }

    /// Files handed over are placed whatever ended the run (the sync stage goes on with them):
    /// wait for each and report it as it is. Bounded: at most the stage's room of files, and
    /// placing never waits on the network.
    pub(super) async fn finish_placing(&mut self, tasks: &mut Running) {
        while let Some(joined) = tasks.placing.join_next().await {
            if let Ok(Ended::Placed {
                item,
                name,
                outcome,
            }) = joined
            {
                let _ = self.settled(&item, name, outcome);
            }
        }
    }

    /// A file handed over is durable under its name, or could not be put there: report it.
    /// A disk that refuses data stops the run.
    pub(super) fn settled(&mut self, item: &Item, name: String, outcome: Outcome) -> Option<Fatal> {
        match outcome {
            Outcome::Whole(file) => self.complete(item, name, file),
            Outcome::StorageFailed(reason) => {
                self.fail(item, reason.clone(), true);
                return Some(Fatal::Local(Trouble::DiskRefused { reason }));
            }
            Outcome::Failed(reason) => self.fail(item, reason, true),
            Outcome::Expired { .. } | Outcome::Cancelled => self.fail(
                item,
                "internal error: a placed file came back unfinished".into(),
                true,
            ),
        }
        None
    }

    /// `--dry-run`: `item` would be saved under the name `label` gives it.
    pub(super) fn resolved(&mut self, mut item: Item, label: &str) {
        let name = self.name_for(&mut item, label);
        self.recorder
            .finish(item.index, FileEntry::resolved(item.id, name));
        self.ui.file_finished();
        self.release(&item.id);
    }

    /// A file is durable under its final name: record it and report it.
    pub(super) fn complete(&mut self, item: &Item, name: String, file: Whole) {
        let Whole {
            bytes,
            sha256,
            verified,
            unchecked,
            note,
            renamed,
        } = file;
        if !unchecked.is_empty() {
            // One line however many files (the same warning is counted, not repeated); each
            // file's report entry says which header could not be read.
            log::warn!(
                "the file host declared checksums that could not be read, so they were not \
                 checked (see \"unchecked\" in the report)"
            );
        }
        // Taken meanwhile (by another run sharing the directory, or the user): saved under a
        // name with the ID in it, which the record now says.
        let name = renamed.unwrap_or(name);
        // The download claimed the name and recorded the completion itself.
        log::debug!("downloaded {name} ({})", human_bytes(bytes));
        self.recorder.finish(
            item.index,
            FileEntry {
                id: item.id,
                status: Status::Downloaded,
                path: Some(name),
                bytes: Some(bytes),
                sha256: Some(sha256),
                verified,
                unchecked,
                error: None,
                note,
            },
        );
        self.ui.file_finished();
        self.release(&item.id);
    }

    pub(super) fn name_for(&mut self, item: &mut Item, label: &str) -> String {
        if let Some(n) = &item.name {
            return n.clone();
        }
        if !self.names.seeded {
            // The names earlier runs used, read once, when a name is first needed (a run that
            // only skips never reads them).
            let names = &mut *self.names;
            // Every ID not handed to the scheduler yet may need a name, and those in it.
            names.reserve(self.recorder.ids().len() - self.cursor + 1024);
            if let Err(e) = self.state.for_each_name(|_, name| names.claim(name)) {
                log::warn!("cannot read the names earlier runs used ({e})");
            }
            // And what is in the directory now, whoever put it there.
            if let Err(e) = names.occupied_in(&self.settings.output_dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!(
                    "cannot list {} ({e}); a name found taken when the file is moved into \
                     place gets the ID in it",
                    self.settings.output_dir.display()
                );
            }
            self.names.seeded = true;
        }
        let name = self.names.assign(item.id, label, item.previous.as_deref());
        item.name = Some(name.clone());
        name
    }

    pub(super) fn spawn_download(
        &mut self,
        tasks: &mut Running,
        r: Ready,
        progress: Arc<Progress>,
    ) {
        let Ready {
            mut item,
            url,
            label,
            ..
        } = r;
        let name = self.name_for(&mut item, &label);
        // What may stand at the name already: only this ID's file is ever replaced.
        let at_dest = if item.previous.as_deref() != Some(name.as_str()) {
            AtDest::Nothing
        } else if self.state.recorded_name(&item.id, item.index).as_deref() == Some(&name) {
            // Recorded as this ID's completed file (to download again: --force, or it was
            // changed or cut since).
            AtDest::RecordedFile
        } else {
            AtDest::ClaimedName
        };
        let job = FileJob {
            url,
            id: item.id,
            name: name.clone(),
            at_dest,
            no_part: self.parts.as_ref().is_some_and(|p| !p.contains(&item.id)),
            progress,
            watcher: Box::new(self.ui.file_bar(&name)),
            cancel: self.cancel.child_token(),
            give_up_at: item.first_mint().map(|t| t + self.settings.give_up_after),
        };
        let policy = self.settings.policy.clone();
        let dest = self.dest.clone();
        tasks.lanes.spawn(move |client| async move {
            let (outcome, placing) = download::download(&client, &job, &policy, &*dest).await;
            Ended::File {
                item,
                name,
                outcome,
                placing,
            }
        });
    }

    /// `item` failed; `say`: with a `failed:` line on stderr.
    pub(super) fn fail(&mut self, item: &Item, reason: String, say: bool) {
        if self.recorder.is_finished(item.index) {
            return;
        }
        if say {
            self.ui.file_failed(&item.id, &reason);
        }
        self.recorder
            .finish(item.index, FileEntry::failed(item.id, reason));
        self.ui.file_finished();
        self.ui.set_failed(self.recorder.summary().failed);
        self.release(&item.id);
    }
}
