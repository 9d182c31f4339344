//! Who may call the HTTP API: bearer tokens with roles per namespace, and
//! the Host / Origin / Content-Type checks that keep web pages out.
//!
//! The checks run in this order, each answering with a JSON error and
//! counting the rejection in `starling_http_rejected_requests_total{reason}`:
//!
//! 1. **Host** (`bad_host`, 403): the `Host` must name a loopback address,
//!    `localhost`, the bound address (any IP literal when bound to `0.0.0.0`
//!    or `::`) or an entry of `http_allowed_hosts`. A DNS-rebinding page
//!    reaches the node under its own host name and is refused here.
//! 2. **Origin** (`bad_origin`, 403): a request with an `Origin` header is
//!    served only when that origin is the node itself (same scheme, same
//!    host and port as the `Host`). Browsers send `Origin` on every
//!    cross-site POST, PUT and DELETE, so no other site can write.
//! 3. **Token** (`unauthenticated`, 401 with `WWW-Authenticate: Bearer`;
//!    `forbidden`, 403): once any token is configured, every endpoint but
//!    `/v1/health` needs `Authorization: Bearer <secret>` of a token whose
//!    role and namespaces cover the request (see [`Need`]).
//! 4. **Content-Type** (`bad_content_type`, 415): a POST, or a PUT to a
//!    service endpoint (the JSON-bodied writes), that names a content type
//!    other than `application/json` is refused, so an HTML form or a
//!    `text/plain` "simple request" never reaches a handler.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::metrics::HttpMetrics;
use super::ApiError;
use crate::core::Namespace;
use crate::node::{NodeConfig, NodeConfigError};

/// What a token may do. Each role includes the ones before it:
/// `admin` ⊇ `write` ⊇ `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HttpRole {
    /// Read keys, services, members, watches, history and metrics.
    Read,
    /// Also write and delete keys, roll back, run canaries, register
    /// services.
    Write,
    /// Everything; reserved for node and cluster operations.
    Admin,
}

impl fmt::Display for HttpRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpRole::Read => "read",
            HttpRole::Write => "write",
            HttpRole::Admin => "admin",
        })
    }
}

/// One `[[http_tokens]]` entry of the node config.
///
/// ```toml
/// [[http_tokens]]
/// name = "deploy"
/// role = "write"
/// namespaces = ["app", "web"]   # or ["*"]
/// secret_file = "/etc/starling/deploy.token"   # or: secret = "..."
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpToken {
    /// A name for logs and errors (never the secret).
    pub name: String,
    /// What the token may do.
    pub role: HttpRole,
    /// The namespaces it may touch; `"*"` is every namespace.
    pub namespaces: Vec<String>,
    /// The secret itself (at least 16 visible ASCII characters). Exactly
    /// one of `secret` and `secret_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A file holding the secret (surrounding whitespace ignored), read at
    /// start and on every reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl HttpToken {
    /// A token whose secret is given inline.
    pub fn inline(name: &str, role: HttpRole, namespaces: &[&str], secret: &str) -> Self {
        HttpToken {
            name: name.to_string(),
            role,
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            secret: Some(secret.to_string()),
            secret_file: None,
        }
    }

    /// A token whose secret is read from a file.
    pub fn from_file(name: &str, role: HttpRole, namespaces: &[&str], secret_file: PathBuf) -> Self {
        HttpToken {
            secret: None,
            secret_file: Some(secret_file),
            ..HttpToken::inline(name, role, namespaces, "")
        }
    }
}

impl fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("namespaces", &self.namespaces)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

/// Shortest secret accepted, bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Which namespaces a token covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    fn covers(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(set) => set.contains(namespace),
        }
    }
}

/// A configured token with its secret resolved and hashed.
#[derive(Clone, PartialEq, Eq)]
struct Token {
    name: String,
    role: HttpRole,
    scope: Scope,
    digest: [u8; 32],
}

/// The access policy of a running HTTP server: resolved tokens, allowed
/// hosts and the scheme it serves. Built from a [`NodeConfig`]; swapped
/// whole on reload ([`super::HttpServer::set_access`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HttpAccess {
    tokens: Vec<Token>,
    /// Lower-case host names or addresses, no port.
    allowed_hosts: Vec<String>,
    /// Certificate and key PEM files when serving HTTPS.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for HttpAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAccess")
            .field(
                "tokens",
                &self.tokens.iter().map(|t| (&t.name, t.role)).collect::<Vec<_>>(),
            )
            .field("allowed_hosts", &self.allowed_hosts)
            .field("tls", &self.tls)
            .finish()
    }
}

impl HttpAccess {
    /// The policy a node configuration asks for: reads every
    /// `secret_file`, checks every token, host and TLS setting. The error
    /// names the field (`http_tokens[1].secret_file`...).
    pub fn from_config(config: &NodeConfig) -> Result<HttpAccess, NodeConfigError> {
        let field = |f: String, r: String| NodeConfigError::Field { field: f, reason: r };
        let mut tokens: Vec<Token> = Vec::with_capacity(config.http_tokens.len());
        for (i, t) in config.http_tokens.iter().enumerate() {
            let at = format!("http_tokens[{i}]");
            if t.name.is_empty() || t.name.len() > 64 {
                return Err(field(format!("{at}.name"), "1..=64 bytes".into()));
            }
            if tokens.iter().any(|o| o.name == t.name) {
                return Err(field(
                    format!("{at}.name"),
                    format!("token name {:?} is used twice", t.name),
                ));
            }
            let secret = match (&t.secret, &t.secret_file) {
                (Some(s), None) => s.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| {
                        field(
                            format!("{at}.secret_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_string(),
                _ => {
                    return Err(field(
                        format!("{at}.secret"),
                        format!(
                            "token {:?}: give exactly one of `secret` and `secret_file`",
                            t.name
                        ),
                    ))
                }
            };
            if secret.len() < MIN_SECRET_BYTES || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(field(
                    format!("{at}.secret"),
                    format!(
                        "token {:?}: the secret must be at least {MIN_SECRET_BYTES} visible ASCII \
                         characters (e.g. `openssl rand -hex 32`)",
                        t.name
                    ),
                ));
            }
            let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            if let Some(other) = tokens.iter().find(|o| o.digest == digest) {
                return Err(field(
                    format!("{at}.secret"),
                    format!("token {:?} has the same secret as {:?}", t.name, other.name),
                ));
            }
            if t.namespaces.is_empty() {
                return Err(field(
                    format!("{at}.namespaces"),
                    format!("token {:?}: list its namespaces, or [\"*\"] for all", t.name),
                ));
            }
            let scope = if t.namespaces.iter().any(|n| n == "*") {
                Scope::All
            } else {
                for n in &t.namespaces {
                    Namespace::new(n.as_str())
                        .map_err(|e| field(format!("{at}.namespaces"), format!("{n:?}: {e}")))?;
                }
                Scope::Only(t.namespaces.iter().cloned().collect())
            };
            tokens.push(Token {
                name: t.name.clone(),
                role: t.role,
                scope,
                digest,
            });
        }
        let mut allowed_hosts = Vec::with_capacity(config.http_allowed_hosts.len());
        for h in &config.http_allowed_hosts {
            let host = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .map_or(host.clone(), str::to_string);
            if host.is_empty()
                || host.contains(['/', ' ', '@'])
                || (host.contains(':') && host.parse::<IpAddr>().is_err())
            {
                return Err(field(
                    "http_allowed_hosts".into(),
                    format!("{h:?}: a host name or IP address, without scheme or port"),
                ));
            }
            allowed_hosts.push(host);
        }
        let tls = match (&config.http_tls_cert, &config.http_tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                if !cfg!(feature = "tls") {
                    return Err(field(
                        "http_tls_cert".into(),
                        "this build has no TLS support (cargo feature `tls`)".into(),
                    ));
                }
                Some((cert.clone(), key.clone()))
            }
            (Some(_), None) => {
                return Err(field(
                    "http_tls_key".into(),
                    "`http_tls_cert` is set: give the private key's PEM file too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(field(
                    "http_tls_cert".into(),
                    "`http_tls_key` is set: give the certificate's PEM file too".into(),
                ))
            }
        };
        if let Some(addr) = config.http {
            if tokens.is_empty() && !addr.ip().is_loopback() {
                return Err(field(
                    "http_tokens".into(),
                    format!(
                        "the HTTP API would listen on {addr}, which is not a loopback address, \
                         with no token: define at least one [[http_tokens]] or bind `http` to \
                         127.0.0.1"
                    ),
                ));
            }
        }
        Ok(HttpAccess {
            tokens,
            allowed_hosts,
            tls,
        })
    }

    /// Whether any token is configured (then requests need one).
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether the server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The token whose secret is `presented`. Every token's digest is
    /// compared, in constant time, whatever matches.
    fn token(&self, presented: &[u8]) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
    }

    /// Whether a `Host` (host and optional port) names this node.
    fn host_allowed(&self, host: &str, bound: SocketAddr) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if self.allowed_hosts.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            // An IP literal cannot be rebound by DNS; it must still be an
            // address this server answers on.
            Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
            Err(_) => name == "localhost",
        }
    }

    /// Decide a request's authorization header against a need.
    fn authorize(&self, header: Option<&HeaderValue>, need: &Need) -> Result<(), Rejection> {
        if self.tokens.is_empty() || matches!(need, Need::Open) {
            return Ok(());
        }
        let presented = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or(Rejection::Unauthenticated)?;
        let token = self
            .token(presented.as_bytes())
            .ok_or(Rejection::Unauthenticated)?;
        let (role, namespace) = match need {
            Need::Open => return Ok(()),
            Need::Cluster(role) => (*role, None),
            Need::Namespace(role, ns) => (*role, Some(ns.as_str())),
        };
        if token.role < role || namespace.is_some_and(|ns| !token.scope.covers(ns)) {
            return Err(Rejection::Forbidden {
                token: token.name.clone(),
                role,
                namespace: namespace.map(str::to_string),
            });
        }
        Ok(())
    }
}

/// The host part of a `Host` header or authority, lower case, without port
/// or IPv6 brackets.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.to_string()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name.to_string(),
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_string();
    (!name.is_empty()).then_some(name)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// `host[:port]` with the scheme's default port made explicit, for
/// comparing an `Origin` with a `Host`.
fn authority_with_port(authority: &str, tls: bool) -> Option<String> {
    let name = host_name(authority)?;
    let port = if authority.trim_end().ends_with(']') || !authority.contains(':') {
        if tls {
            443
        } else {
            80
        }
    } else {
        let p = authority.rsplit_once(':')?.1;
        p.parse::<u16>().ok()?
    };
    let name = if name.contains(':') {
        format!("[{name}]")
    } else {
        name
    };
    Some(format!("{name}:{port}"))
}

/// What a request needs from its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: `/v1/health`.
    Open,
    /// A role, whatever the token's namespaces: cluster-wide reads
    /// (`/metrics`, `/v1/members`, `/v1/watch/members`).
    Cluster(HttpRole),
    /// A role on one namespace.
    Namespace(HttpRole, String),
}

impl Need {
    /// The need of a request from its method, its route template and its
    /// `{namespace}` path parameter. Reads (GET, HEAD) need `read`,
    /// everything else `write`, on the namespace of the path.
    pub(crate) fn of(method: &Method, route: &str, namespace: Option<&str>) -> Need {
        let reading = method == Method::GET || method == Method::HEAD;
        match (route, namespace) {
            ("/v1/health", _) => Need::Open,
            // Writer rules: readable by any reader, changed by admins.
            ("/v1/acl" | "/v1/acl/{namespace}", _) if reading => Need::Cluster(HttpRole::Read),
            ("/v1/acl/{namespace}", _) => Need::Cluster(HttpRole::Admin),
            (_, Some(ns)) => Need::Namespace(
                if reading { HttpRole::Read } else { HttpRole::Write },
                ns.to_string(),
            ),
            ("/metrics" | "/v1/members" | "/v1/watch/members", _) if reading => Need::Cluster(HttpRole::Read),
            // Anything else (no such route today) is an admin operation.
            _ => Need::Cluster(HttpRole::Admin),
        }
    }
}

/// The policy in force, swapped whole on reload.
#[derive(Debug)]
pub(crate) struct AccessCell {
    policy: RwLock<Arc<HttpAccess>>,
    /// The address the server is bound to.
    bound: SocketAddr,
}

impl AccessCell {
    pub(crate) fn new(access: HttpAccess, bound: SocketAddr) -> Self {
        AccessCell {
            policy: RwLock::new(Arc::new(access)),
            bound,
        }
    }

    pub(crate) fn get(&self) -> Arc<HttpAccess> {
        self.policy
            .read()
            .expect("access policy lock is never poisoned")
            .clone()
    }

    pub(crate) fn set(&self, access: HttpAccess) {
        *self.policy.write().expect("access policy lock is never poisoned") = Arc::new(access);
    }
}

/// The state of the access middlewares.
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    pub(crate) access: Arc<AccessCell>,
    pub(crate) metrics: HttpMetrics,
}

impl Guard {
    fn reject(&self, r: Rejection) -> Response {
        self.metrics.rejected(&r);
        r.into_response()
    }
}

/// Middleware (outer, every request): the Host and Origin checks.
pub(crate) async fn check_host_and_origin(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let access = guard.access.get();
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    // Browsers always send a Host; a client without one (HTTP/1.0) is no
    // web page.
    if let Some(host) = &host {
        if !access.host_allowed(host, guard.access.bound) {
            return guard.reject(Rejection::BadHost(host.clone()));
        }
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("<not text>");
        if !same_origin(origin, host.as_deref(), access.is_tls()) {
            return guard.reject(Rejection::BadOrigin(origin.to_string()));
        }
    }
    next.run(req).await
}

/// Whether `origin` (`scheme://host[:port]`) is the node itself as named by
/// `host`.
fn same_origin(origin: &str, host: Option<&str>, tls: bool) -> bool {
    let Some(host) = host else {
        return false;
    };
    let want_scheme = if tls { "https://" } else { "http://" };
    let Some(authority) = origin
        .get(..want_scheme.len())
        .filter(|s| s.eq_ignore_ascii_case(want_scheme))
        .map(|_| origin[want_scheme.len()..].trim_end_matches('/'))
    else {
        return false;
    };
    if authority.contains(['/', '@', '?', '#']) {
        return false;
    }
    match (
        authority_with_port(authority, tls),
        authority_with_port(host, tls),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Middleware (per route): the token check, then the Content-Type check.
pub(crate) async fn check_token_and_type(
    State(guard): State<Guard>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let access = guard.access.get();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str())
        .to_string();
    let namespace = match &params {
        Ok(params) => params
            .iter()
            .find(|(k, _)| *k == "namespace")
            .map(|(_, v)| v.to_string()),
        // Not UTF-8 once decoded: no token's namespace list names it (the
        // handler answers 400 to a token that may pass).
        Err(_) => route.contains("{namespace}").then(String::new),
    };
    let need = Need::of(req.method(), &route, namespace.as_deref());
    if let Err(r) = access.authorize(req.headers().get(AUTHORIZATION), &need) {
        return guard.reject(r);
    }
    let json_endpoint = req.method() == Method::POST
        || (req.method() == Method::PUT
            && (route.starts_with("/v1/services/") || route.starts_with("/v1/acl/")));
    if json_endpoint {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let media = ct.split(';').next().unwrap_or("").trim();
            if !media.eq_ignore_ascii_case("application/json") {
                return guard.reject(Rejection::BadContentType(ct.to_string()));
            }
        }
    }
    next.run(req).await
}

/// Why a request was refused before reaching its handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No token, an unknown one, or not a bearer token: 401.
    Unauthenticated,
    /// The token lacks the role or the namespace: 403.
    Forbidden {
        /// The token's name.
        token: String,
        /// The role needed.
        role: HttpRole,
        /// The namespace asked for, if any.
        namespace: Option<String>,
    },
    /// The `Host` names something else: 403.
    BadHost(String),
    /// The `Origin` is another site: 403.
    BadOrigin(String),
    /// A JSON endpoint got another content type: 415.
    BadContentType(String),
}

impl Rejection {
    /// Every `reason` label value, for the metric.
    pub(crate) const REASONS: [&'static str; 5] = [
        "unauthenticated",
        "forbidden",
        "bad_host",
        "bad_origin",
        "bad_content_type",
    ];

    /// The metric label and the error code.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::Forbidden { .. } => "forbidden",
            Rejection::BadHost(_) => "bad_host",
            Rejection::BadOrigin(_) => "bad_origin",
            Rejection::BadContentType(_) => "bad_content_type",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let e = match &self {
            Rejection::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                self.reason(),
                "this node requires a token: send `Authorization: Bearer <secret>` of one of \
                 its [[http_tokens]] (CLI: --token, --token-file or STARLING_TOKEN)",
            ),
            Rejection::Forbidden {
                token,
                role,
                namespace,
            } => ApiError::new(
                StatusCode::FORBIDDEN,
                self.reason(),
                match namespace {
                    Some(ns) => format!(
                        "token {token:?} lacks role `{role}` on namespace {ns:?}: use a token \
                         with that role and namespace, or extend this one in the node config"
                    ),
                    None => format!(
                        "token {token:?} lacks role `{role}`: use a token with that role, or \
                         extend this one in the node config"
                    ),
                },
            ),
            Rejection::BadHost(host) => ApiError::new(
                StatusCode::FORBIDDEN,
                self.reason(),
                format!(
                    "Host {host:?} does not name this node: use a loopback address or the \
                     bound address, or add the name to `http_allowed_hosts`"
                ),
            ),
            Rejection::BadOrigin(origin) => ApiError::new(
                StatusCode::FORBIDDEN,
                self.reason(),
                format!("cross-origin request from {origin:?} refused"),
            ),
            Rejection::BadContentType(ct) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                self.reason(),
                format!("this endpoint takes `Content-Type: application/json`, not {ct:?}"),
            ),
        };
        let mut response = e.into_response();
        if matches!(self, Rejection::Unauthenticated) {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"starling\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokens: Vec<HttpToken>) -> NodeConfig {
        NodeConfig {
            http_tokens: tokens,
            ..NodeConfig::default()
        }
    }

    fn bearer(s: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {s}")).unwrap()
    }

    const LOOP: &str = "127.0.0.1:7070";

    #[test]
    fn roles_include_the_lower_ones_and_namespaces_scope_them() {
        let access = HttpAccess::from_config(&config(vec![
            HttpToken::inline("reader", HttpRole::Read, &["app"], "reader-secret-0123456789"),
            HttpToken::inline("writer", HttpRole::Write, &["app"], "writer-secret-0123456789"),
            HttpToken::inline("admin", HttpRole::Admin, &["*"], "admin-secret-0123456789"),
        ]))
        .unwrap();
        let read = |ns: &str| Need::Namespace(HttpRole::Read, ns.into());
        let write = |ns: &str| Need::Namespace(HttpRole::Write, ns.into());
        let r = bearer("reader-secret-0123456789");
        let w = bearer("writer-secret-0123456789");
        let a = bearer("admin-secret-0123456789");
        assert!(access.authorize(Some(&r), &read("app")).is_ok());
        assert!(matches!(
            access.authorize(Some(&r), &write("app")),
            Err(Rejection::Forbidden { .. })
        ));
        assert!(access.authorize(Some(&w), &write("app")).is_ok());
        assert!(access.authorize(Some(&w), &read("app")).is_ok());
        assert!(matches!(
            access.authorize(Some(&w), &read("other")),
            Err(Rejection::Forbidden { .. })
        ));
        assert!(access.authorize(Some(&a), &write("other")).is_ok());
        assert!(access
            .authorize(Some(&a), &Need::Cluster(HttpRole::Admin))
            .is_ok());
        assert!(access.authorize(Some(&r), &Need::Cluster(HttpRole::Read)).is_ok());
        assert!(matches!(
            access.authorize(Some(&w), &Need::Cluster(HttpRole::Admin)),
            Err(Rejection::Forbidden { .. })
        ));
        assert_eq!(
            access.authorize(None, &read("app")),
            Err(Rejection::Unauthenticated)
        );
        assert_eq!(
            access.authorize(Some(&bearer("reader-secret-012345678")), &read("app")),
            Err(Rejection::Unauthenticated)
        );
        let basic = HeaderValue::from_static("Basic reader-secret-0123456789");
        assert_eq!(
            access.authorize(Some(&basic), &read("app")),
            Err(Rejection::Unauthenticated)
        );
        assert!(access.authorize(None, &Need::Open).is_ok());
    }

    #[test]
    fn with_no_token_configured_everything_is_open() {
        let access = HttpAccess::from_config(&config(vec![])).unwrap();
        assert!(!access.requires_tokens());
        assert!(access
            .authorize(None, &Need::Namespace(HttpRole::Write, "app".into()))
            .is_ok());
    }

    #[test]
    fn the_need_of_each_route_follows_the_role_table() {
        let ns = Some("app");
        assert_eq!(Need::of(&Method::GET, "/v1/health", None), Need::Open);
        assert_eq!(
            Need::of(&Method::GET, "/metrics", None),
            Need::Cluster(HttpRole::Read)
        );
        assert_eq!(
            Need::of(&Method::GET, "/v1/watch/members", None),
            Need::Cluster(HttpRole::Read)
        );
        assert_eq!(
            Need::of(&Method::GET, "/v1/kv/{namespace}/{*key}", ns),
            Need::Namespace(HttpRole::Read, "app".into())
        );
        for m in [Method::PUT, Method::DELETE, Method::POST] {
            assert_eq!(
                Need::of(&m, "/v1/kv/{namespace}/{*key}", ns),
                Need::Namespace(HttpRole::Write, "app".into())
            );
        }
        assert_eq!(
            Need::of(&Method::POST, "/v1/members", None),
            Need::Cluster(HttpRole::Admin)
        );
    }

    #[test]
    fn bad_token_definitions_are_named() {
        let err = |t: HttpToken| HttpAccess::from_config(&config(vec![t])).unwrap_err().to_string();
        let e = err(HttpToken::inline("t", HttpRole::Read, &["app"], "short"));
        assert!(e.contains("http_tokens[0].secret") && e.contains("16"), "{e}");
        let e = err(HttpToken::inline(
            "t",
            HttpRole::Read,
            &[],
            "long-enough-secret-123",
        ));
        assert!(e.contains("http_tokens[0].namespaces"), "{e}");
        let e = err(HttpToken::inline(
            "t",
            HttpRole::Read,
            &["bad ns"],
            "long-enough-secret-123",
        ));
        assert!(e.contains("http_tokens[0].namespaces"), "{e}");
        let e = err(HttpToken::from_file(
            "t",
            HttpRole::Read,
            &["app"],
            "/nonexistent/starling.token".into(),
        ));
        assert!(e.contains("http_tokens[0].secret_file"), "{e}");
        let mut both = HttpToken::inline("t", HttpRole::Read, &["app"], "long-enough-secret-123");
        both.secret_file = Some("/x".into());
        assert!(err(both).contains("exactly one"));
        let e = HttpAccess::from_config(&config(vec![
            HttpToken::inline("a", HttpRole::Read, &["app"], "long-enough-secret-123"),
            HttpToken::inline("b", HttpRole::Write, &["app"], "long-enough-secret-123"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http_tokens[1].secret") && e.contains("same secret"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        std::fs::write(&path, "file-secret-0123456789\n").unwrap();
        let access = HttpAccess::from_config(&config(vec![HttpToken::from_file(
            "f",
            HttpRole::Read,
            &["*"],
            path,
        )]))
        .unwrap();
        assert!(access
            .authorize(
                Some(&bearer("file-secret-0123456789")),
                &Need::Namespace(HttpRole::Read, "x".into())
            )
            .is_ok());
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token() {
        let mut c = NodeConfig {
            http: Some("0.0.0.0:7070".parse().unwrap()),
            ..NodeConfig::default()
        };
        let e = HttpAccess::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("`http_tokens`") && e.contains("0.0.0.0:7070"), "{e}");
        c.http_tokens = vec![HttpToken::inline(
            "t",
            HttpRole::Read,
            &["*"],
            "long-enough-secret-123",
        )];
        HttpAccess::from_config(&c).unwrap();
        c.http_tokens.clear();
        c.http = Some("[::1]:7070".parse().unwrap());
        HttpAccess::from_config(&c).unwrap();
    }

    #[test]
    fn hosts_are_loopback_the_bound_address_or_allowed() {
        let c = NodeConfig {
            http_allowed_hosts: vec!["Starling.Example.".into(), "10.1.2.3".into()],
            ..NodeConfig::default()
        };
        let access = HttpAccess::from_config(&c).unwrap();
        let bound: SocketAddr = LOOP.parse().unwrap();
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "starling.example:7070",
            "10.1.2.3:7070",
        ] {
            assert!(access.host_allowed(ok, bound), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7070",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.9.9.9:7070",
            "",
            "[::1",
            "127.0.0.1:x",
        ] {
            assert!(!access.host_allowed(bad, bound), "{bad}");
        }
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert!(access.host_allowed("10.9.9.9:7070", any));
        assert!(!access.host_allowed("evil.example", any));
        let own: SocketAddr = "10.9.9.9:7070".parse().unwrap();
        assert!(access.host_allowed("10.9.9.9:7070", own));
        let bad = NodeConfig {
            http_allowed_hosts: vec!["http://x".into()],
            ..NodeConfig::default()
        };
        let e = HttpAccess::from_config(&bad).unwrap_err().to_string();
        assert!(e.contains("http_allowed_hosts"), "{e}");
    }

    #[test]
    fn only_the_node_itself_is_a_same_origin() {
        let h = Some("127.0.0.1:7070");
        assert!(same_origin("http://127.0.0.1:7070", h, false));
        assert!(same_origin("HTTP://127.0.0.1:7070/", h, false));
        assert!(!same_origin("https://127.0.0.1:7070", h, false));
        assert!(same_origin("https://127.0.0.1:7070", h, true));
        assert!(!same_origin("http://127.0.0.1:8080", h, false));
        assert!(!same_origin("http://evil.example", h, false));
        assert!(!same_origin("http://localhost:7070", h, false));
        assert!(!same_origin("null", h, false));
        assert!(!same_origin("http://127.0.0.1:7070", None, false));
        assert!(same_origin("http://localhost", Some("localhost:80"), false));
        assert!(same_origin("https://[::1]", Some("[::1]:443"), true));
        assert!(!same_origin("http://evil@127.0.0.1:7070", h, false));
    }

    #[test]
    fn tls_needs_both_files() {
        let mut c = NodeConfig {
            http_tls_cert: Some("/c.pem".into()),
            ..NodeConfig::default()
        };
        let e = HttpAccess::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("http_tls_key"), "{e}");
        c.http_tls_cert = None;
        c.http_tls_key = Some("/k.pem".into());
        let e = HttpAccess::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("http_tls_cert"), "{e}");
    }

    #[test]
    fn a_token_debug_print_hides_the_secret() {
        let t = HttpToken::inline("t", HttpRole::Read, &["app"], "very-secret-value-42");
        assert!(!format!("{t:?}").contains("very-secret"));
    }
}
