//! The phonemizer child process and its client: espeak-ng's faults stay in the child.
//!
//! The client ([`Phonemizer`]) keeps one child (started from a [`PhonemizerCommand`],
//! e.g. `scaigrid phonemizer`) and sends it one request at a time over its stdin; the
//! child ([`serve_stdio`]) answers on its stdout. When the child dies mid-request (an
//! abort inside the library, the watchdog ending a call that hangs), the client reports
//! that text as rejected, reaps the child and starts a fresh one on the next call.
//!
//! Frames, little-endian:
//! - request: `u32` voice length, voice bytes, `u32` text length, text bytes (UTF-8);
//! - answer: `u8` status (0 phonemes, 1 error), `u32` length, UTF-8 bytes.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{EngineError, EngineResult};
use crate::phonemize::{phonemize_in_process, phonemize_unbounded};

/// Largest text one request carries (the server's sentences are far shorter).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest voice name.
const MAX_VOICE_BYTES: usize = 64;
/// Longest one call may run in the child before its watchdog ends the process.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Status bytes of an answer.
const OK: u8 = 0;
const ERROR: u8 = 1;

/// How to start the child: a program whose `main` calls [`serve_stdio`], and its
/// arguments (for the server, its own executable and `phonemizer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemizerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

struct Worker {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(command: &PhonemizerCommand) -> EngineResult<Worker> {
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                EngineError::Runtime(format!(
                    "starting the phonemizer {}: {e}",
                    command.program.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(EngineError::Runtime("phonemizer pipes missing".into()));
        };
        Ok(Worker {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
        })
    }

    fn ask(&mut self, text: &str, voice: &str) -> std::io::Result<(u8, String)> {
        write_frame(&mut self.stdin, voice.as_bytes())?;
        write_frame(&mut self.stdin, text.as_bytes())?;
        self.stdin.flush()?;
        let mut status = [0u8; 1];
        self.stdout.read_exact(&mut status)?;
        let answer = read_frame(&mut self.stdout, MAX_TEXT_BYTES * 16)?;
        let answer = String::from_utf8(answer)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))?;
        Ok((status[0], answer))
    }

    /// Ends the child and reaps it (no zombie is left behind).
    fn end(mut self) -> Option<std::process::ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

/// The client: one child, one request at a time (espeak-ng is single-threaded anyway).
pub struct Phonemizer {
    command: PhonemizerCommand,
    worker: Mutex<Option<Worker>>,
    starts: AtomicU64,
}

impl Phonemizer {
    /// A client that starts its child on the first call.
    pub fn new(command: PhonemizerCommand) -> Phonemizer {
        Phonemizer {
            command,
            worker: Mutex::new(None),
            starts: AtomicU64::new(0),
        }
    }

    /// Starts the child now, so the first request does not pay for it, and checks that
    /// it answers.
    pub fn start(command: PhonemizerCommand) -> EngineResult<Phonemizer> {
        let phonemizer = Phonemizer::new(command);
        phonemizer.phonemize("ready", "en-us")?;
        Ok(phonemizer)
    }

    /// Children started so far: one, plus one after each child that died on a text.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Phonemes of `text` in espeak-ng `voice`, clause by clause (see
    /// [`crate::phonemize::phonemize_in_process`]). A text that ends the child fails with
    /// [`EngineError::TextRejected`]; the next call has a new child.
    pub fn phonemize(&self, text: &str, voice: &str) -> EngineResult<String> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(EngineError::InvalidInput(format!(
                "text of {} bytes is over the phonemizer's {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        if voice.is_empty() || voice.len() > MAX_VOICE_BYTES {
            return Err(EngineError::InvalidInput("bad voice name".into()));
        }
        let mut slot = self
            .worker
            .lock()
            .map_err(|_| EngineError::Inference("phonemizer lock poisoned".into()))?;
        let mut worker = match slot.take() {
            Some(worker) => worker,
            None => {
                let worker = Worker::start(&self.command)?;
                self.starts.fetch_add(1, Ordering::Relaxed);
                worker
            }
        };
        match worker.ask(text, voice) {
            Ok((OK, phonemes)) => {
                *slot = Some(worker);
                Ok(phonemes)
            }
            Ok((_, message)) => {
                *slot = Some(worker);
                Err(EngineError::InvalidInput(message))
            }
            Err(error) => {
                let status = worker.end();
                Err(EngineError::TextRejected(format!(
                    "the phonemizer ended on this text ({error}; exit {status:?})"
                )))
            }
        }
    }
}

impl Drop for Phonemizer {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.worker.lock()
            && let Some(worker) = slot.take()
        {
            worker.end();
        }
    }
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too long"))?;
    out.write_all(&length.to_le_bytes())?;
    out.write_all(bytes)
}

/// One frame: a `u32` little-endian length, then that many bytes; a length over `max` is
/// `InvalidData` before anything is allocated for it.
pub fn read_frame(input: &mut impl Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    input.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {length} bytes"),
        ));
    }
    let mut bytes = vec![0u8; length];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Milliseconds since `EPOCH` at which the running call started; 0 when idle.
static CALL_STARTED_MS: AtomicU64 = AtomicU64::new(0);

/// The child's main loop: answers requests from stdin on stdout until stdin closes.
/// A call that runs longer than ten seconds ends the process (exit status 124): the
/// client sees the pipe close and fails that text alone.
pub fn serve_stdio() -> std::io::Result<()> {
    serve(true)
}

/// [`serve_stdio`] without [`crate::phonemize::bound_words`]: only for tests that hand
/// the library the inputs known to abort it.
pub fn serve_stdio_unbounded() -> std::io::Result<()> {
    serve(false)
}

fn serve(bound: bool) -> std::io::Result<()> {
    let epoch = Instant::now();
    let now_ms = move || epoch.elapsed().as_millis() as u64 + 1;
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let started = CALL_STARTED_MS.load(Ordering::Relaxed);
            if started != 0 && now_ms().saturating_sub(started) > CALL_TIMEOUT.as_millis() as u64 {
                eprintln!("phonemizer: a call ran past {CALL_TIMEOUT:?}; ending");
                std::process::exit(124);
            }
        }
    });
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    loop {
        let voice = match read_frame(&mut input, MAX_VOICE_BYTES) {
            Ok(voice) => voice,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        };
        let text = read_frame(&mut input, MAX_TEXT_BYTES)?;
        let (Ok(voice), Ok(text)) = (String::from_utf8(voice), String::from_utf8(text)) else {
            output.write_all(&[ERROR])?;
            write_frame(&mut output, b"request is not UTF-8")?;
            output.flush()?;
            continue;
        };
        CALL_STARTED_MS.store(now_ms(), Ordering::Relaxed);
        let result = match bound {
            true => phonemize_in_process(&text, &voice),
            false => phonemize_unbounded(&text, &voice),
        };
        CALL_STARTED_MS.store(0, Ordering::Relaxed);
        match result {
            Ok(phonemes) => {
                output.write_all(&[OK])?;
                write_frame(&mut output, phonemes.as_bytes())?;
            }
            Err(error) => {
                output.write_all(&[ERROR])?;
                write_frame(&mut output, error.to_string().as_bytes())?;
            }
        }
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversized_lengths() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, b"en-us").unwrap();
        assert_eq!(read_frame(&mut &buffer[..], 64).unwrap(), b"en-us");
        assert!(read_frame(&mut &buffer[..], 2).is_err());
        assert!(read_frame(&mut &buffer[..3], 64).is_err());
    }
}
