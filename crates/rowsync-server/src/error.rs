//! The one HTTP error type. It picks the status, carries a stable
//! [`ErrorCode`], and never shows internals (database messages are logged,
//! not returned).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rowsync_core::ChangeError;
use rowsync_proto::{ErrorBody, ErrorCode};

use crate::store::{CannotWrite, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The index of the refused change in a push batch.
    pub change: Option<usize>,
    /// See [`ErrorBody::max_clock_ms`].
    pub max_clock_ms: Option<u64>,
    /// A 401: the answer names the scheme to authenticate with.
    pub authenticate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), change: None, max_clock_ms: None, authenticate: false }
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
        match &err {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the server's database cannot be reached right now; retry later",
                )
            }
            StoreError::CannotWrite(why, detail) => {
                tracing::error!(%detail, "the database takes no writes");
                let what = match why {
                    CannotWrite::DiskFull => "is full (its disk has no room left)",
                    CannotWrite::ReadOnly => "is read-only",
                };
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    format!("the server's database {what}: nothing was applied; retry later"),
                )
            }
            StoreError::SchemaBehind => {
                tracing::error!("{err}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, format!("{err}; retry later"))
            }
            StoreError::SiteReused => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::SiteReused,
                format!(
                    "{err}: this replica file was restored from a backup or copied to another device; \
                     it must take a new device id and send its pending writes again (nothing was applied)"
                ),
            ),
            StoreError::NotOwner { change } => {
                let mut error = ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    format!(
                        "change {change}: this key is taken by a row that is not yours (keys of a private table are \
                         shared by all its users: make new keys random, such as UUIDs); nothing was applied"
                    ),
                );
                error.change = Some(*change);
                error
            }
            StoreError::Forgotten { change } => {
                let mut error = ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::ForgottenRow,
                    format!(
                        "change {change}: this row was deleted on the server, and the delete is older than the \
                         server keeps deletes for (its tombstone retention); these writes may be older than that \
                         delete, so they do not bring the row back. Write the row again to keep it; nothing was \
                         applied"
                    ),
                );
                error.change = Some(*change);
                error
            }
            StoreError::ForeignSite => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this replica's device id is registered to another user: a replica file belongs to the user who \
                 first synced it; make a new replica (rowsync init) for this user",
            ),
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
        let body =
            ErrorBody { code: self.code, message: self.message, change: self.change, max_clock_ms: self.max_clock_ms };
        let mut response = (self.status, Json(body)).into_response();
        if self.authenticate {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
