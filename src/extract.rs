//! Request extractors whose rejections use the error envelope.
//!
//! axum's own `Json` rejects with plain-text bodies; [`Json`] here wraps it so malformed
//! JSON, a wrong content type, unknown fields or an oversized body all come back as the
//! documented codes (`INVALID_REQUEST`, `UNSUPPORTED_MEDIA_TYPE`, `CTX_TOO_LARGE`).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// JSON body in, JSON body out, envelope on failure.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(
        request: Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(
                rejection,
                state.config.limits.max_json_body_bytes,
            )),
        }
    }
}

fn json_rejection(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(rejection) if crate::server::body::is_timeout(&rejection) => {
            ApiError::new(ErrorCode::REQUEST_TIMEOUT, rejection.body_text())
        }
        JsonRejection::BytesRejection(rejection)
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::too_large("request body", limit as u64)
        }
        JsonRejection::JsonDataError(error) => ApiError::invalid(error.body_text()),
        JsonRejection::JsonSyntaxError(error) => ApiError::invalid(error.body_text()),
        other => ApiError::invalid(other.body_text()),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query string, envelope on failure.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| ApiError::invalid(rejection.body_text()))
    }
}
