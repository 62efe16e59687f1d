//! The HTTP endpoint of a server: Prometheus metrics at `/metrics`, and the web inspector
//! (see [`crate::inspector`]) on every other page.
//!
//! It listens on its own address ([`ServerConfig::metrics_addr`]), loopback unless
//! [`ServerConfig::metrics_allow_remote`] is set, and speaks plain HTTP/1.1 through hyper.
//! Scrapes are cheap for the server: counters are read as they are, and the figures that
//! describe the current state are asked of the sequencer with one request per scrape.
//! `/metrics` needs no token, as Prometheus scrapers expect (what it tells is figures, never
//! data); the inspector's pages do.

use crate::auth_throttle::AuthThrottle;
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::inspector;
use crate::metrics::Counts;
use crate::outbound::Totals;
use crate::sequencer::inspect::{Answer, Query};
use crate::sequencer::{Request, Status};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most HTTP connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a scrape waits for the sequencer's figures before answering without them.
const SEQUENCER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// The sequencer's figures and the metrics.
    pub status: Arc<Status>,
    /// Bytes queued for clients.
    pub queues: Arc<Totals>,
    /// The sequencer's request channel.
    pub sequencer: mpsc::Sender<Request>,
    /// The service token, among the settings.
    pub config: Arc<ServerConfig>,
    /// The inspector's signed-in sessions.
    pub sessions: Arc<inspector::Sessions>,
    /// Delays the answers to wrong tokens, shared with the protocol's hellos.
    pub throttle: Arc<AuthThrottle>,
    /// Places for the inspector's live feeds.
    pub streams: Arc<Semaphore>,
    /// Cancelled when the server stops: ends the live feeds.
    pub stop: CancellationToken,
}

impl HttpState {
    /// The state of a server's endpoint.
    pub fn new(
        status: Arc<Status>,
        queues: Arc<Totals>,
        sequencer: mpsc::Sender<Request>,
        config: Arc<ServerConfig>,
        throttle: Arc<AuthThrottle>,
        stop: CancellationToken,
    ) -> HttpState {
        HttpState {
            status,
            queues,
            sequencer,
            config,
            sessions: Arc::default(),
            throttle,
            streams: Arc::new(Semaphore::new(inspector::MAX_STREAMS)),
            stop,
        }
    }
}

/// Binds the endpoint's address, refusing one that is not loopback unless allowed.
pub(crate) async fn bind(config: &ServerConfig) -> Result<Option<TcpListener>, ServerError> {
    let Some(addr) = config.metrics_addr else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() && !config.metrics_allow_remote {
        return Err(ServerError::Config(format!(
            "refusing to serve metrics on the non-loopback address {addr}: allow it explicitly \
             (--metrics-allow-remote)"
        )));
    }
    crate::listener::bind(addr).await.map(Some)
}

/// Accepts HTTP connections until `stop` is cancelled, each served in its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    state: HttpState,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("cannot accept an HTTP connection: {e}");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let state = state.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            serve_connection(stream, peer, state, stop).await;
            drop(slot);
        });
    }
    tracing::debug!("metrics endpoint stopped");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: HttpState,
    stop: CancellationToken,
) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// A response: a whole body, or the inspector's live feed.
pub(crate) type HttpResponse = Response<UnsyncBoxBody<Bytes, Infallible>>;

async fn route(
    state: &HttpState,
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> HttpResponse {
    let path = request.uri().path();
    if path == "/metrics" {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET is served\n".into(),
            );
        }
        return metrics(state).await;
    }
    if inspector::serves(path) {
        return inspector::route(state, request, peer).await;
    }
    text(
        StatusCode::NOT_FOUND,
        "not found; metrics are at /metrics and the inspector at /\n".into(),
    )
}

async fn metrics(state: &HttpState) -> HttpResponse {
    let gauges = match ask(state, Query::Gauges).await {
        Some(Answer::Gauges(gauges)) => Some(gauges),
        _ => None,
    };
    let body = state.status.metrics.render(&counts(state), gauges.as_ref());
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The figures read without the sequencer.
fn counts(state: &HttpState) -> Counts {
    let status = &state.status;
    Counts {
        tid: status.tid.load(Ordering::Acquire),
        connections: status.connections.load(Ordering::Acquire),
        objects: status.objects.load(Ordering::Acquire),
        conflict_stamps: status.conflict_stamps.load(Ordering::Acquire),
        outbound_bytes: state.queues.bytes.load(Ordering::Acquire),
        outbound_snapshots: state.queues.snapshots.load(Ordering::Acquire),
    }
}

/// Asks the sequencer a question; `None` if it is gone or does not answer in time.
pub(crate) async fn ask(state: &HttpState, query: Query) -> Option<Answer> {
    let (reply, answer) = oneshot::channel();
    let asked = async {
        state
            .sequencer
            .send(Request::Inspect { query, reply })
            .await
            .ok()?;
        answer.await.ok()
    };
    tokio::time::timeout(SEQUENCER_TIMEOUT, asked)
        .await
        .ok()
        .flatten()
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
