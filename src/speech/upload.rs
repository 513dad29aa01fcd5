//! An audio upload: `multipart/form-data` (the audio in the `file` field, the options
//! as text fields) or the raw body with its `Content-Type` (options in the query
//! string), split from its bytes by [`parse_form`]. The HTTP boundary
//! (`http::upload`) reads the body against the upload limit before anything else.

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::{ApiError, ApiResult};
use crate::speech::intake::UploadReservation;

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

/// An upload's parts, read from its bytes.
#[derive(Debug)]
pub struct Form {
    pub audio: Bytes,
    pub media_type: Option<String>,
    pub fields: HashMap<String, String>,
}

/// Text fields of a form (options) are short; a longer one is not an option.
const MAX_FIELD_BYTES: u64 = 64 << 10;

/// Splits a read body into the audio, its media type and the options: a
/// `multipart/form-data` body's `file` (or `audio`) part and text fields, or the whole
/// body with `content_type`; options from the query string, then the form. Pure (no
/// I/O beyond the bytes given); fuzzed by `fuzz/` `form`.
pub async fn parse_form(
    bytes: Bytes,
    content_type: Option<String>,
    query: Option<&str>,
) -> ApiResult<Form> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for (name, value) in query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        add_field(&mut fields, name, value)?;
    }
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
        return Ok(Form {
            audio: bytes,
            media_type: content_type,
            fields,
        });
    };
    let boundary = boundary.map_err(|e| ApiError::invalid(format!("multipart: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut audio = None;
    let bad = |e: multer::Error| ApiError::invalid(format!("multipart: {e}"));
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" || name == "audio" {
            let media_type = field.content_type().map(|m| m.to_string());
            audio = Some((field.bytes().await.map_err(bad)?, media_type));
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                value.extend_from_slice(&chunk);
                if value.len() as u64 > MAX_FIELD_BYTES {
                    return Err(ApiError::invalid(format!(
                        "form field `{name}` is over {MAX_FIELD_BYTES} bytes"
                    ))
                    .with_field("field", name));
                }
            }
            let value = String::from_utf8(value).map_err(|_| {
                ApiError::invalid(format!("form field `{name}` is not UTF-8"))
                    .with_field("field", name.clone())
            })?;
            add_field(&mut fields, name, value)?;
        }
    }
    let (audio, media_type) = audio.ok_or_else(|| {
        ApiError::invalid("multipart body has no `file` part").with_field("field", "file")
    })?;
    if audio.is_empty() {
        return Err(ApiError::invalid("the `file` part is empty").with_field("field", "file"));
    }
    Ok(Form {
        audio,
        media_type,
        fields,
    })
}

/// Options a form may carry (every known one several times over).
const MAX_FIELDS: usize = 256;

/// A list field (`name[]`, as OpenAI's `timestamp_granularities[]`) collects its values
/// comma-separated; any other field keeps its last value. Fields are bounded in number
/// and size, so a body of tiny fields does not grow into a map several times its size.
fn add_field(fields: &mut HashMap<String, String>, name: String, value: String) -> ApiResult<()> {
    let full = fields.len() >= MAX_FIELDS;
    match fields.get_mut(&name) {
        Some(existing) if name.ends_with("[]") => {
            if (existing.len() + value.len()) as u64 >= MAX_FIELD_BYTES {
                return Err(ApiError::invalid(format!(
                    "form field `{name}` is over {MAX_FIELD_BYTES} bytes"
                ))
                .with_field("field", name));
            }
            existing.push(',');
            existing.push_str(&value);
        }
        Some(existing) => *existing = value,
        None if full => {
            return Err(ApiError::invalid(format!(
                "at most {MAX_FIELDS} form fields or query parameters"
            )));
        }
        None => {
            fields.insert(name, value);
        }
    }
    Ok(())
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

    fn multipart(parts: &[(&str, &[u8])]) -> Bytes {
        let mut body = Vec::new();
        for (name, value) in parts {
            body.extend_from_slice(
                format!("--b\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--b--\r\n");
        Bytes::from(body)
    }

    async fn parse(body: Bytes, query: Option<&str>) -> ApiResult<Form> {
        parse_form(body, Some("multipart/form-data; boundary=b".into()), query).await
    }

    #[tokio::test]
    async fn forms_give_the_file_and_options_query_first() {
        let body = multipart(&[
            ("language", b"de"),
            ("timestamp_granularities[]", b"word"),
            ("timestamp_granularities[]", b"segment"),
            ("file", b"RIFF...."),
        ]);
        let form = parse(body, Some("language=en&task=transcribe"))
            .await
            .unwrap();
        assert_eq!(&form.audio[..], b"RIFF....");
        assert_eq!(form.fields["language"], "de");
        assert_eq!(form.fields["task"], "transcribe");
        assert_eq!(form.fields["timestamp_granularities[]"], "word,segment");
        let raw = parse_form(Bytes::from_static(b"abc"), Some("audio/wav".into()), None)
            .await
            .unwrap();
        assert_eq!(raw.media_type.as_deref(), Some("audio/wav"));
    }

    #[tokio::test]
    async fn bad_forms_are_invalid_requests_not_unbounded_maps() {
        let invalid = |result: ApiResult<Form>| {
            let error = result.unwrap_err();
            assert_eq!(
                error.code,
                crate::error::ErrorCode::INVALID_REQUEST,
                "{error:?}"
            );
            error.message
        };
        let long = vec![b'x'; 70_000];
        let message = invalid(parse(multipart(&[("prompt", &long), ("file", b"a")]), None).await);
        assert!(message.contains("over 65536 bytes"), "{message}");
        let many: Vec<(String, Vec<u8>)> =
            (0..300).map(|i| (format!("f{i}"), b"1".to_vec())).collect();
        let parts: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .chain([("file", b"a".as_slice())])
            .collect();
        let message = invalid(parse(multipart(&parts), None).await);
        assert!(message.contains("at most 256"), "{message}");
        let list: Vec<(&str, &[u8])> = std::iter::repeat_n(("g[]", &long[..40_000]), 2)
            .chain([("file", b"a".as_slice())])
            .collect();
        invalid(parse(multipart(&list), None).await);
        invalid(parse(multipart(&[("note", b"\xff\xfe"), ("file", b"a")]), None).await);
        invalid(parse(multipart(&[("language", b"en")]), None).await);
        invalid(parse(multipart(&[("file", b"")]), None).await);
        invalid(parse(Bytes::from_static(b"garbage"), None).await);
        invalid(parse_form(Bytes::new(), Some("audio/wav".into()), None).await);
    }

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
