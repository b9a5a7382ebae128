//! What a route answers when it does not succeed: a refusal of the request (4xx, its
//! message for the caller), a caller over its quota (429 with `Retry-After`), or a
//! failure of the service (503 when retrying may cure it, else 500). Either way the body
//! is `{"message": ...}`. A failure's detail (a store's error names buckets, roles and
//! accounts) goes to the log only, under a correlation id the answer gives.

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
    /// The caller may not start more work now: 429, and when to try again.
    TooMany {
        /// What the caller is told.
        message: String,
        /// Seconds, for `Retry-After`.
        retry_after: u64,
    },
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
            ApiError::TooMany {
                message,
                retry_after,
            } => HttpResponse {
                retry_after: Some(retry_after),
                ..HttpResponse::error(429, message)
            },
            ApiError::Failed(e) => {
                let id = correlation_id();
                tracing::error!(correlation_id = %id, error = %e, "request failed");
                if e.is_retryable() {
                    HttpResponse::error(
                        503,
                        format!("the service is busy, try again (correlation id {id})"),
                    )
                } else {
                    HttpResponse::error(500, format!("internal error (correlation id {id})"))
                }
            }
        }
    }
}

/// A fresh id that ties an answer to its log line.
pub fn correlation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        HttpResponse::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_internal_error_and_a_correlation_id_not_its_detail() {
        let secret = "AccessDenied: arn:aws:iam::123456789012:role/x";
        for (error, status) in [
            (Error::Internal(secret.into()), 500),
            (
                Error::Store(StoreError::Transient {
                    op: "GET",
                    key: "requests/x".into(),
                    message: secret.into(),
                }),
                503,
            ),
        ] {
            let answer = HttpResponse::from(ApiError::Failed(error));
            assert_eq!(answer.status, status);
            let message = answer.body["message"].as_str().unwrap();
            assert!(!message.contains("123456789012"), "{message}");
            assert!(message.contains("correlation id "), "{message}");
        }
    }
}
