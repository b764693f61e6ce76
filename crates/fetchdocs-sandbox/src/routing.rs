//! The wiring: both listeners, the vendors' routes on the API one and the file host on the other,
//! served until the sandbox is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;
#[cfg(feature = "test-controls")]
use crate::tls;
use crate::{SandboxConfig, StatsSnapshot, files, keelvar, veridox};

/// A running sandbox. Dropping it stops the servers.
pub struct Sandbox {
    pub api_url: String,
    pub files_url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Sandbox {
    /// Start both listeners on 127.0.0.1.
    pub async fn start(cfg: SandboxConfig) -> std::io::Result<Sandbox> {
        let api_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cfg.port))).await?;
        let files_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        #[cfg(feature = "test-controls")]
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
        #[cfg(not(feature = "test-controls"))]
        let tls: Option<()> = None;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let api_url = format!("{scheme}://{}", api_listener.local_addr()?);
        let files_url = format!("{scheme}://{}", files_listener.local_addr()?);
        let shared = Arc::new(Shared::new(cfg, files_url.clone()));
        let stop = CancellationToken::new();
        let api = api_routes(&shared);
        let file_host: Router = files::routes().with_state(shared.clone());
        match tls {
            #[cfg(feature = "test-controls")]
            Some(acceptor) => {
                let api_tls = tls::Listener::new(api_listener, acceptor.clone());
                tokio::spawn(serve(api_tls, api, stop.clone()));
                let files_tls = tls::Listener::new(files_listener, acceptor);
                tokio::spawn(serve(files_tls, file_host, stop.clone()));
            }
            _ => {
                let files_listener = files::Listener::new(files_listener, shared.clone());
                tokio::spawn(serve(api_listener, api, stop.clone()));
                tokio::spawn(serve(files_listener, file_host, stop.clone()));
            }
        }
        Ok(Sandbox {
            api_url,
            files_url,
            shared,
            stop,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.cfg
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The API listener's routes: both vendors' (behind the latency and the silence set) and the
/// stats.
fn api_routes(shared: &Arc<Shared>) -> Router {
    let vendors = veridox::routes().merge(keelvar::routes());
    slowed(vendors, shared)
        .route("/_sandbox/stats", axum::routing::get(stats_handler))
        .with_state(shared.clone())
}

/// `vendors` answering each request after `api_latency`, and the first `api_silent_first`
/// requests never (accepted, not a header nor a byte sent back).
fn slowed(vendors: Router<Arc<Shared>>, shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    let api_latency = shared.cfg.faults.api_latency;
    let silent_first = u64::from(control!(0u32, shared.cfg.faults.test.api_silent_first));
    if api_latency.is_zero() && silent_first == 0 {
        return vendors;
    }
    let shared = shared.clone();
    vendors.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let shared = shared.clone();
            async move {
                let unanswered = &shared.stats.api_unanswered;
                if unanswered.load(Ordering::SeqCst) < silent_first
                    && unanswered.fetch_add(1, Ordering::SeqCst) < silent_first
                {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(api_latency).await;
                next.run(req).await
            }
        },
    ))
}

/// Serve `router` on `listener` until `stop`.
async fn serve<L>(listener: L, router: Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}

async fn stats_handler(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> axum::Json<StatsSnapshot> {
    axum::Json(shared.stats.snapshot())
}

/// A sandbox on a runtime of its own, for synchronous tests that run the real binary.
pub struct BackgroundSandbox {
    pub api_url: String,
    pub files_url: String,
    sandbox: Option<Sandbox>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BackgroundSandbox {
    pub fn start(cfg: SandboxConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let sandbox = runtime.block_on(Sandbox::start(cfg))?;
        Ok(BackgroundSandbox {
            api_url: sandbox.api_url.clone(),
            files_url: sandbox.files_url.clone(),
            sandbox: Some(sandbox),
            runtime: Some(runtime),
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.sandbox.as_ref().map(|s| s.stats()).unwrap_or_default()
    }
}

impl Drop for BackgroundSandbox {
    fn drop(&mut self) {
        drop(self.sandbox.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
