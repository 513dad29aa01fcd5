//! Reading an upload body at the HTTP boundary: its declared size against `[limits]
//! max_upload_bytes` and the in-memory budget first, then the body (idle and total
//! deadlines of `server::body`), then its parts (`speech::upload::parse_form`).

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::error::{ApiError, ApiResult};
use crate::speech::intake::{AudioIntake, UploadReservation};
use crate::speech::upload::{self, Upload};

/// Reads an upload against `[limits] max_upload_bytes`, after reserving its size from
/// the in-memory upload budget (503 with `Retry-After` when that is taken).
pub async fn read(request: Request, intake: &AudioIntake) -> ApiResult<Upload> {
    let limit = intake.max_upload_bytes();
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limit as u64
    {
        return Err(ApiError::too_large("upload", limit as u64));
    }
    let reservation = intake.reserve_upload(declared.map_or(limit, |n| n as usize))?;
    read_body(request, limit, reservation).await
}

async fn read_body(
    request: Request,
    limit: usize,
    reservation: UploadReservation,
) -> ApiResult<Upload> {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| crate::server::body::read_error(e, "upload", limit))?;
    let form = upload::parse_form(bytes, content_type, parts.uri.query()).await?;
    Ok(Upload {
        audio: form.audio,
        reservation,
        media_type: form.media_type,
        fields: form.fields,
    })
}
