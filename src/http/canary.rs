//! `/v1/canary`: gray rollout of config values.
//!
//! * `GET /v1/canary/{ns}` — every running canary in the namespace.
//! * `GET /v1/canary/{ns}/{*key}` — one key's canary (404 if none).
//! * `PUT /v1/canary/{ns}/{*key}?selector=role=gateway,region=eu&percent=10`
//!   — start or replace the canary with the body as its value.
//! * `POST /v1/canary/{ns}/{*key}/promote` — make it the stable value.
//! * `POST /v1/canary/{ns}/{*key}/abort` or `DELETE /v1/canary/{ns}/{*key}`
//!   — end it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::api::{self, WriteResponse};
use super::{body_error, namespace, ApiError, App, PathParams, QueryPairs};
use crate::core::{CanaryTarget, Key};

/// `GET /v1/canary/{ns}`.
pub(crate) async fn list(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
) -> Result<Json<api::CanaryList>, ApiError> {
    let ns = namespace(&ns)?;
    let canaries = app.node.canaries(&ns).await?;
    Ok(Json(api::CanaryList {
        canaries: canaries.iter().map(api::Canary::from).collect(),
        namespace: ns.as_str().to_string(),
    }))
}

/// `GET /v1/canary/{ns}/{*key}`.
pub(crate) async fn get(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
) -> Result<Json<api::Canary>, ApiError> {
    let ns = namespace(&ns)?;
    let key = Key::new(key)?;
    let canary = app
        .node
        .canary(&ns, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("key {ns}/{key} has no canary")))?;
    Ok(Json((&canary).into()))
}

/// Parse `?selector=` and `?percent=` into a target.
fn target(q: &QueryPairs) -> Result<CanaryTarget, ApiError> {
    let tags = CanaryTarget::parse_selector(q.get("selector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request("invalid_selector", e))?;
    let percent = q
        .get("percent")
        .map(|p| {
            p.trim_end_matches('%').parse::<u8>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_percent",
                    format!("percent must be a whole number 1..=100, got {p:?}"),
                )
            })
        })
        .transpose()?;
    let target = CanaryTarget { tags, percent };
    target
        .validate()
        .map_err(|e| ApiError::bad_request("invalid_target", e))?;
    Ok(target)
}

/// `PUT /v1/canary/{ns}/{*key}?selector=...&percent=...` with the value as
/// the body.
pub(crate) async fn put(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
    q: QueryPairs,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let key = Key::new(key)?;
    let target = target(&q)?;
    let value = body.map_err(body_error)?.to_vec();
    let written = app.node.set_canary(&ns, &key, value, target).await?;
    Ok(Json((&written).into()))
}

/// `DELETE /v1/canary/{ns}/{*key}`: abort.
pub(crate) async fn delete(
    State(app): State<App>,
    PathParams((ns, key)): PathParams<(String, String)>,
) -> Result<Json<WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let key = Key::new(key)?;
    let written = app.node.abort_canary(&ns, &key).await?;
    Ok(Json((&written).into()))
}

/// `POST /v1/canary/{ns}/{*key}/promote` and `.../abort`.
pub(crate) async fn post(
    State(app): State<App>,
    PathParams((ns, raw)): PathParams<(String, String)>,
) -> Result<Json<WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let action = ["promote", "abort"].into_iter().find_map(|a| {
        raw.strip_suffix(a)
            .and_then(|k| k.strip_suffix('/'))
            .filter(|k| !k.is_empty())
            .map(|k| (a, k))
    });
    let Some((action, key)) = action else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST is only for /v1/canary/{ns}/{key}/promote and /v1/canary/{ns}/{key}/abort",
        ));
    };
    let key = Key::new(key)?;
    let written = match action {
        "promote" => app.node.promote_canary(&ns, &key).await?,
        _ => app.node.abort_canary(&ns, &key).await?,
    };
    Ok(Json((&written).into()))
}
