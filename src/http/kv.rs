//! `/v1/kv`: config keys, their history, rollback, and blocking lists.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;

use super::api::{self, INDEX_HEADER, VERSION_HEADER};
use super::{body_error, json_body, namespace, views, ApiError, App, PathParams, QueryPairs};
use crate::core::{Expect, Key, Namespace, VersionId};
use crate::node::WatchFilter;

/// Keys a list returns when no `limit` is given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// How long a blocking query waits when no `wait` is given.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// What a catch-all `/v1/kv/{ns}/{*key}` path addresses.
enum Target {
    /// The key itself.
    Key(Key),
    /// An action on the key (`history`, `rollback`, `resolve`).
    Action(Key, &'static str),
}

/// Split `a/b/history` into the key `a/b` and the action `history`, for
/// the actions the method allows.
fn target(raw: &str, actions: &[&'static str], literal: bool) -> Result<Target, ApiError> {
    if !literal {
        for action in actions {
            if let Some(key) = raw.strip_suffix(action).and_then(|k| k.strip_suffix('/')) {
                if !key.is_empty() {
                    return Ok(Target::Action(Key::new(key)?, action));
                }
            }
        }
    }
    Ok(Target::Key(Key::new(raw)?))
}

/// `GET /v1/kv/{ns}/{*key}`: read a key (`?raw=true`: its bytes), or its
/// history (`.../history` or `?history=true`).
pub(crate) async fn get(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let ns = namespace(&ns)?;
    let raw = q.flag("raw")?;
    let key = match target(&key, &["history"], q.flag("literal")?)? {
        Target::Action(key, _) => return history(&app, &ns, &key).await,
        Target::Key(key) if q.flag("history")? => return history(&app, &ns, &key).await,
        Target::Key(key) => key,
    };
    let entry = app
        .node
        .get(&ns, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("key {ns}/{key} not found")))?;
    if raw {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            VERSION_HEADER,
            HeaderValue::from_str(&entry.version.id.to_string())
                .expect("16 hex digits are a valid header value"),
        );
        return Ok((headers, entry.value).into_response());
    }
    Ok(Json(api::KvEntry::from(&entry)).into_response())
}

async fn history(app: &App, ns: &Namespace, key: &Key) -> Result<Response, ApiError> {
    let versions = app.node.history(ns, key).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("key {ns}/{key} has no history")));
    }
    Ok(Json(api::History {
        key: key.as_str().to_string(),
        namespace: ns.as_str().to_string(),
        versions: versions
            .iter()
            .map(|(v, bytes, live)| views::history_entry(v, bytes.as_deref(), *live))
            .collect(),
    })
    .into_response())
}

/// Parse `?cas=`: `absent` or a 16-hex-digit version id.
fn expect(q: &QueryPairs) -> Result<Option<Expect>, ApiError> {
    match q.get("cas") {
        None => Ok(None),
        Some("absent") => Ok(Some(Expect::Absent)),
        Some(v) => VersionId::parse(v)
            .map(|v| Some(Expect::Version(v)))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_version",
                    format!("cas must be `absent` or a 16-hex-digit version id, got {v:?}"),
                )
            }),
    }
}

/// `PUT /v1/kv/{ns}/{*key}`: write the body as the value; answers once
/// durable on this node.
pub(crate) async fn put(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
    q: QueryPairs,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<api::WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let key = Key::new(key)?;
    let expect = expect(&q)?;
    let value = body.map_err(body_error)?.to_vec();
    let written = match expect {
        Some(e) => app.node.put_if(&ns, &key, value, e).await?,
        None => app.node.put(&ns, &key, value).await?,
    };
    Ok(Json((&written).into()))
}

/// `DELETE /v1/kv/{ns}/{*key}` (`?cas=` as for `PUT`); 404 if absent.
pub(crate) async fn delete(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
    q: QueryPairs,
) -> Result<Json<api::WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let key = Key::new(key)?;
    let written = match expect(&q)? {
        Some(e) => app.node.delete_if(&ns, &key, e).await?,
        // The engine answers NotFound (404) for an absent or deleted key.
        None => app.node.delete(&ns, &key).await?,
    };
    Ok(Json((&written).into()))
}

/// `POST /v1/kv/{ns}/{*key}/rollback` with `{"version": "<16 hex>"}`: write
/// that version's content again as a new version. `POST .../resolve` with
/// `{"version"}` (a live sibling) or `{"value"}`: write it over every sibling.
pub(crate) async fn post(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<api::WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let (key, action) = match target(&key, &["rollback", "resolve"], false)? {
        Target::Action(key, action) => (key, action),
        Target::Key(_) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "POST is only for /v1/kv/{ns}/{key}/rollback and /v1/kv/{ns}/{key}/resolve",
            ))
        }
    };
    let body: Option<api::VersionRequest> = json_body(&body.map_err(body_error)?)?;
    let body = body.ok_or_else(|| {
        ApiError::bad_request("invalid_body", "expected a JSON body {\"version\": \"<16 hex>\"}")
    })?;
    let version = body
        .version
        .as_deref()
        .map(|v| {
            VersionId::parse(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_version",
                    format!("version must be 16 hex digits, got {v:?}"),
                )
            })
        })
        .transpose()?;
    let written = match (action, version, body.value) {
        ("rollback", Some(v), None) => app.node.rollback(&ns, &key, v).await?,
        ("resolve", Some(v), None) => app.node.resolve(&ns, &key, v).await?,
        ("resolve", None, Some(value)) => app.node.put(&ns, &key, value.into_bytes()).await?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!(
                    "{action} takes {{\"version\": \"<16 hex>\"}}{}",
                    if action == "resolve" {
                        " or {\"value\": \"...\"}"
                    } else {
                        ""
                    }
                ),
            ))
        }
    };
    Ok(Json((&written).into()))
}

/// Parse a wait such as `30s`, `500ms`, `5m` or `10` (seconds).
fn parse_wait(text: &str) -> Option<Duration> {
    let (num, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.saturating_mul(60))),
        _ => None,
    }
}

/// `GET /v1/kv/{ns}?prefix=P&limit=N`: keys in order. With `index=R` it is
/// a blocking query: it answers as soon as a matching key changed after
/// revision `R`, or when `wait` (default 30 s, at most 5 min) runs out. The
/// `X-Starling-Index` header carries the revision to pass as the next `index`.
pub(crate) async fn list(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let ns = namespace(&ns)?;
    let prefix = q.get("prefix").unwrap_or("").to_string();
    let limit = match q.u64("limit")? {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`limit` must be at least 1",
            ))
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(app.limits.max_list),
        None => DEFAULT_LIST_LIMIT.min(app.limits.max_list),
    };
    let wait = match q.get("wait") {
        Some(w) => parse_wait(w).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("`wait` must look like 30s, 500ms or 5m, got {w:?}"),
            )
        })?,
        None => DEFAULT_WAIT,
    }
    .min(app.limits.max_wait);
    if let Some(index) = q.u64("index")?.filter(|i| *i > 0) {
        let filter = WatchFilter::Kv {
            namespace: ns.clone(),
            prefix: prefix.clone(),
        };
        // A compacted index answers at once: the list is a full snapshot.
        if let Ok(mut changes) = app.node.watch(filter, Some(index)).await {
            let _ = tokio::time::timeout(wait, changes.next()).await;
        }
    }
    // Read the revision before the list: a change in between shows up in
    // the list *and* wakes the next query, so none is ever missed.
    let revision = app.node.status().await?.revision;
    let mut entries = app.node.list(&ns, &prefix, limit.saturating_add(1)).await?;
    let truncated = entries.len() > limit;
    entries.truncate(limit);
    let body = api::KvList {
        entries: entries.iter().map(api::KvEntry::from).collect(),
        index: revision,
        namespace: ns.as_str().to_string(),
        prefix,
        truncated,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        INDEX_HEADER,
        HeaderValue::from_str(&revision.to_string()).expect("digits are a valid header value"),
    );
    Ok((headers, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_with_units_and_default_to_seconds() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_wait("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_wait("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_wait("7h"), None);
        assert_eq!(parse_wait("s"), None);
    }

    #[test]
    fn history_suffix_addresses_the_key_before_it_unless_literal() {
        match target("a/b/history", &["history"], false).unwrap() {
            Target::Action(k, "history") => assert_eq!(k.as_str(), "a/b"),
            _ => panic!("expected the history action"),
        }
        assert!(matches!(
            target("history", &["history"], false).unwrap(),
            Target::Key(_)
        ));
        assert!(matches!(
            target("a/history", &["history"], true).unwrap(),
            Target::Key(_)
        ));
        assert!(matches!(
            target("a/myhistory", &["history"], false).unwrap(),
            Target::Key(_)
        ));
    }
}
