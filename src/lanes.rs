//! Where downloads run: in lanes, each one thread with a single-threaded runtime and its own
//! connections to the file hosts.
//!
//! Many small files over a fast link are bound by CPU, and on a multi-threaded runtime much of
//! that CPU goes to handing tasks between threads: a finished read wakes a task on another
//! worker, an idle worker is woken and parks again, every one a pair of context switches. A
//! lane keeps a download, its connection and its disk writes on one thread from start to end;
//! threads meet only when a job is handed over and its result handed back (and a busy lane
//! takes both without sleeping). Lane 0 is the caller's own runtime, so one thread fewer is
//! needed and a single lane costs no handover at all.
//!
//! The lanes know nothing of downloads: each runs the futures it is given, lends them its
//! client, and hands back what they return.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

type Job<T> = Box<dyn FnOnce(reqwest::Client) -> Pin<Box<dyn Future<Output = T> + Send>> + Send>;

/// What a job returned, or why it did not (it panicked: a bug).
pub type Finished<T> = Result<T, String>;

/// How long a lane's runtime gets, once the run is over, to finish a write already on its
/// way to the disk before the thread is left to end on its own.
const LANE_SHUTDOWN: Duration = Duration::from_secs(2);

/// A set of lanes and the jobs under way in them.
pub struct Lanes<T: Send + 'static> {
    clients: Vec<reqwest::Client>,
    /// Lanes 1 and up: their threads take jobs here. (Lane 0 is the caller's runtime.)
    senders: Vec<mpsc::UnboundedSender<(usize, Job<T>)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Jobs under way, per lane.
    load: Vec<usize>,
    done_tx: mpsc::UnboundedSender<(usize, Finished<T>)>,
    done_rx: mpsc::UnboundedReceiver<(usize, Finished<T>)>,
    /// Lane 0's jobs, to abort when the lanes are shut down.
    local: JoinSet<()>,
}

impl<T: Send + 'static> Lanes<T> {
    /// One lane per client: the first runs on the caller's runtime, each other on a thread of
    /// its own. `clients` must not be empty. Call within a tokio runtime.
    pub fn new(clients: Vec<reqwest::Client>) -> std::io::Result<Lanes<T>> {
        assert!(!clients.is_empty(), "a lane needs a client");
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for (lane, client) in clients.iter().enumerate().skip(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (client, done) = (client.clone(), done_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("fetchdocs-lane-{lane}"))
                .spawn(move || run_lane(runtime, rx, client, done))?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Lanes {
            load: vec![0; clients.len()],
            clients,
            senders,
            threads,
            done_tx,
            done_rx,
            local: JoinSet::new(),
        })
    }

    /// How many lanes there are.
    pub fn count(&self) -> usize {
        self.clients.len()
    }

    /// Jobs under way in all lanes.
    pub fn in_flight(&self) -> usize {
        self.load.iter().sum()
    }

    /// Run `job` in the least loaded lane (ties go to a lane of its own thread, which has
    /// nothing else to do). Its result comes out of [`Lanes::next`].
    pub fn spawn<F, Fut>(&mut self, job: F)
    where
        F: FnOnce(reqwest::Client) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let lane = (0..self.load.len())
            .rev()
            .min_by_key(|&l| self.load[l])
            .unwrap_or(0);
        self.load[lane] += 1;
        let job: Job<T> = Box::new(move |client| Box::pin(job(client)));
        if lane == 0 {
            return self.run_local(job);
        }
        if let Err(mpsc::error::SendError((_, job))) = self.senders[lane - 1].send((lane, job)) {
            // That lane's thread is gone (it cannot be, short of a bug): run it here instead.
            self.load[lane] -= 1;
            self.load[0] += 1;
            self.run_local(job);
        }
    }

    fn run_local(&mut self, job: Job<T>) {
        let fut = job(self.clients[0].clone());
        let done = self.done_tx.clone();
        self.local.spawn(async move {
            let _ = done.send((0, guarded(fut).await));
        });
    }

    /// The next job to finish, once one has; `None` only if nothing is under way.
    pub async fn next(&mut self) -> Option<Finished<T>> {
        if self.in_flight() == 0 {
            return None;
        }
        let (lane, finished) = self.done_rx.recv().await?;
        self.load[lane] -= 1;
        // Lane 0's finished tasks: forget them as they go.
        while self.local.try_join_next().is_some() {}
        Some(finished)
    }

    /// Stop every lane: jobs still under way are dropped at their next await (as an aborted
    /// task would be), and each lane's thread is waited for.
    pub fn shutdown(mut self) {
        self.local.abort_all();
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A lane's thread: run each job it is handed as a task of its own runtime, until the lanes
/// are shut down.
fn run_lane<T: Send + 'static>(
    runtime: tokio::runtime::Runtime,
    mut jobs: mpsc::UnboundedReceiver<(usize, Job<T>)>,
    client: reqwest::Client,
    done: mpsc::UnboundedSender<(usize, Finished<T>)>,
) {
    runtime.block_on(async {
        while let Some((lane, job)) = jobs.recv().await {
            let fut = job(client.clone());
            let done = done.clone();
            tokio::spawn(async move {
                let _ = done.send((lane, guarded(fut).await));
            });
        }
    });
    runtime.shutdown_timeout(LANE_SHUTDOWN);
}

/// `fut`'s output, or what its panic said.
async fn guarded<T>(fut: Pin<Box<dyn Future<Output = T> + Send>>) -> Finished<T> {
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a download task panicked".into())
        })
}

/// How many lanes suit `concurrency` downloads on this machine: one per core, but no more
/// than one per four downloads (a lane's connections are its own, and a lane with one or two
/// downloads would mostly wait), and no more than 8.
pub fn lanes_for(concurrency: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(concurrency.div_ceil(4)).clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_job_comes_back_once_from_whichever_lane_ran_it() {
        let clients = vec![reqwest::Client::new(); 3];
        let mut lanes: Lanes<(u32, String)> = Lanes::new(clients).unwrap();
        assert_eq!(lanes.count(), 3);
        for n in 0..30u32 {
            lanes.spawn(move |_client| async move {
                tokio::task::yield_now().await;
                let thread = std::thread::current().name().unwrap_or("").to_string();
                (n, thread)
            });
        }
        assert_eq!(lanes.in_flight(), 30);
        let mut seen = Vec::new();
        let mut threads = std::collections::HashSet::new();
        while let Some(done) = lanes.next().await {
            let (n, thread) = done.unwrap();
            seen.push(n);
            threads.insert(thread);
        }
        seen.sort();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        assert_eq!(lanes.in_flight(), 0);
        // Lanes 1 and 2 each ran jobs on their own thread; lane 0 ran on this one.
        assert!(threads.contains("fetchdocs-lane-1"), "{threads:?}");
        assert!(threads.contains("fetchdocs-lane-2"), "{threads:?}");
        assert_eq!(threads.len(), 3, "{threads:?}");
        lanes.shutdown();
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_not_lost() {
        let mut lanes: Lanes<u32> = Lanes::new(vec![reqwest::Client::new(); 2]).unwrap();
        for n in 0..4u32 {
            lanes.spawn(move |_| async move {
                if n % 2 == 1 {
                    panic!("job {n} broke");
                }
                n
            });
        }
        let mut ok = Vec::new();
        let mut broke = Vec::new();
        while let Some(done) = lanes.next().await {
            match done {
                Ok(n) => ok.push(n),
                Err(why) => broke.push(why),
            }
        }
        ok.sort();
        broke.sort();
        assert_eq!(ok, vec![0, 2]);
        assert_eq!(broke, vec!["job 1 broke", "job 3 broke"]);
        lanes.shutdown();
    }

    #[tokio::test]
    async fn shutdown_drops_what_is_still_running() {
        let mut lanes: Lanes<()> = Lanes::new(vec![reqwest::Client::new(); 2]).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        for _ in 0..4 {
            let tx = tx.clone();
            lanes.spawn(move |_| async move {
                // Held until the task is dropped.
                let _tx = tx;
                std::future::pending::<()>().await
            });
        }
        drop(tx);
        lanes.shutdown();
        // Every task (and so every sender) is gone.
        assert!(rx.recv().await.is_none());
    }
}
