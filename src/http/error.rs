//! The one error type of the HTTP API and how each failure maps to a status.
//!
//! Every error body is JSON: `{"error": "<message>", "code": "<machine code>"}`
//! plus, for some codes, extra fields (`current_version` on a CAS conflict,
//! `current_revision` on a compacted watch revision). User mistakes are 4xx;
//! only a failure of the node itself is 5xx.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api::ErrorBody;
use crate::core::{CommandError, IdError, SnapshotRequired};
use crate::node::NodeError;

/// A request that failed, with the status and JSON body ([`ErrorBody`]) to
/// answer with.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    /// Boxed: errors travel in every handler's `Result`.
    body: Box<ErrorBody>,
}

impl ApiError {
    /// An error with a status, a machine-readable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: Box::new(ErrorBody::new(code, message)),
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

    /// 429: over the per-client rate limit.
    pub fn rate_limited(limit_per_sec: u32) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address",
        );
        e.body.limit_per_sec = Some(limit_per_sec);
        e
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.body.code
    }

    /// The JSON body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }

    /// The 410 answer to a watch that resumes from a compacted revision.
    pub fn snapshot_required(s: &SnapshotRequired) -> Self {
        let mut e = Self::new(StatusCode::GONE, "snapshot_required", s.to_string());
        e.body.current_revision = Some(s.current);
        e.body.oldest_revision = Some(s.oldest);
        e.body.requested_revision = Some(s.requested);
        e
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
            CommandError::Conflict { current } => {
                let mut e = ApiError::new(StatusCode::CONFLICT, "conflict", message);
                e.body.current_version = Some(current);
                e
            }
            CommandError::NotFound => ApiError::not_found(message),
            CommandError::Invalid(_) => ApiError::bad_request("invalid", message),
            CommandError::TooLarge { size, max } => {
                let mut e = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message);
                e.body.size = Some(u64::try_from(size).unwrap_or(u64::MAX));
                e.body.max = Some(u64::try_from(max).unwrap_or(u64::MAX));
                e
            }
            CommandError::NotOwner(_) => ApiError::new(StatusCode::FORBIDDEN, "not_owner", message),
            CommandError::NotPermitted(_) => ApiError::new(StatusCode::FORBIDDEN, "not_permitted", message),
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
        (self.status, Json(*self.body)).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.body.code,
            self.body.error
        )
    }
}

impl std::error::Error for ApiError {}
