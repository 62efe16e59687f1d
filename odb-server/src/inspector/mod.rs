//! The web inspector: read-only pages about a running server, served on the metrics address
//! next to `/metrics`.
//!
//! - `/`: the key figures, the schemas and their types with object counts, and a live commit
//!   feed (`/events`, server-sent events read by a few lines of JavaScript);
//! - `/types/SCHEMA.Type`: a type's objects, a page at a time, with decoded fields;
//! - `/objects/ID`: one object's decoded fields and index values;
//! - `/connections`: the connections and their subscriptions.
//!
//! Pages are rendered on the server; the script and style sheet are served from the binary
//! (`/assets/`), so the inspector works offline and under a strict content security policy
//! that allows no inline script. Every page but the sign-in form needs the service token (see
//! [`auth`]). Values are decoded through the schemas' descriptions with the same
//! [`Catalog`](odb_wire::catalog::Catalog) as the `odb` command uses, and escaped.
//!
//! Each page asks the sequencer one or two bounded questions (see
//! [`crate::sequencer::inspect`]); the feed costs the sequencer nothing while nobody follows it,
//! and at most [`MAX_STREAMS`] feeds are followed at once.

mod auth;
mod events;
mod html;
mod pages;

pub(crate) use auth::Sessions;

use crate::auth_throttle::Failure;
use crate::http::{HttpResponse, HttpState};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST,
    LOCATION, ORIGIN, REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;

/// Feeds followed at once; more are refused with 503.
pub(crate) const MAX_STREAMS: usize = 8;

/// The largest sign-in form accepted.
const MAX_FORM: usize = 4096;

/// What a page may load: its own script and style sheet, and the feed; nothing inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const SCRIPT: &str = include_str!("assets/inspector.js");
const STYLE: &str = include_str!("assets/inspector.css");

/// Whether the inspector serves `path`.
pub(crate) fn serves(path: &str) -> bool {
    matches!(
        path,
        "/" | "/login"
            | "/logout"
            | "/connections"
            | "/events"
            | "/assets/inspector.js"
            | "/assets/inspector.css"
    ) || path.starts_with("/types/")
        || path.starts_with("/objects/")
}

/// Answers a request for one of the paths it [`serves`].
pub(crate) async fn route(
    state: &HttpState,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> HttpResponse {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/assets/inspector.js") => {
            asset(SCRIPT, "text/javascript; charset=utf-8")
        }
        (Method::GET | Method::HEAD, "/assets/inspector.css") => {
            asset(STYLE, "text/css; charset=utf-8")
        }
        (Method::GET | Method::HEAD, "/login") => html(StatusCode::OK, pages::sign_in(None)),
        (Method::POST, _) if !same_origin(&request) => plain(
            StatusCode::FORBIDDEN,
            "a form of another site cannot sign in or out here\n",
        ),
        (Method::POST, "/login") => sign_in(state, request, peer).await,
        (Method::POST, "/logout") => sign_out(state, &request),
        (Method::GET | Method::HEAD, _) => {
            let credentials = credentials(state, &request);
            if credentials == Credentials::WrongToken {
                wrong_token(state, peer).await;
            }
            if credentials != Credentials::Valid {
                return if path == "/events" {
                    plain(StatusCode::UNAUTHORIZED, "sign in or send the token\n")
                } else {
                    html(StatusCode::UNAUTHORIZED, pages::sign_in(None))
                };
            }
            match path.as_str() {
                "/" => pages::overview(state).await,
                "/connections" => pages::connections(state).await,
                "/events" => events(state).await,
                _ => match (path.strip_prefix("/types/"), path.strip_prefix("/objects/")) {
                    (Some(name), _) => pages::objects(state, name, &query).await,
                    (_, Some(id)) => pages::object(state, id).await,
                    _ => plain(StatusCode::NOT_FOUND, "not found\n"),
                },
            }
        }
        _ => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the inspector is read-only: GET pages, POST only to sign in and out\n",
        ),
    }
}

/// What a request's credentials are worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credentials {
    /// The token, or a live session's cookie.
    Valid,
    /// None that is valid, and no wrong token either (perhaps an expired cookie).
    Missing,
    /// A wrong token: counted by the throttle, like a wrong sign-in.
    WrongToken,
}

/// Checks the request's `Authorization: Bearer` token and session cookie.
fn credentials<B>(state: &HttpState, request: &Request<B>) -> Credentials {
    let header = |name| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let tokens: Vec<&str> = header(AUTHORIZATION)
        .into_iter()
        .filter_map(auth::bearer)
        .collect();
    let by_token = tokens
        .iter()
        .any(|token| auth::same_secret(token, &state.config.token));
    let by_cookie = || {
        header(COOKIE)
            .into_iter()
            .filter_map(|c| auth::cookie(c, auth::COOKIE))
            .any(|id| state.sessions.is_live(id))
    };
    if by_token || by_cookie() {
        Credentials::Valid
    } else if tokens.is_empty() {
        Credentials::Missing
    } else {
        Credentials::WrongToken
    }
}

/// Waits as long as the throttle says after a wrong token from `peer`.
async fn wrong_token(state: &HttpState, peer: SocketAddr) {
    let delay = state.throttle.failed(peer.ip(), Failure::Token);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Whether a form was posted from a page of this address. Browsers say where a request comes
/// from in `Sec-Fetch-Site` (and older ones in `Origin`); a request with neither does not come
/// from a browser page and has nothing to forge.
fn same_origin<B>(request: &Request<B>) -> bool {
    if let Some(site) = request.headers().get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    let Some(origin) = request.headers().get(ORIGIN) else {
        return true;
    };
    let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str(), host) {
        (Ok(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        _ => false,
    }
}

async fn sign_in(state: &HttpState, request: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let body = match Limited::new(request.into_body(), MAX_FORM).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the sign-in form is too large\n",
            )
        }
    };
    let token = auth::form_field(&body, "token").unwrap_or_default();
    if !auth::same_secret(&token, &state.config.token) {
        wrong_token(state, peer).await;
        return html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some("That is not the service token.")),
        );
    }
    state.throttle.succeeded(peer.ip());
    let Some(session) = state.sessions.start() else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no random number for a session id\n",
        );
    };
    let cookie = format!(
        "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::COOKIE,
        auth::SESSION_LIFETIME.as_secs()
    );
    let mut response = redirect("/");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

fn sign_out<B>(state: &HttpState, request: &Request<B>) -> HttpResponse {
    for header in request.headers().get_all(COOKIE) {
        if let Some(id) = header
            .to_str()
            .ok()
            .and_then(|c| auth::cookie(c, auth::COOKIE))
        {
            state.sessions.end(id);
        }
    }
    let mut response = redirect("/login");
    let expired = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    );
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

async fn events(state: &HttpState) -> HttpResponse {
    let Ok(slot) = state.streams.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live feeds are open; close one and retry\n",
        );
    };
    let stream = events::Stream::start(state.clone(), slot).await;
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(event)), stream))
    })
    .boxed();
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// An HTML page, with the headers that keep it from being framed, cached or its address sent
/// to other sites.
pub(crate) fn html(status: StatusCode, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Addresses of inspector pages are not sent elsewhere; same-origin requests keep their
    // `Origin`, which the sign-in form's check reads.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn redirect(to: &'static str) -> HttpResponse {
    let mut response = html(StatusCode::SEE_OTHER, String::new());
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    crate::http::text(status, body.into())
}
