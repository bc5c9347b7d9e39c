//! One error type for the use cases; `http::problem` maps it to problem+json.

use serde::Serialize;
use utoipa::ToSchema;

use crate::ports::store::{LimitError, StoreError};

/// One thing wrong with a request: a JSON Pointer into the body (or the name of a
/// query/path parameter or header) and a reason a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
    /// For a syntax error in a text field (a template): 1-based line and column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            line: None,
            column: None,
        }
    }

    /// The same error, at a line and column of the field's text.
    pub fn at(mut self, line: Option<u32>, column: Option<u32>) -> Self {
        self.line = line;
        self.column = column;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request could not be read (bad JSON, wrong type, bad parameter): 400.
    #[error("the request is malformed")]
    BadRequest(Vec<FieldError>),
    /// The request was read but a value is not acceptable: 422.
    #[error("a value in the request is not acceptable")]
    Invalid(Vec<FieldError>),
    #[error("the resource does not exist")]
    NotFound,
    #[error("{detail}")]
    Conflict {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or a broken invariant: logged with its cause, answered as 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AppError::Invalid(vec![FieldError::new(field, reason)])
    }
    pub fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AppError::BadRequest(vec![FieldError::new(field, reason)])
    }
    pub fn conflict(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        AppError::Conflict {
            errors: vec![FieldError::new(field, detail.clone())],
            detail,
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl From<serde_dynamo::Error> for AppError {
    fn from(e: serde_dynamo::Error) -> Self {
        AppError::Internal(format!("stored item does not decode: {e}"))
    }
}

impl From<LimitError> for AppError {
    fn from(e: LimitError) -> Self {
        AppError::Store(StoreError::Limit(e))
    }
}

pub type AppResult<T> = Result<T, AppError>;
