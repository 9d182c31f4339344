//! `/v1/acl`: the per-namespace writer rules (docs/SECURITY.md "Writer
//! rules"). Reading needs `read`, changing needs an `admin` token — and
//! the node itself must be named in `protocol.acl_admins`.
//!
//! * `GET /v1/acl` — the admins and every rule in force.
//! * `GET /v1/acl/{ns}` — one namespace's writers (404: no rule, open).
//! * `PUT /v1/acl/{ns}` with `{"writers": ["12D3KooW...", ...]}` — make
//!   them the namespace's writers from now on.
//! * `DELETE /v1/acl/{ns}` — remove the rule (open to every member).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::api::WriteResponse;
use super::{body_error, json_body, namespace, ApiError, App, PathParams};
use crate::core::NodeId;
use crate::node::{AclView, WriterView};

/// The body of `PUT /v1/acl/{ns}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetWriters {
    /// Peer ids (`12D3KooW...`) or 64-hex node ids.
    writers: Vec<String>,
}

/// `GET /v1/acl`.
pub(crate) async fn list(State(app): State<App>) -> Result<Json<AclView>, ApiError> {
    Ok(Json(app.node.writer_rules().await?))
}

/// `GET /v1/acl/{ns}`.
pub(crate) async fn get(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
) -> Result<Json<Vec<WriterView>>, ApiError> {
    let ns = namespace(&ns)?;
    let mut view = app.node.writer_rules().await?;
    view.rules.remove(ns.as_str()).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "namespace {ns} has no writer rule: every member may write it"
        ))
    })
}

/// `PUT /v1/acl/{ns}`.
pub(crate) async fn put(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let request: Option<SetWriters> = json_body(&body.map_err(body_error)?)?;
    let request = request.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_body",
            "expected a JSON body {\"writers\": [\"12D3KooW...\"]}",
        )
    })?;
    let writers = request
        .writers
        .iter()
        .map(|w| {
            NodeId::parse(w).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_writer",
                    format!("`{w}` is not a node id (12D3KooW... or 64 hex digits)"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let written = app.node.set_writers(&ns, writers).await?;
    Ok(Json((&written).into()))
}

/// `DELETE /v1/acl/{ns}`.
pub(crate) async fn delete(
    State(app): State<App>,
    PathParams(ns): PathParams<String>,
) -> Result<Json<WriteResponse>, ApiError> {
    let ns = namespace(&ns)?;
    let written = app.node.clear_writers(&ns).await?;
    Ok(Json((&written).into()))
}
