//! The one place where failures become HTTP statuses.
//!
//! Every handler returns [`ApiError`]; its body is always
//! `{"error":{"code":"…","message":"…"}}`, so a client needs one parser for
//! every failure, including the ones axum detects before a handler runs
//! (unknown route, oversized body).
//!
//! The `From<Error>` conversion names every library error variant, with no
//! catch-all arm: a new variant does not compile until someone decides
//! whose fault it is and what status it gets. Only server faults are
//! logged as errors ([`ApiError::log`]); a client's mistake shows in the
//! request's log line, with its status, and nowhere else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// A failed request: what the client did wrong, or what we could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The body is not JSON, or not the JSON this route takes.
    BadRequest(String),
    /// The question or query cannot be answered as given (empty, too long).
    InvalidQuery(String),
    /// The body is larger than the limit (bytes).
    TooLarge(usize),
    /// No such route.
    NotFound(String),
    /// No such knowledge base (the message lists the known ones).
    UnknownKb(String),
    /// The API key is valid but not for this knowledge base.
    Forbidden(String),
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// No or a wrong API key.
    Unauthorized,
    /// A Slack request whose signature does not verify.
    BadSignature(String),
    /// Every generation worker is busy and the queue is full.
    Busy {
        /// Seconds after which a retry is likely to be admitted.
        retry_after: u64,
    },
    /// The models are still loading, or the server is shutting down.
    Unavailable(String),
    /// The index cannot be used (missing, foreign, damaged, locked by
    /// `kbqa index`, or its corpus is unusable); an operator must act.
    IndexUnavailable(String),
    /// The shared database of the `postgres` index backend is unreachable:
    /// searches resume by themselves when it is back.
    DatabaseUnavailable(String),
    /// A model is not available (unknown, not downloaded, damaged).
    ModelUnavailable(String),
    /// The answer did not finish within the deadline.
    Timeout(u64),
    /// The model server behind us failed or is unreachable.
    BadGateway(String),
    /// Our fault.
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidQuery(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::UnknownKb(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::IndexUnavailable(_)
            | ApiError::ModelUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownKb(_) => "unknown_kb",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::IndexUnavailable(_) => "index_unavailable",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::ModelUnavailable(_) => "model_unavailable",
            ApiError::Timeout(_) => "deadline_exceeded",
            ApiError::BadGateway(_) => "upstream_error",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A sentence for a person.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::InvalidQuery(m)
            | ApiError::Unavailable(m)
            | ApiError::IndexUnavailable(m)
            | ApiError::ModelUnavailable(m)
            | ApiError::BadSignature(m)
            | ApiError::BadGateway(m)
            | ApiError::UnknownKb(m)
            | ApiError::Forbidden(m)
            | ApiError::Internal(m) => m.clone(),
            // Where the database is stays in the log.
            ApiError::DatabaseUnavailable(_) => {
                "the index's database cannot be reached; retry later".into()
            }
            ApiError::NotFound(path) => format!("no route {path}"),
            ApiError::TooLarge(limit) => {
                format!("the request body is larger than {limit} bytes")
            }
            ApiError::MethodNotAllowed => "this route does not take that method".into(),
            ApiError::Unauthorized => {
                "an API key is required: send `Authorization: Bearer <key>`".into()
            }
            ApiError::Busy { .. } => {
                "every answer worker is busy and the queue is full; retry later".into()
            }
            ApiError::Timeout(secs) => format!("the answer took longer than {secs} s"),
        }
    }

    /// The JSON body, also sent as an SSE `error` event.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Detail {
                code: self.code(),
                message: self.message(),
            },
        })
        .unwrap_or_default()
    }

    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Busy { retry_after } => Some(*retry_after),
            // Loading models or draining: soon.
            ApiError::Unavailable(_) => Some(1),
            // The pool reconnects on the next request once it is back.
            ApiError::DatabaseUnavailable(_) => Some(2),
            // Someone must rebuild the index or fetch a model: not soon.
            ApiError::IndexUnavailable(_) | ApiError::ModelUnavailable(_) => Some(30),
            ApiError::BadRequest(_)
            | ApiError::InvalidQuery(_)
            | ApiError::TooLarge(_)
            | ApiError::NotFound(_)
            | ApiError::UnknownKb(_)
            | ApiError::Forbidden(_)
            | ApiError::MethodNotAllowed
            | ApiError::Unauthorized
            | ApiError::BadSignature(_)
            | ApiError::Timeout(_)
            | ApiError::BadGateway(_)
            | ApiError::Internal(_) => None,
        }
    }

    /// Logs a server fault as an error, an overloaded server as a warning.
    /// The client's mistakes (4xx) and the expected 503s (still loading,
    /// shutting down) are not logged here: the request log line already
    /// carries their status.
    pub fn log(&self) {
        let (code, message) = (self.code(), self.message());
        match self {
            ApiError::Internal(_)
            | ApiError::BadGateway(_)
            | ApiError::IndexUnavailable(_)
            | ApiError::ModelUnavailable(_) => tracing::error!(code, "{message}"),
            ApiError::Timeout(_) => tracing::warn!(code, "{message}"),
            ApiError::DatabaseUnavailable(detail) => tracing::warn!(code, "{detail}"),
            ApiError::BadRequest(_)
            | ApiError::InvalidQuery(_)
            | ApiError::TooLarge(_)
            | ApiError::NotFound(_)
            | ApiError::UnknownKb(_)
            | ApiError::Forbidden(_)
            | ApiError::MethodNotAllowed
            | ApiError::Unauthorized
            | ApiError::BadSignature(_)
            | ApiError::Busy { .. }
            | ApiError::Unavailable(_) => {}
        }
    }
}

/// Whose fault, and which status: one arm per library error, no catch-all.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            // The caller's: what was asked cannot be answered as given.
            Error::InvalidQuery(m) => ApiError::InvalidQuery(m),
            e @ Error::InvalidOption(_) => ApiError::BadRequest(e.to_string()),
            e @ Error::UnknownKb { .. } => ApiError::UnknownKb(e.to_string()),
            // The index cannot be used until an operator acts.
            e @ (Error::NoIndex(_)
            | Error::IncompatibleIndex { .. }
            | Error::CorruptIndex { .. }
            | Error::IndexLocked(_)
            | Error::CorpusNotFound(_)
            | Error::EmptyCorpus(_)
            | Error::BadFiles(_)) => ApiError::IndexUnavailable(e.to_string()),
            // A model is missing or unusable.
            e @ (Error::UnknownModel { .. }
            | Error::ModelFetch { .. }
            | Error::ModelChecksum { .. }
            | Error::ModelFormat { .. }) => ApiError::ModelUnavailable(e.to_string()),
            // The model server behind us.
            e @ Error::Upstream { .. } => ApiError::BadGateway(e.to_string()),
            // The shared index's database: back by itself, soon.
            e @ Error::DatabaseUnreachable { .. } => ApiError::DatabaseUnavailable(e.to_string()),
            // Ours, or an operator's (permissions, a foreign schema).
            e @ Error::Database { .. } => ApiError::Internal(e.to_string()),
            // Ours.
            e @ (Error::Config(_)
            | Error::Model(_)
            | Error::Io { .. }
            | Error::Tantivy(_)
            | Error::EvalSet { .. }) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status(), axum::Json(self.to_json())).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized = &self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
