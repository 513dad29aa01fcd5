//! `scaigrid speak "text" -o out.mp3`: one text to one audio file. The format follows
//! the output's extension (`.mp3`, `.wav`, `.ogg`/`.opus`, `.flac`, `.pcm`) unless
//! `--format` says otherwise; `-` as the text reads it from standard input.
//!
//! The audio is asked for on `/v1/audio/speech`, which streams it as it is made (and
//! answers long texts inline), and written to `NAME.part` as it arrives, renamed when
//! the body is complete: an interrupted synthesis leaves no file that looks whole.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::transcribe::part_path;
use super::{Refusal, Server, ServerArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Mp3,
    Wav,
    Opus,
    Flac,
    /// Raw 16-bit little-endian mono at 24 kHz.
    Pcm,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Mp3 => "mp3",
            Format::Wav => "wav",
            Format::Opus => "opus",
            Format::Flac => "flac",
            Format::Pcm => "pcm",
        }
    }

    /// The format an output's extension names.
    pub fn of(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match extension.as_str() {
            "mp3" => Format::Mp3,
            "wav" => Format::Wav,
            "ogg" | "opus" | "oga" => Format::Opus,
            "flac" => Format::Flac,
            "pcm" | "raw" => Format::Pcm,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The text to speak; `-` reads it from standard input.
    pub text: String,
    /// The audio file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// A voice id (`GET /v1/modules/scaispeak/voices`); the default voice when absent.
    #[arg(long)]
    pub voice: Option<String>,
    /// The audio format; default: from the output's extension.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// 0.25 to 4; 1 is the voice's own pace.
    #[arg(long)]
    pub speed: Option<f32>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let format = match args.format.or_else(|| Format::of(&args.output)) {
        Some(format) => format,
        None => anyhow::bail!(
            "{}: say the format with --format (mp3, wav, opus, flac, pcm) or use one of \
             those extensions",
            args.output.display()
        ),
    };
    let text = match args.text.as_str() {
        "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        text => text.to_owned(),
    };
    let server = Server::new(&args.server).map_err(|r| anyhow::anyhow!("{r}"))?;
    let mut body = json!({"model": "tts-1", "input": text, "response_format": format.name()});
    if let Some(voice) = &args.voice {
        body["voice"] = json!(voice);
    }
    if let Some(speed) = args.speed {
        body["speed"] = json!(speed);
    }
    let bytes = speak(&server, &body, &args.output)
        .await
        .map_err(|refusal| anyhow::anyhow!("{refusal}"))?;
    eprintln!(
        "{}: {bytes} bytes of {}",
        args.output.display(),
        format.name()
    );
    Ok(())
}

/// Streams the audio to `output` (through its `.part`); the bytes written.
async fn speak(server: &Server, body: &serde_json::Value, output: &Path) -> Result<u64, Refusal> {
    let response = server.post("/v1/audio/speech").json(body).send().await?;
    let mut response = Server::checked(response).await?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} of audio {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let part = part_path(output);
    let write_failed =
        |e: std::io::Error| Refusal::local("WRITE_FAILED", format!("{}: {e}", part.display()));
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(write_failed)?;
    }
    let mut file = tokio::fs::File::create(&part).await.map_err(write_failed)?;
    let mut written = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                bar.abandon_with_message("broke off");
                drop(file);
                let _ = tokio::fs::remove_file(&part).await;
                return Err(Refusal::local(
                    "SPEECH_BROKE_OFF",
                    format!(
                        "the audio stopped before its end: {}",
                        crate::error::chain(&error)
                    ),
                ));
            }
        };
        file.write_all(&chunk).await.map_err(write_failed)?;
        written += chunk.len() as u64;
        bar.set_position(written);
    }
    file.flush().await.map_err(write_failed)?;
    drop(file);
    tokio::fs::rename(&part, output)
        .await
        .map_err(write_failed)?;
    bar.finish_with_message("done");
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_names_the_format() {
        assert_eq!(Format::of(Path::new("a/b.MP3")), Some(Format::Mp3));
        assert_eq!(Format::of(Path::new("b.ogg")), Some(Format::Opus));
        assert_eq!(Format::of(Path::new("b.flac")), Some(Format::Flac));
        assert_eq!(Format::of(Path::new("b.raw")), Some(Format::Pcm));
        assert_eq!(Format::of(Path::new("b.aac")), None);
        assert_eq!(Format::of(Path::new("b")), None);
    }
}
