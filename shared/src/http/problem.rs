//! Errors as `application/problem+json` (RFC 9457): `type`, `title`, `status`,
//! `detail`, and `errors: [{field, reason}]`. Never a 500 for anything a client sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{AppError, FieldError};
use crate::ports::store::{LimitError, StoreError};

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:mailpilot:problem:validation`…).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// What is wrong, field by field (JSON Pointers into the body, or parameter names).
    #[serde(default)]
    pub errors: Vec<ProblemField>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub reason: String,
    /// Where in the field's text (template syntax errors): 1-based line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column (in characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl From<FieldError> for ProblemField {
    fn from(e: FieldError) -> Self {
        Self {
            field: e.field,
            reason: e.reason,
            line: e.line,
            column: e.column,
        }
    }
}

pub fn problem(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: impl Into<String>,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        kind: format!("urn:mailpilot:problem:{slug}"),
        title: title.into(),
        status: status.as_u16(),
        detail: detail.into(),
        errors: errors.into_iter().map(Into::into).collect(),
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        match self {
            AppError::BadRequest(errors) => {
                let detail = summary(&errors, "the request could not be read");
                problem(S::BAD_REQUEST, "bad-request", "Bad request", detail, errors)
            }
            AppError::Invalid(errors) => {
                let detail = summary(&errors, "a value is not acceptable");
                problem(
                    S::UNPROCESSABLE_ENTITY,
                    "validation",
                    "Validation failed",
                    detail,
                    errors,
                )
            }
            AppError::NotFound => problem(
                S::NOT_FOUND,
                "not-found",
                "Not found",
                "the resource does not exist",
                vec![],
            ),
            AppError::Conflict { detail, errors } => {
                problem(S::CONFLICT, "conflict", "Conflict", detail, errors)
            }
            AppError::Unauthorized(detail) => {
                let mut r = problem(
                    S::UNAUTHORIZED,
                    "unauthorized",
                    "Unauthorized",
                    detail,
                    vec![],
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            AppError::Forbidden(detail) => {
                problem(S::FORBIDDEN, "forbidden", "Forbidden", detail, vec![])
            }
            AppError::PayloadTooLarge(detail) => problem(
                S::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                detail,
                vec![],
            ),
            AppError::RateLimited { retry_after_secs } => {
                let mut r = problem(
                    S::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    format!("this API key is over its rate limit; retry in {retry_after_secs} s"),
                    vec![],
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            AppError::IdempotencyMismatch => problem(
                S::UNPROCESSABLE_ENTITY,
                "idempotency-mismatch",
                "Idempotency-Key reused",
                "this Idempotency-Key was first used with a different request",
                vec![FieldError::new(
                    "Idempotency-Key",
                    "was used with another request body",
                )],
            ),
            AppError::IdempotencyInProgress => problem(
                S::CONFLICT,
                "idempotency-in-progress",
                "Request in progress",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                vec![],
            ),
            AppError::Store(e) => store_problem(e),
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                problem(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "an unexpected error occurred",
                    vec![],
                )
            }
        }
    }
}

fn store_problem(e: StoreError) -> Response {
    use StatusCode as S;
    match e {
        StoreError::BadCursor => problem(
            S::BAD_REQUEST,
            "bad-request",
            "Bad request",
            "the cursor is not one this list produced",
            vec![FieldError::new("cursor", "is not valid for this list")],
        ),
        StoreError::Limit(LimitError::ItemTooLarge { size }) => problem(
            S::PAYLOAD_TOO_LARGE,
            "too-large",
            "Payload too large",
            format!("the resource would be {size} bytes; the limit is 400 KB"),
            vec![],
        ),
        StoreError::Throttled => {
            let mut r = problem(
                S::SERVICE_UNAVAILABLE,
                "busy",
                "Busy",
                "the store is busy; retry shortly",
                vec![],
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        e @ StoreError::Unavailable(_) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store unavailable");
            problem(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "Unavailable",
                "the store is unavailable; retry shortly",
                vec![],
            )
        }
        other => {
            tracing::error!(error = %other, "unexpected store error");
            problem(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "an unexpected error occurred",
                vec![],
            )
        }
    }
}

fn summary(errors: &[FieldError], fallback: &str) -> String {
    match errors.first() {
        Some(e) if e.field.is_empty() => e.reason.clone(),
        Some(e) => format!("{} {}", e.field, e.reason),
        None => fallback.into(),
    }
}
