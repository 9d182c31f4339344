//! `/v1/watch`: changes as server-sent events.
//!
//! Each event carries `id: <revision>` and, as `data:`, one JSON change (an
//! [`api::WatchEvent`]). The stream opens with a comment naming the revision
//! it starts after. `?since=R` (or the `Last-Event-ID` header an
//! `EventSource` sends when it reconnects) replays every matching change after
//! `R` first; a revision the node no longer holds answers 410 with
//! `current_revision`, so a client never misses a change silently. A watcher
//! that falls too far behind gets a final `event: error` and the stream ends.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::api::{self, ErrorBody, INDEX_HEADER};
use super::{namespace, ApiError, App, PathParams, QueryPairs};
use crate::core::ServiceName;
use crate::node::{WatchError, WatchFilter};

/// `?since=R`, else the `Last-Event-ID` header, else "from now".
fn since(q: &QueryPairs, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    if let Some(since) = q.u64("since")? {
        return Ok(Some(since));
    }
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("invalid_header", "Last-Event-ID must be a revision number")
            }),
    }
}

/// `GET /v1/watch/kv/{ns}?prefix=P&since=R`.
pub(crate) async fn kv(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = WatchFilter::Kv {
        namespace: namespace(&ns)?,
        prefix: q.get("prefix").unwrap_or("").to_string(),
    };
    stream(&app, filter, since(&q, &headers)?).await
}

/// `GET /v1/watch/services/{ns}/{service}?since=R`.
pub(crate) async fn services(
    State(app): State<App>,
    PathParams((ns, service)): PathParams<(String, String)>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = WatchFilter::Services {
        namespace: namespace(&ns)?,
        service: Some(ServiceName::new(service)?),
    };
    stream(&app, filter, since(&q, &headers)?).await
}

/// `GET /v1/watch/services/{ns}?since=R`: every service of a namespace.
pub(crate) async fn all_services(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = WatchFilter::Services {
        namespace: namespace(&ns)?,
        service: None,
    };
    stream(&app, filter, since(&q, &headers)?).await
}

/// `GET /v1/watch/members?since=R`.
pub(crate) async fn members(
    State(app): State<App>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    stream(&app, WatchFilter::Members, since(&q, &headers)?).await
}

async fn stream(app: &App, filter: WatchFilter, since: Option<u64>) -> Result<Response, ApiError> {
    let changes = app.node.watch(filter, since).await?;
    let start = changes.start_revision;
    let opening = futures::stream::once(async move {
        Ok::<Event, Infallible>(Event::default().comment(format!("watching after revision {start}")))
    });
    let events = changes.map(|item| {
        Ok::<Event, Infallible>(match item {
            Ok(item) => Event::default()
                .id(item.revision().to_string())
                .data(api::event_data(&api::WatchEvent::from(&item))),
            Err(e) => {
                let code = match e {
                    WatchError::TooSlow(_) => "too_slow",
                    _ => "stopped",
                };
                Event::default()
                    .event("error")
                    .data(api::event_data(&ErrorBody::new(code, e.to_string())))
            }
        })
    });
    let mut response = Sse::new(opening.chain(events))
        .keep_alive(KeepAlive::default())
        .into_response();
    response.headers_mut().insert(
        INDEX_HEADER,
        HeaderValue::from_str(&start.to_string()).expect("digits are a valid header value"),
    );
    Ok(response)
}
