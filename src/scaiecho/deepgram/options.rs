//! Deepgram's query parameters (`/v1/listen?model=nova-3&encoding=linear16&...`), read
//! into ScaiEcho's stream and request options. Pure.
//!
//! Taken: `encoding` (`linear16`, `mulaw`, `alaw`, `opus`/`ogg-opus`; absent: a container
//! told by its bytes), `sample_rate`, `channels` (mixed down), `language` (`en-US` is
//! `en`; `multi` detects), `interim_results`, `punctuate`, `smart_format`, `diarize` (and
//! `diarize_model`), `endpointing` (ms, or `false`), `utterance_end_ms`, `vad_events`,
//! `utterances` (files). `model` and every other parameter (`keywords`, `numerals`,
//! `tag`, ...) are accepted and change nothing: Deepgram's model names mean nothing
//! here. Refused, because answering them wrongly would be worse: `callback` (no async
//! delivery), `multichannel=true` (one transcript per channel), unknown encodings.

use std::collections::HashMap;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Shortest and longest `endpointing` honoured (the VAD's frames are 32 ms).
const ENDPOINTING_MS: std::ops::RangeInclusive<u32> = 64..=5_000;

/// How an utterance ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpointing {
    /// The endpointer's default silence.
    Default,
    /// This much silence.
    Ms(u32),
    /// Only `Finalize`, the end of the stream, or the longest utterance end one.
    Off,
}

/// The options of one `/v1/listen` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// The stream's media type in ScaiEcho's terms.
    pub media_type: String,
    pub channels: u16,
    /// `None`: detected (`language=multi`).
    pub language: Option<String>,
    pub interim_results: bool,
    /// Transcripts keep Whisper's punctuation and case (`punctuate` or `smart_format`);
    /// otherwise they are lowercase words, as Deepgram's are.
    pub punctuate: bool,
    pub diarize: bool,
    pub endpointing: Endpointing,
    /// `UtteranceEnd` messages after each utterance (any value turns them on).
    pub utterance_end_ms: Option<u32>,
    /// `SpeechStarted` messages.
    pub vad_events: bool,
    /// Files: the `utterances` list.
    pub utterances: bool,
}

impl Default for Listen {
    /// Deepgram's defaults: a container told by its bytes, English, finals only.
    fn default() -> Self {
        Listen {
            media_type: "application/octet-stream".to_owned(),
            channels: 1,
            language: Some("en".to_owned()),
            interim_results: false,
            punctuate: false,
            diarize: false,
            endpointing: Endpointing::Default,
            utterance_end_ms: None,
            vad_events: false,
            utterances: false,
        }
    }
}

impl Listen {
    /// The parameters of a query string (repeated keys: the last one counts).
    pub fn from_query(query: &str) -> ApiResult<Listen> {
        let pairs: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Listen::from_pairs(&pairs)
    }

    pub fn from_pairs(pairs: &HashMap<String, String>) -> ApiResult<Listen> {
        let get = |name: &str| pairs.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let flag = |name: &str| -> ApiResult<bool> {
            match get(name).map(str::to_ascii_lowercase).as_deref() {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(other) => Err(invalid(
                    name,
                    format!("`{name}` must be true or false, not `{other}`"),
                )),
            }
        };
        let number = |name: &str| -> ApiResult<Option<u32>> {
            get(name)
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        invalid(name, format!("`{name}` must be a whole number, not `{v}`"))
                    })
                })
                .transpose()
        };
        if get("callback").is_some() {
            return Err(invalid(
                "callback",
                "`callback` is not supported: results come back on this request".into(),
            ));
        }
        if flag("multichannel")? {
            return Err(invalid(
                "multichannel",
                "`multichannel` is not supported: channels are mixed into one transcript".into(),
            ));
        }
        let channels = number("channels")?.unwrap_or(1);
        let channels = u16::try_from(channels)
            .ok()
            .filter(|c| (1..=8).contains(c))
            .ok_or_else(|| invalid("channels", format!("`channels` {channels} is not 1 to 8")))?;
        let sample_rate = number("sample_rate")?;
        let media_type = media_type(get("encoding"), sample_rate, channels)?;
        let language = match get("language").map(str::to_ascii_lowercase).as_deref() {
            // Deepgram's default.
            None => Some("en".to_owned()),
            Some("multi") => None,
            Some(tag) => {
                let primary = tag.split(['-', '_']).next().unwrap_or_default();
                if !(2..=3).contains(&primary.len())
                    || !primary.bytes().all(|b| b.is_ascii_alphabetic())
                {
                    return Err(invalid(
                        "language",
                        format!("`{tag}` is not a language tag"),
                    ));
                }
                Some(primary.to_owned())
            }
        };
        let endpointing = match get("endpointing").map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") => Endpointing::Default,
            Some("false") => Endpointing::Off,
            Some(value) => match value.parse::<u32>() {
                Ok(ms) => Endpointing::Ms(ms.clamp(*ENDPOINTING_MS.start(), *ENDPOINTING_MS.end())),
                Err(_) => {
                    return Err(invalid(
                        "endpointing",
                        format!("`endpointing` must be milliseconds or false, not `{value}`"),
                    ));
                }
            },
        };
        Ok(Listen {
            media_type,
            channels,
            language,
            interim_results: flag("interim_results")?,
            punctuate: flag("punctuate")? || flag("smart_format")?,
            diarize: flag("diarize")? || get("diarize_model").is_some(),
            endpointing,
            utterance_end_ms: number("utterance_end_ms")?,
            vad_events: flag("vad_events")?,
            utterances: flag("utterances")?,
        })
    }

    /// The stream options these give, as a ScaiEcho `open` would.
    pub fn open(&self) -> ApiResult<crate::scaiecho::stream::protocol::Open> {
        let mut open = serde_json::json!({
            "type": "open",
            "media_type": self.media_type,
            "diarize": self.diarize,
            "timestamps": "word",
            // Interim results this often while someone speaks.
            "chunk_seconds": 1.0,
            // `SpeechStarted` when the VAD hears speech, not with the first transcript.
            "speech_events": self.vad_events,
        });
        if let Some(language) = &self.language {
            open["language"] = language.clone().into();
        }
        let mut open = crate::scaiecho::stream::protocol::parse_open(&open.to_string())?;
        open.silence_ms = match self.endpointing {
            Endpointing::Default => None,
            Endpointing::Ms(ms) => Some(ms),
            // As long as the longest utterance: only `Finalize` or the end cut sooner.
            Endpointing::Off => Some(engines::endpoint::EndpointParams::default().max_utterance_ms),
        };
        Ok(open)
    }

    /// The request options for a file, as `/transcribe` would take them.
    pub fn request(&self) -> crate::scaiecho::Options {
        crate::scaiecho::Options {
            language: self.language.clone(),
            diarize: self.diarize,
            timestamps: crate::scaiecho::Timestamps::Word,
            response_format: crate::scaiecho::format::ResponseFormat::VerboseJson,
            backend_preference: None,
            run_async: false,
            model: None,
        }
    }
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::invalid(message).with_field("field", field)
}

/// Deepgram's `encoding` as a ScaiEcho media type.
fn media_type(
    encoding: Option<&str>,
    sample_rate: Option<u32>,
    channels: u16,
) -> ApiResult<String> {
    let rate = |name: &str| {
        sample_rate.ok_or_else(|| {
            invalid(
                "sample_rate",
                format!("`encoding={name}` needs `sample_rate`"),
            )
        })
    };
    match encoding.map(str::to_ascii_lowercase).as_deref() {
        None => Ok("application/octet-stream".to_owned()),
        Some("linear16") => Ok(format!(
            "audio/pcm;rate={};channels={channels}",
            rate("linear16")?
        )),
        Some("mulaw") => Ok(format!(
            "audio/pcmu;rate={};channels={channels}",
            rate("mulaw")?
        )),
        Some("alaw") => Ok(format!(
            "audio/pcma;rate={};channels={channels}",
            rate("alaw")?
        )),
        Some("opus" | "ogg-opus") => Ok("audio/ogg;codecs=opus".to_owned()),
        Some(other) => Err(ApiError::new(
            ErrorCode::AUDIO_FORMAT_UNSUPPORTED,
            format!(
                "encoding `{other}` is not supported (linear16, mulaw, alaw, opus, or none for \
                 WAV, Ogg, WebM and MP3 told by their bytes)"
            ),
        )
        .with_field("field", "encoding")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(query: &str) -> ApiResult<Listen> {
        Listen::from_query(query)
    }

    #[test]
    fn a_deepgram_sdk_query_reads_into_stream_options() {
        let options = listen(
            "model=nova-3&encoding=linear16&sample_rate=16000&channels=1&language=en-US\
             &interim_results=true&punctuate=true&diarize=true&endpointing=300\
             &utterance_end_ms=1000&vad_events=true&smart_format=true&keywords=scai:2",
        )
        .unwrap();
        assert_eq!(options.media_type, "audio/pcm;rate=16000;channels=1");
        assert_eq!(options.language.as_deref(), Some("en"));
        assert!(options.interim_results && options.punctuate && options.diarize);
        assert_eq!(options.endpointing, Endpointing::Ms(300));
        assert_eq!(options.utterance_end_ms, Some(1000));
        let open = options.open().unwrap();
        assert_eq!(open.silence_ms, Some(300));
        assert!(open.words && open.diarize);
        assert_eq!(open.language.as_deref(), Some("en"));
    }

    #[test]
    fn defaults_are_deepgrams() {
        let options = listen("").unwrap();
        assert_eq!(options, Listen::default());
        assert_eq!(options.media_type, "application/octet-stream");
        assert_eq!(options.language.as_deref(), Some("en"));
        assert!(!options.interim_results && !options.punctuate && !options.diarize);
        assert_eq!(options.endpointing, Endpointing::Default);
        assert_eq!(listen("language=multi").unwrap().language, None);
        assert_eq!(
            listen("encoding=mulaw&sample_rate=8000")
                .unwrap()
                .media_type,
            "audio/pcmu;rate=8000;channels=1"
        );
        assert_eq!(
            listen("endpointing=false")
                .unwrap()
                .open()
                .unwrap()
                .silence_ms,
            Some(26_000)
        );
        assert_eq!(
            listen("endpointing=10").unwrap().endpointing,
            Endpointing::Ms(64)
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_the_field() {
        for (query, field, code) in [
            (
                "encoding=linear16",
                "sample_rate",
                ErrorCode::INVALID_REQUEST,
            ),
            (
                "encoding=amr-nb&sample_rate=8000",
                "encoding",
                ErrorCode::AUDIO_FORMAT_UNSUPPORTED,
            ),
            ("channels=0", "channels", ErrorCode::INVALID_REQUEST),
            ("channels=two", "channels", ErrorCode::INVALID_REQUEST),
            (
                "interim_results=maybe",
                "interim_results",
                ErrorCode::INVALID_REQUEST,
            ),
            (
                "language=english-please",
                "language",
                ErrorCode::INVALID_REQUEST,
            ),
            (
                "callback=https://example.com/hook",
                "callback",
                ErrorCode::INVALID_REQUEST,
            ),
            (
                "multichannel=true&channels=2",
                "multichannel",
                ErrorCode::INVALID_REQUEST,
            ),
            (
                "endpointing=soon",
                "endpointing",
                ErrorCode::INVALID_REQUEST,
            ),
        ] {
            let error = listen(query).unwrap_err();
            assert_eq!(error.code, code, "{query}");
            assert_eq!(
                error.fields.get("field").and_then(|f| f.as_str()),
                Some(field),
                "{query}"
            );
        }
    }
}
