//! The one HTTP error type. It picks the status, carries a stable
//! [`ErrorCode`], and never shows internals (database messages are logged,
//! not returned).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rowsync_core::ChangeError;
use rowsync_proto::{ErrorBody, ErrorCode};

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The index of the refused change in a push batch.
    pub change: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), change: None }
    }

    pub fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter, message)
    }
}

impl From<ChangeError> for ApiError {
    fn from(err: ChangeError) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.code(), err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the server's database cannot be reached right now; retry later",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { code: self.code, message: self.message, change: self.change })).into_response()
    }
}
