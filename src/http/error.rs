//! The one error type of the HTTP API and how each failure maps to a status.
//!
//! Every error body is JSON: `{"error": "<message>", "code": "<machine code>"}`
//! plus, for some codes, extra fields (`current_version` on a CAS conflict,
//! `current_revision` on a compacted watch revision). User mistakes are 4xx;
//! only a failure of the node itself is 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::core::{CommandError, IdError, SnapshotRequired};
use crate::node::NodeError;

/// A request that failed, with the status and JSON body to answer with.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
}

impl ApiError {
    /// An error with a status, a machine-readable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: nothing there.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Add a field to the JSON body.
    pub fn with(mut self, field: &str, value: Value) -> Self {
        self.extra.insert(field.to_string(), value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The 410 answer to a watch that resumes from a compacted revision.
    pub fn snapshot_required(s: &SnapshotRequired) -> Self {
        Self::new(StatusCode::GONE, "snapshot_required", s.to_string())
            .with("current_revision", json!(s.current))
            .with("oldest_revision", json!(s.oldest))
            .with("requested_revision", json!(s.requested))
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Command(c) => c.into(),
            NodeError::SnapshotRequired(s) => ApiError::snapshot_required(&s),
            NodeError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", "node stopped"),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::Conflict { current } => ApiError::new(StatusCode::CONFLICT, "conflict", message)
                .with(
                    "current_version",
                    current.map_or(Value::Null, |v| json!(v.to_string())),
                ),
            CommandError::NotFound => ApiError::not_found(message),
            CommandError::Invalid(_) => ApiError::bad_request("invalid", message),
            CommandError::TooLarge { size, max } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
                    .with("size", json!(size))
                    .with("max", json!(max))
            }
            CommandError::NotOwner(_) => ApiError::new(StatusCode::FORBIDDEN, "not_owner", message),
            CommandError::Left => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "left", message),
            CommandError::NotDurable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_durable", message)
            }
            // Variants added later: a failure of the node until mapped.
            #[allow(unreachable_patterns)]
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        let code = match &e {
            IdError::Length { kind, .. } | IdError::Invalid { kind, .. } => match *kind {
                "namespace" => "invalid_namespace",
                "key" => "invalid_key",
                "service name" => "invalid_service",
                "instance id" => "invalid_instance",
                _ => "invalid",
            },
            #[allow(unreachable_patterns)]
            _ => "invalid",
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.message));
        body.insert("code".into(), Value::String(self.code.into()));
        body.extend(self.extra);
        (self.status, Json(Value::Object(body))).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
