//! `scaigrid transcribe FILE|DIR... --format srt|vtt|json|text [--diarize] [--out DIR]`:
//! every audio file named or found under the folders, transcribed by the server with
//! `--concurrency` uploads at a time, each written next to its input (or under `--out`,
//! keeping the folders' structure) as `NAME.srt` etc.
//!
//! - **Resumable**: a file whose output exists is skipped (`--force` redoes it). An
//!   output is written to `NAME.srt.part` and renamed when complete, so an interrupted
//!   run never leaves a cut file that a later run would take as done.
//! - **Long files**: the server queues audio over its inline threshold as a job (202);
//!   the client polls the job and writes its result the same way.
//! - **Errors**: one file's failure (undecodable audio, say) is reported with the
//!   server's code and the batch goes on; a refusal that would hit every file (a wrong
//!   key, the module not enabled, the server unreachable) stops it. The exit status is
//!   non-zero when any file failed.
//! - **Progress**: a bar on a terminal (files done of all, the current files); a line
//!   per file otherwise.
//!
//! The transcript is asked for as `verbose_json` and rendered here by the server's own
//! formatter (`scaiecho::format`), so inline answers and job results come out the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Refusal, Server, ServerArgs};
use crate::scaiecho::format::{ResponseFormat, Transcription, render};

/// Extensions taken from folders (a file named on the command line is sent whatever its
/// name; the server sniffs the bytes).
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "mp3", "flac", "ogg", "oga", "opus", "webm", "m4a", "mp4", "aac", "weba",
];

/// How long a queued job is waited for between looks.
const POLL: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Srt,
    Vtt,
    Json,
    Text,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Json => "json",
            Format::Text => "txt",
        }
    }

    fn response(self) -> ResponseFormat {
        match self {
            Format::Srt => ResponseFormat::Srt,
            Format::Vtt => ResponseFormat::Vtt,
            Format::Json => ResponseFormat::VerboseJson,
            Format::Text => ResponseFormat::Text,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Audio files, and folders searched (recursively) for audio files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "srt")]
    pub format: Format,
    /// Label who speaks when (`[spk_0]` in subtitles).
    #[arg(long)]
    pub diarize: bool,
    /// The spoken language (e.g. `en`); detected when absent.
    #[arg(long)]
    pub language: Option<String>,
    /// Where outputs go (the folders' structure is kept); default: next to each input.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Files uploaded at a time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Transcribe files whose output already exists too.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One input and where its transcript goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub input: PathBuf,
    pub output: PathBuf,
}

/// The inputs expanded (folders walked, sorted), each with its output; an error names a
/// missing input or two inputs that would write the same output.
pub fn plan(paths: &[PathBuf], out: Option<&Path>, format: Format) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let found: Vec<(PathBuf, PathBuf)> = if meta.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files).map_err(|e| format!("{}: {e}", path.display()))?;
            files.sort();
            files
                .into_iter()
                .map(|file| {
                    let relative = file.strip_prefix(path).unwrap_or(&file).to_path_buf();
                    (file, relative)
                })
                .collect()
        } else {
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            vec![(path.clone(), name)]
        };
        for (input, relative) in found {
            let base = match out {
                Some(out) => out.join(&relative),
                None => input.clone(),
            };
            items.push(Item {
                output: base.with_extension(format.extension()),
                input,
            });
        }
    }
    let mut seen: BTreeMap<&Path, &Path> = BTreeMap::new();
    for item in &items {
        if let Some(other) = seen.insert(&item.output, &item.input) {
            return Err(format!(
                "{} and {} would both write {}",
                other.display(),
                item.input.display(),
                item.output.display()
            ));
        }
    }
    Ok(items)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, files)?;
        } else if kind.is_file() && is_audio(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Runs the batch; `Ok(false)` when some file failed.
pub async fn run(args: Args) -> anyhow::Result<bool> {
    let server = Server::new(&args.server).map_err(|r| anyhow::anyhow!("{r}"))?;
    let items = plan(&args.paths, args.out.as_deref(), args.format).map_err(anyhow::Error::msg)?;
    let (todo, done): (Vec<Item>, Vec<Item>) = items
        .into_iter()
        .partition(|item| args.force || !item.output.exists());
    let todo_count = todo.len();
    let bar = progress(todo_count as u64);
    if !done.is_empty() {
        say(
            &bar,
            format!(
                "skipping {} file(s) already transcribed (--force redoes them)",
                done.len()
            ),
        );
    }
    let options = Options {
        format: args.format,
        diarize: args.diarize,
        language: args.language.clone(),
    };
    let mut failed = 0usize;
    let mut results = futures_util::stream::iter(todo)
        .map(|item| {
            let (server, options, bar) = (server.clone(), options.clone(), bar.clone());
            async move {
                let result = transcribe_one(&server, &options, &item, &bar).await;
                (item, result)
            }
        })
        .buffer_unordered(usize::from(args.concurrency));
    while let Some((item, result)) = results.next().await {
        bar.inc(1);
        match result {
            Ok(seconds) => {
                let line = format!(
                    "{} -> {} ({seconds:.1} s of audio)",
                    item.input.display(),
                    item.output.display()
                );
                match bar.is_hidden() {
                    true => println!("{line}"),
                    false => bar.set_message(line),
                }
            }
            Err(refusal) => {
                failed += 1;
                say(&bar, format!("{}: {refusal}", item.input.display()));
                if refusal.is_fatal() {
                    bar.abandon();
                    anyhow::bail!("stopped: {refusal} (it would fail for every file)");
                }
            }
        }
    }
    let summary = format!(
        "{} transcribed, {} skipped, {failed} failed",
        todo_count - failed,
        done.len()
    );
    match bar.is_hidden() {
        true => eprintln!("{summary}"),
        false => bar.finish_with_message(summary),
    }
    Ok(failed == 0)
}

/// A line above the bar on a terminal, on stderr otherwise (a hidden bar prints
/// nothing).
fn say(bar: &ProgressBar, line: String) {
    match bar.is_hidden() {
        true => eprintln!("{line}"),
        false => bar.println(line),
    }
}

/// A bar of files on a terminal (stderr); hidden otherwise.
fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files, eta {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[derive(Debug, Clone)]
struct Options {
    format: Format,
    diarize: bool,
    language: Option<String>,
}

/// Uploads one file, waits for its transcript (inline or a job), writes the output;
/// the audio's seconds.
async fn transcribe_one(
    server: &Server,
    options: &Options,
    item: &Item,
    bar: &ProgressBar,
) -> Result<f64, Refusal> {
    let file = tokio::fs::File::open(&item.input)
        .await
        .map_err(|e| Refusal::local("READ_FAILED", e))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| Refusal::local("READ_FAILED", e))?
        .len();
    let name = item
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".into());
    let part = reqwest::multipart::Part::stream_with_length(file, length).file_name(name);
    let mut form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("response_format", "verbose_json");
    if options.diarize {
        form = form.text("diarize", "true");
    }
    if let Some(language) = &options.language {
        form = form.text("language", language.clone());
    }
    let response = server
        .post("/v1/modules/scaiecho/transcribe")
        .multipart(form)
        .send()
        .await?;
    let response = Server::checked(response).await?;
    let transcription = match response.status().as_u16() {
        202 => {
            let job: serde_json::Value = response.json().await?;
            let id = job["id"].as_str().unwrap_or_default().to_owned();
            bar.set_message(format!("{}: queued as job {id}", item.input.display()));
            wait_for_job(server, &id).await?
        }
        _ => response.json::<Transcription>().await?,
    };
    let text = render(&transcription, options.format.response());
    write_atomically(&item.output, text.as_bytes())
        .await
        .map_err(|e| Refusal::local("WRITE_FAILED", format!("{}: {e}", item.output.display())))?;
    Ok(transcription.duration)
}

/// Polls a transcription job until it ends; its transcript, or its failure reason.
async fn wait_for_job(server: &Server, id: &str) -> Result<Transcription, Refusal> {
    loop {
        let response = server
            .get(&format!("/v1/modules/scaiecho/jobs/{id}"))
            .send()
            .await?;
        let job: serde_json::Value = Server::checked(response).await?.json().await?;
        match job["status"].as_str() {
            Some("succeeded") => {
                return serde_json::from_value(job["result"].clone())
                    .map_err(|e| Refusal::local("BAD_RESULT", format!("job {id}: {e}")));
            }
            Some("failed" | "cancelled") => {
                return Err(Refusal {
                    status: None,
                    code: job["failure_reason"]
                        .as_str()
                        .unwrap_or("JOB_FAILED")
                        .to_owned(),
                    message: job["failure_detail"]
                        .as_str()
                        .unwrap_or("the job failed")
                        .to_owned(),
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// Writes `bytes` to `NAME.part` beside `path`, then renames it to `path`: a reader (or
/// a later run) sees the whole file or none.
pub(super) async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let part = part_path(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(&part, bytes).await?;
    tokio::fs::rename(&part, path).await
}

/// `NAME.EXT.part` beside `NAME.EXT`.
pub(super) fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn folders_are_walked_and_outputs_keep_their_structure() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("calls");
        for name in ["b.wav", "a.MP3", "deep/c.flac", "notes.txt", "deep/d.opus"] {
            touch(&root.join(name));
        }
        let single = dir.path().join("single.webm");
        touch(&single);
        let out = dir.path().join("out");
        let items = plan(&[root, single.clone()], Some(&out), Format::Srt).unwrap();
        let pairs: Vec<(String, String)> = items
            .iter()
            .map(|item| {
                (
                    item.input
                        .strip_prefix(dir.path())
                        .unwrap()
                        .display()
                        .to_string(),
                    item.output
                        .strip_prefix(&out)
                        .unwrap()
                        .display()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("calls/a.MP3", "a.srt"),
                ("calls/b.wav", "b.srt"),
                ("calls/deep/c.flac", "deep/c.srt"),
                ("calls/deep/d.opus", "deep/d.srt"),
                ("single.webm", "single.srt"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        // Without --out: beside each input.
        let items = plan(std::slice::from_ref(&single), None, Format::Text).unwrap();
        assert_eq!(items[0].output, dir.path().join("single.txt"));
    }

    #[test]
    fn collisions_and_missing_inputs_are_refused_before_any_upload() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("x/talk.wav"));
        touch(&dir.path().join("y/talk.mp3"));
        let out = dir.path().join("out");
        let both = [dir.path().join("x"), dir.path().join("y")];
        let error = plan(&both, Some(&out), Format::Vtt).unwrap_err();
        assert!(error.contains("would both write"), "{error}");
        let error = plan(&[dir.path().join("nope")], None, Format::Srt).unwrap_err();
        assert!(error.contains("nope"), "{error}");
    }

    #[test]
    fn a_part_file_sits_beside_its_output() {
        assert_eq!(
            part_path(Path::new("/tmp/out/talk.srt")),
            Path::new("/tmp/out/talk.srt.part")
        );
    }
}
