//! Reading an audio upload: `multipart/form-data` (the audio in the `file` field, the
//! options as text fields) or the raw body with its `Content-Type` (options in the
//! query string). The body is read against the upload limit before anything else.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::services::intake::UploadReservation;

pub struct Upload {
    pub audio: Bytes,
    /// The upload's share of the in-memory budget, held until the request ends.
    pub reservation: UploadReservation,
    /// The declared media type of the audio (the part's or the body's).
    pub media_type: Option<String>,
    /// Options: form fields, else query parameters.
    pub fields: HashMap<String, String>,
}

impl Upload {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Reads an upload against `[limits] max_upload_bytes`, after reserving its size from
/// the in-memory upload budget (503 with `Retry-After` when that is taken).
pub async fn read(request: Request, state: &AppState) -> ApiResult<Upload> {
    let limit = state.config.limits.max_upload_bytes;
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
    let reservation = state
        .intake
        .reserve_upload(declared.map_or(limit, |n| n as usize))?;
    read_body(request, limit, reservation).await
}

async fn read_body(
    request: Request,
    limit: usize,
    reservation: UploadReservation,
) -> ApiResult<Upload> {
    let (parts, body) = request.into_parts();
    let mut fields: HashMap<String, String> = HashMap::new();
    for (name, value) in parts
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        add_field(&mut fields, name, value);
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| crate::server::body::read_error(e, "upload", limit))?;
    let Some(boundary) = content_type
        .as_deref()
        .filter(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"))
        .map(multer::parse_boundary)
    else {
        if bytes.is_empty() {
            return Err(
                ApiError::invalid("the body is empty: send the audio").with_field("field", "file")
            );
        }
        return Ok(Upload {
            audio: bytes,
            reservation,
            media_type: content_type,
            fields,
        });
    };
    let boundary = boundary.map_err(|e| ApiError::invalid(format!("multipart: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut audio = None;
    let bad = |e: multer::Error| ApiError::invalid(format!("multipart: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" || name == "audio" {
            let media_type = field.content_type().map(|m| m.to_string());
            audio = Some((field.bytes().await.map_err(bad)?, media_type));
        } else {
            let value = field.text().await.map_err(bad)?;
            add_field(&mut fields, name, value);
        }
    }
    let (audio, media_type) = audio.ok_or_else(|| {
        ApiError::invalid("multipart body has no `file` part").with_field("field", "file")
    })?;
    if audio.is_empty() {
        return Err(ApiError::invalid("the `file` part is empty").with_field("field", "file"));
    }
    Ok(Upload {
        audio,
        reservation,
        media_type,
        fields,
    })
}

/// A list field (`name[]`, as OpenAI's `timestamp_granularities[]`) collects its values
/// comma-separated; any other field keeps its last value.
fn add_field(fields: &mut HashMap<String, String>, name: String, value: String) {
    match fields.get_mut(&name) {
        Some(existing) if name.ends_with("[]") => {
            existing.push(',');
            existing.push_str(&value);
        }
        _ => {
            fields.insert(name, value);
        }
    }
}

/// Raw PCM needs its shape declared: `audio/pcm;rate=16000;channels=1` (also
/// `audio/l16`). Other types are recognised from the bytes themselves.
pub fn raw_pcm(media_type: Option<&str>) -> Option<media::RawPcm> {
    let media_type = media_type?.to_ascii_lowercase();
    let mut parts = media_type.split(';').map(str::trim);
    let essence = parts.next()?;
    if essence != "audio/pcm" && essence != "audio/l16" {
        return None;
    }
    let mut shape = media::RawPcm {
        sample_rate: 16_000,
        channels: 1,
    };
    for parameter in parts {
        match parameter.split_once('=') {
            Some(("rate", value)) => shape.sample_rate = value.parse().ok()?,
            Some(("channels", value)) => shape.channels = value.parse().ok()?,
            _ => {}
        }
    }
    Some(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_pcm_shapes_come_from_the_media_type() {
        let shape = raw_pcm(Some("audio/pcm;rate=8000;channels=2")).unwrap();
        assert_eq!((shape.sample_rate, shape.channels), (8000, 2));
        assert_eq!(raw_pcm(Some("audio/L16")).unwrap().sample_rate, 16_000);
        assert!(raw_pcm(Some("audio/wav")).is_none());
        assert!(raw_pcm(None).is_none());
        assert!(raw_pcm(Some("audio/pcm;rate=fast")).is_none());
    }
}
