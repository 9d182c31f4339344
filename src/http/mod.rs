//! The HTTP API: JSON over axum, server-sent events for watches.
//!
//! Every answer is JSON (its types are in [`api`]) except `GET /v1/kv/{ns}/{key}?raw=true` (the stored
//! bytes), the watch streams (`text/event-stream`) and `GET /metrics`
//! (OpenMetrics text). Errors are
//! `{"error": "...", "code": "..."}` with a 4xx status for every mistake a
//! client can make (see [`ApiError`]).
//!
//! | Method | Path | What |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus metrics (OpenMetrics text; see `README.md`) |
//! | GET | `/v1/health` | node status |
//! | GET | `/v1/members` | every known member |
//! | GET | `/v1/kv/{ns}?prefix=P&limit=N` | list keys (`&index=R&wait=30s`: blocking query) |
//! | GET/PUT/DELETE | `/v1/kv/{ns}/{key}` | read (`?raw=true` for bytes), write (`?cas=<version>` or `?cas=absent`), delete |
//! | GET | `/v1/kv/{ns}/{key}/history` | every version held |
//! | POST | `/v1/kv/{ns}/{key}/rollback` | `{"version": "<16 hex>"}`: write that version's content again |
//! | GET | `/v1/services/{ns}` | service names |
//! | GET | `/v1/services/{ns}/{service}?tag=T&healthy=true` | instances |
//! | GET | `/v1/services/{ns}/{service}?pick=S&key=K&tag=T&zone=Z` | one instance picked by strategy `S` (`random`, `round_robin`, `least_outstanding`, `hash` with `key`) |
//! | PUT/DELETE | `/v1/services/{ns}/{service}/{instance}` | register / deregister |
//! | PUT | `/v1/services/{ns}/{service}/{instance}/heartbeat` | refresh TTL, report health |
//! | GET | `/v1/watch/kv/{ns}?prefix=P&since=R` | SSE stream of key changes |
//! | GET | `/v1/watch/services/{ns}[/{service}]?since=R` | SSE stream of instance changes |
//! | GET | `/v1/watch/members?since=R` | SSE stream of membership changes |
//!
//! Access: every request passes the Host and Origin checks, and, once the
//! node config defines `[[http_tokens]]`, needs a bearer token whose role
//! covers its namespace (see the `auth` module and docs/SECURITY.md for the
//! role table); refusals are 401, 403 or 415 and are counted in
//! `starling_http_rejected_requests_total{reason}`. With `http_tls_cert` and
//! `http_tls_key` the API speaks HTTPS (feature `tls`).
//!
//! Bounds: a request body over `http_max_body_bytes` gets 413, a request
//! not answered within `limits.http_request_timeout_ms` gets 503
//! (`timeout`), and past `limits.http_max_watchers` open watch streams and
//! blocking queries a new one gets 503 (`too_many_watchers`); each is
//! counted in `starling_limit_exceeded_total{limit}`. Watches and blocking
//! queries are not timed out: a blocking query waits at most its `wait`,
//! and a watch stream lasts as long as its client wants.
//!
//! Keys contain `/`, so one catch-all route serves `/v1/kv/{ns}/{*key}`:
//! a `GET` whose last segment is `history` (after at least one other
//! segment) is the history of the key before it, and a `POST` must end in
//! `/rollback`. To read a key whose last segment really is `history`, add
//! `?literal=true`; `?history=true` asks for a key's history explicitly.

mod acl;
pub mod api;
mod auth;
mod canary;
mod error;
mod kv;
mod metrics;
mod services;
mod views;
mod watch;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::core::Namespace;
use crate::node::metrics::Limit;
use crate::node::{NodeConfig, NodeHandle};

pub use auth::{HttpAccess, HttpRole, HttpToken, MIN_SECRET_BYTES};
pub use error::ApiError;

/// Limits the HTTP API enforces (see [`NodeConfig`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Largest request body, bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests per second per client IP (0 = unlimited); over it, 429.
    pub rate_limit_per_sec: u32,
    /// Most keys one list returns (`limit` is capped to it).
    pub max_list: usize,
    /// Longest blocking-query wait (`wait` is capped to it).
    pub max_wait: Duration,
    /// Longest time a request (not a watch or blocking query) may take;
    /// past it, 503.
    pub request_timeout: Duration,
    /// Most watch streams and blocking queries open at once; past it, 503.
    pub max_watchers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from_config(&NodeConfig::default())
    }
}

impl HttpLimits {
    /// The limits a node configuration asks for.
    pub fn from_config(config: &NodeConfig) -> Self {
        HttpLimits {
            max_body_bytes: config.http_max_body_bytes,
            rate_limit_per_sec: config.http_rate_limit,
            max_list: 10_000,
            max_wait: Duration::from_secs(300),
            request_timeout: Duration::from_millis(config.limits.http_request_timeout_ms),
            max_watchers: config.limits.http_max_watchers,
        }
    }

    /// The same limits with another body size limit.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) node: NodeHandle,
    pub(crate) limits: HttpLimits,
    pub(crate) http_metrics: metrics::HttpMetrics,
    /// One permit per open watch stream or blocking query.
    pub(crate) watchers: Arc<Semaphore>,
}

/// The API's routes over a running node, with no token and the Host check
/// of a server bound to `127.0.0.1` (see [`serve_with_access`] for the rest).
pub fn router(node: NodeHandle, limits: HttpLimits) -> Router {
    let rate = Arc::new(RateLimiter::new(limits.rate_limit_per_sec));
    let access = Arc::new(auth::AccessCell::new(
        HttpAccess::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ));
    router_with(node, limits, rate, access)
}

fn router_with(
    node: NodeHandle,
    limits: HttpLimits,
    rate: Arc<RateLimiter>,
    access: Arc<auth::AccessCell>,
) -> Router {
    let http_metrics = metrics::HttpMetrics::default();
    let guard = auth::Guard {
        access,
        metrics: http_metrics.clone(),
    };
    let app = App {
        node,
        limits: limits.clone(),
        http_metrics: http_metrics.clone(),
        watchers: Arc::new(Semaphore::new(limits.max_watchers)),
    };
    let router = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/v1/health", get(health))
        .route("/v1/members", get(members))
        .route("/v1/acl", get(acl::list))
        .route(
            "/v1/acl/{namespace}",
            get(acl::get).put(acl::put).delete(acl::delete),
        )
        .route("/v1/kv/{namespace}", get(kv::list))
        .route(
            "/v1/kv/{namespace}/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete).post(kv::post),
        )
        .route("/v1/canary/{namespace}", get(canary::list))
        .route(
            "/v1/canary/{namespace}/{*key}",
            get(canary::get)
                .put(canary::put)
                .delete(canary::delete)
                .post(canary::post),
        )
        .route("/v1/services/{namespace}", get(services::names))
        .route("/v1/services/{namespace}/{service}", get(services::list))
        .route(
            "/v1/services/{namespace}/{service}/{instance}",
            put(services::register).delete(services::deregister),
        )
        .route(
            "/v1/services/{namespace}/{service}/{instance}/heartbeat",
            put(services::heartbeat),
        )
        .route("/v1/checks/{namespace}", get(services::checks))
        .route("/v1/watch/kv/{namespace}", get(watch::kv))
        .route("/v1/watch/services/{namespace}", get(watch::all_services))
        .route("/v1/watch/services/{namespace}/{service}", get(watch::services))
        .route("/v1/watch/members", get(watch::members))
        // Inside the access checks (a refused request holds no watcher
        // slot), per matched route (to tell watches from the rest).
        .route_layer(middleware::from_fn_with_state(app.clone(), bound_request))
        // Per matched route, so the route template and `{namespace}` are
        // known: tokens, then content type.
        .route_layer(middleware::from_fn_with_state(
            guard.clone(),
            auth::check_token_and_type,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(app);
    // Always installed (a no-op at 0) so a reload can turn it on.
    let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let rate = rate.clone();
        async move { rate_limit(rate, req, next).await }
    }));
    // Before the rate limiter: a foreign page's requests cost nothing.
    let router = router.layer(middleware::from_fn_with_state(guard, auth::check_host_and_origin));
    // Outermost, so answers of the rate limiter are counted too.
    router.layer(middleware::from_fn_with_state(
        http_metrics,
        metrics::count_requests,
    ))
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    rate: Arc<RateLimiter>,
    access: Arc<auth::AccessCell>,
    /// The HTTPS certificate in force, re-read by [`HttpServer::reload_tls`].
    tls: Option<tls::Certificate>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change the per-client-IP request rate limit (0 = unlimited) without
    /// restarting; used by config reload.
    pub fn set_rate_limit(&self, per_sec: u32) {
        self.rate.set_limit(per_sec);
    }

    /// Swap the access policy (tokens, allowed hosts) without restarting;
    /// used by config reload. Requests already admitted finish under the
    /// old policy. The scheme (HTTP or HTTPS) does not change.
    pub fn set_access(&self, access: HttpAccess) {
        self.access.set(access);
    }

    /// The access policy in force.
    pub fn access(&self) -> HttpAccess {
        (*self.access.get()).clone()
    }

    /// Read the HTTPS certificate and key files again (same paths) and use
    /// them for new connections; used by config reload to rotate a
    /// certificate without a restart. `Ok(false)` when serving plain HTTP.
    /// On error the certificate in force stays.
    pub async fn reload_tls(&self) -> std::io::Result<bool> {
        match &self.tls {
            Some(cert) => {
                cert.reload().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.access.get().is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Stop accepting connections and wait, at most `grace`, for open
    /// requests (watch streams end when the node stops) to finish.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Bind `addr` and serve the API on a tokio task, with no token (so
/// `addr` should be a loopback address) and plain HTTP.
pub async fn serve(node: NodeHandle, addr: SocketAddr, limits: HttpLimits) -> std::io::Result<HttpServer> {
    serve_with_access(node, addr, limits, HttpAccess::default()).await
}

/// Bind `addr` and serve the API on a tokio task under an access policy
/// (tokens, allowed hosts, HTTPS when it names certificate files; see
/// [`HttpAccess::from_config`]). Refuses (`InvalidInput`) a non-loopback
/// `addr` when the policy has no token.
pub async fn serve_with_access(
    node: NodeHandle,
    addr: SocketAddr,
    limits: HttpLimits,
    access: HttpAccess,
) -> std::io::Result<HttpServer> {
    if !access.requires_tokens() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refusing to serve the HTTP API on {addr}, not a loopback address, with no \
                 token: define [[http_tokens]] in the node config (field `http_tokens`)"
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let rate = Arc::new(RateLimiter::new(limits.rate_limit_per_sec));
    let tls = access.tls.clone();
    let access = Arc::new(auth::AccessCell::new(access, addr));
    let app = router_with(node, limits, rate.clone(), access.clone());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (task, tls) = match tls {
        None => (
            tokio::spawn(async move {
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            }),
            None,
        ),
        Some((cert, key)) => {
            let (task, cert) = tls::spawn(listener, app, &cert, &key, stopped).await?;
            (task, Some(cert))
        }
    };
    let scheme = if access.get().is_tls() { "https" } else { "http" };
    tracing::info!(%addr, scheme, tokens = access.get().requires_tokens(), "HTTP API listening");
    Ok(HttpServer {
        addr,
        rate,
        access,
        tls,
        stop,
        task,
    })
}

#[cfg(feature = "tls")]
mod tls {
    //! HTTPS with rustls (axum-server).

    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};

    use axum::Router;
    use axum_server::tls_rustls::RustlsConfig;

    /// The certificate a server uses, and where it was read from.
    #[derive(Clone, Debug)]
    pub(super) struct Certificate {
        config: RustlsConfig,
        cert: PathBuf,
        key: PathBuf,
    }

    impl Certificate {
        async fn load(cert: &Path, key: &Path) -> std::io::Result<Certificate> {
            let config = RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| load_error(cert, key, &e))?;
            Ok(Certificate {
                config,
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }

        /// Read the files again; new connections use them.
        pub(super) async fn reload(&self) -> std::io::Result<()> {
            self.config
                .reload_from_pem_file(&self.cert, &self.key)
                .await
                .map_err(|e| load_error(&self.cert, &self.key, &e))
        }
    }

    fn load_error(cert: &Path, key: &Path, e: &std::io::Error) -> std::io::Error {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot load http_tls_cert {} / http_tls_key {}: {e}",
                cert.display(),
                key.display()
            ),
        )
    }

    /// Serve `app` over TLS on `listener` until `stopped` turns true.
    pub(super) async fn spawn(
        listener: tokio::net::TcpListener,
        app: Router,
        cert: &Path,
        key: &Path,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<(tokio::task::JoinHandle<std::io::Result<()>>, Certificate)> {
        let certificate = Certificate::load(cert, key).await?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            stopper.graceful_shutdown(None);
        });
        let listener = listener.into_std()?;
        let server = axum_server::from_tcp_rustls(listener, certificate.config.clone()).handle(handle);
        let task = tokio::spawn(async move {
            server
                .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                .await
        });
        Ok((task, certificate))
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use std::path::Path;

    use axum::Router;

    /// No certificate without the `tls` feature.
    #[derive(Clone, Debug)]
    pub(super) enum Certificate {}

    impl Certificate {
        #[allow(clippy::unused_async)]
        pub(super) async fn reload(&self) -> std::io::Result<()> {
            match *self {}
        }
    }

    /// Without the `tls` feature there is no HTTPS (the config check says
    /// so first).
    #[allow(clippy::unused_async)]
    pub(super) async fn spawn(
        _listener: tokio::net::TcpListener,
        _app: Router,
        _cert: &Path,
        _key: &Path,
        _stopped: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<(tokio::task::JoinHandle<std::io::Result<()>>, Certificate)> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this build has no TLS support (cargo feature `tls`)",
        ))
    }
}

async fn health(State(app): State<App>) -> Result<Json<api::Status>, ApiError> {
    let status = app.node.status().await?;
    Ok(Json((&status).into()))
}

async fn members(State(app): State<App>) -> Result<Json<Vec<api::Member>>, ApiError> {
    let members = app.node.members().await?;
    Ok(Json(members.iter().map(api::Member::from).collect()))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /v1/health, /v1/kv, /v1/services, /v1/members, /v1/watch)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
}

/// Path parameters, with a JSON 400 when they do not parse.
pub(crate) struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(PathParams(t)),
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
    }
}

/// Every query pair in order (repeated keys such as `tag=a&tag=b` kept).
pub(crate) struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The last value given for `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value given for `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean flag: present with no value, `true`, `1` or `yes`.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(false),
            Some("" | "true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ApiError::bad_request(
                "invalid_query",
                format!("`{name}` must be true or false, got {other:?}"),
            )),
        }
    }

    /// A non-negative integer.
    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("`{name}` must be a non-negative integer, got {v:?}"),
                    )
                })
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<Vec<(String, String)>>::from_request_parts(parts, state).await {
            Ok(Query(pairs)) => Ok(QueryPairs(pairs)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// A body-read failure as an API error (413 when over the limit).
pub(crate) fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large()
    } else {
        ApiError::bad_request("invalid_body", e.body_text())
    }
}

/// Parse a JSON body (an empty body reads as `null`, for optional bodies).
pub(crate) fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

/// Parse a namespace from the path.
pub(crate) fn namespace(text: &str) -> Result<Namespace, ApiError> {
    Ok(Namespace::new(text)?)
}

/// Token buckets per client IP.
#[derive(Debug)]
struct RateLimiter {
    /// Requests per second per client IP; 0 = unlimited. Changes on reload.
    per_sec: std::sync::atomic::AtomicU32,
    buckets: Mutex<HashMap<IpAddr, (f64, tokio::time::Instant)>>,
}

/// Most client IPs tracked at once; past it idle buckets are forgotten.
const MAX_RATE_BUCKETS: usize = 10_000;

impl RateLimiter {
    fn new(per_sec: u32) -> Self {
        RateLimiter {
            per_sec: std::sync::atomic::AtomicU32::new(per_sec),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self) -> u32 {
        self.per_sec.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_limit(&self, per_sec: u32) {
        self.per_sec.store(per_sec, std::sync::atomic::Ordering::Relaxed);
        // Buckets sized for the old rate would let a burst through.
        self.buckets
            .lock()
            .expect("rate limiter lock is never poisoned")
            .clear();
    }

    fn allow(&self, ip: IpAddr) -> bool {
        let limit = self.limit();
        if limit == 0 {
            return true;
        }
        let per_sec = f64::from(limit);
        let now = tokio::time::Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock is never poisoned");
        if buckets.len() >= MAX_RATE_BUCKETS && !buckets.contains_key(&ip) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < per_sec
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((per_sec, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(per_sec);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn rate_limit(rate: Arc<RateLimiter>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip {
        if !rate.allow(ip) {
            return ApiError::rate_limited(rate.limit()).into_response();
        }
    }
    next.run(req).await
}

/// Whether a request to `route` (a route template) with `query` is a watch
/// stream or a blocking query: long by design, so not timed out, and
/// counted against `max_watchers`.
fn is_watch(route: &str, query: Option<&str>) -> bool {
    if route.starts_with("/v1/watch/") {
        return true;
    }
    // `GET /v1/kv/{ns}?index=R` with R > 0 blocks (see `kv::list`).
    route == "/v1/kv/{namespace}"
        && query.is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .any(|(k, v)| k == "index" && v.parse::<u64>().is_ok_and(|i| i > 0))
        })
}

/// Middleware: the body size limit (up front when the request says its
/// length; counted either way), the request timeout, and the cap on open
/// watches.
async fn bound_request(State(app): State<App>, req: Request, next: Next) -> Response {
    let metrics = app.node.latency_metrics().clone();
    let max_body = app.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        metrics.exceeded(Limit::HttpBodySize);
        return body_too_large().into_response();
    }
    // A body of unknown length is measured as the handler reads it, so a
    // 413 from its extractor is counted too.
    let (req, read) = if declared.is_none() {
        let read = Arc::new(AtomicUsize::new(0));
        let tally = read.clone();
        let (parts, body) = req.into_parts();
        let body = Body::from_stream(body.into_data_stream().inspect(move |chunk| {
            if let Ok(c) = chunk {
                tally.fetch_add(c.len(), Ordering::Relaxed);
            }
        }));
        (Request::from_parts(parts, body), Some(read))
    } else {
        (req, None)
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let response = if is_watch(&route, req.uri().query()) {
        let Ok(permit) = app.watchers.clone().try_acquire_owned() else {
            metrics.exceeded(Limit::HttpWatchers);
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_watchers",
                format!(
                    "this node already serves {} watch streams and blocking queries \
                     (limits.http_max_watchers); retry later or watch through another node",
                    app.limits.max_watchers
                ),
            )
            .into_response();
        };
        // The slot is held until the answer's body is done: for a watch
        // stream, until the client goes away or the node stops.
        let (parts, body) = next.run(req).await.into_parts();
        let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &permit;
            chunk
        }));
        Response::from_parts(parts, body)
    } else {
        match tokio::time::timeout(app.limits.request_timeout, next.run(req)).await {
            Ok(response) => response,
            Err(_) => {
                metrics.exceeded(Limit::HttpTimeout);
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    format!(
                        "the request was not answered within {} ms (limits.http_request_timeout_ms); \
                         the node may be overloaded",
                        app.limits.request_timeout.as_millis()
                    ),
                )
                .into_response();
            }
        }
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && read.is_some_and(|r| r.load(Ordering::Relaxed) > max_body)
    {
        metrics.exceeded(Limit::HttpBodySize);
    }
    response
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "request body exceeds the node's http_max_body_bytes",
    )
}
