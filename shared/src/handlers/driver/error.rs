//! What a route answers when it does not succeed: a refusal of the request (4xx, its
//! message for the caller) or a failure of the service (503 when retrying may cure it,
//! else 500). Either way the body is `{"message": ...}`.

use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::response::{IntoResponse, Response};

use super::HttpResponse;
use crate::error::Error;
use crate::request::{MAX_BODY_BYTES, Rejection};
use crate::store::StoreError;

/// Why a route did not answer with success.
#[derive(Debug)]
pub(super) enum ApiError {
    /// The request is refused: its status and message go to the caller.
    Refused(Rejection),
    /// The service failed. A failure of the store is 503 (retry later), never a request
    /// left half-started: the request exists only once `request.json` is written, after
    /// everything the functions need.
    Failed(Error),
}

impl ApiError {
    /// A refusal with `status` and `message`.
    pub(super) fn refuse(status: u16, message: impl Into<String>) -> Self {
        ApiError::Refused(Rejection {
            status,
            message: message.into(),
        })
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Refused(r)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Failed(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Failed(e.into())
    }
}

/// A body that could not be read: over the limit (413), or broken off (400).
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        match r {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::refuse(
                    413,
                    format!(
                        "the request body is over {MAX_BODY_BYTES} bytes; the limit is {MAX_BODY_BYTES}"
                    ),
                )
            }
            other => {
                // The rejection's own text is axum's; its source is what went wrong.
                let cause = std::error::Error::source(&other)
                    .map_or_else(|| other.to_string(), ToString::to_string);
                ApiError::refuse(400, format!("cannot read the request body: {cause}"))
            }
        }
    }
}

impl From<ApiError> for HttpResponse {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Refused(r) => HttpResponse::error(r.status, r.message),
            ApiError::Failed(e) => {
                tracing::error!(error = %e, "request failed");
                if e.is_retryable() {
                    HttpResponse::error(503, format!("the store is busy, try again: {e}"))
                } else {
                    HttpResponse::error(500, format!("internal error: {e}"))
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        HttpResponse::from(self).into_response()
    }
}
