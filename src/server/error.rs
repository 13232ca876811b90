//! The one place where failures become HTTP statuses.
//!
//! Every handler returns [`ApiError`]; its body is always
//! `{"error":{"code":"…","message":"…"}}`, so a client needs one parser for
//! every failure, including the ones axum detects before a handler runs
//! (unknown route, oversized body).

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
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
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
            | ApiError::BadSignature(m)
            | ApiError::BadGateway(m)
            | ApiError::Internal(m) => m.clone(),
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
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidQuery(m) => ApiError::InvalidQuery(m),
            Error::Config(m) => ApiError::BadRequest(m),
            e @ Error::Upstream { .. } => ApiError::BadGateway(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(m) = &self {
            tracing::error!("internal error: {m}");
        }
        let mut response = (self.status(), axum::Json(self.to_json())).into_response();
        let retry_after = match &self {
            ApiError::Busy { retry_after } => Some(*retry_after),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
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
