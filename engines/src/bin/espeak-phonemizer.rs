//! The phonemizer child for the engines crate's own tests and benches (the server runs
//! the same loop as `scaigrid phonemizer`). `--unbounded` skips the bounding of long
//! tokens, so tests can show that the library's own abort stays in this process.

fn main() -> std::process::ExitCode {
    let served = match std::env::args().nth(1).as_deref() {
        Some("--unbounded") => engines::phonemizer::serve_stdio_unbounded(),
        _ => engines::phonemizer::serve_stdio(),
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("espeak-phonemizer: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
