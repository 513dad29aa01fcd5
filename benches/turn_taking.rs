//! Turn taking on real speech: how often a policy ends the user's turn mid-sentence
//! (false cut-ins per minute), and how long it waits at real sentence ends (run by
//! `benches/turn_taking.sh`, which starts a release server with the real models).
//!
//! Each clip is streamed through `/v1/modules/scaiecho/stream/transcribe` split at every
//! pause of 128 ms or more (utterances with their times and transcripts), and
//! transcribed whole by `/v1/listen?punctuate=true` (words with their times and
//! punctuation: the reference, since a whole-file transcription punctuates with the
//! context a live one lacks). A policy ends the turn after an utterance when the pause
//! that follows is longer than its wait: a fixed wait (`server_vad`), or
//! `realtime::turns::turn_pause` (`semantic_vad`, from the utterance's transcript). A
//! turn end is a false cut-in unless the reference word spoken last before it ends a
//! sentence.
//!
//! Usage: turn_taking --url http://127.0.0.1:PORT --key KEY [clip.wav ...]
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use scaigrid::realtime::config::Eagerness;
use scaigrid::realtime::turns;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The stream's pause: every pause a policy might act on splits an utterance.
const SPLIT_MS: u64 = 128;
/// Audio the endpointer keeps from before an utterance's first speech.
const PAD: f64 = 0.192;

struct Utterance {
    /// Speech start and end, seconds.
    start: f64,
    end: f64,
    text: String,
}

struct Word {
    end: f64,
    text: String,
}

async fn utterances(url: &str, key: &str, wav: &[u8]) -> Vec<Utterance> {
    let url = format!(
        "{}/v1/modules/scaiecho/stream/transcribe",
        url.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut sink, mut stream) = socket.split();
    let open = json!({"type": "open", "media_type": "audio/wav", "chunk_seconds": 30.0,
        "silence_ms": SPLIT_MS});
    sink.send(Message::Text(open.to_string().into()))
        .await
        .unwrap();
    let wav = wav.to_vec();
    tokio::spawn(async move {
        for chunk in wav.chunks(32 * 1024) {
            if sink
                .send(Message::Binary(chunk.to_vec().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let close = json!({"type": "close"}).to_string();
        let _ = sink.send(Message::Text(close.into())).await;
    });
    let mut found = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(300), stream.next()).await
    {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        match frame["type"].as_str() {
            Some("delta") if frame["is_final"] == true => found.push(Utterance {
                start: frame["start"].as_f64().unwrap() + PAD,
                end: frame["end"].as_f64().unwrap() - SPLIT_MS as f64 / 1000.0,
                text: frame["text"].as_str().unwrap().trim().to_owned(),
            }),
            Some("done") => break,
            Some("error") => panic!("{frame}"),
            _ => {}
        }
    }
    found.sort_by(|a, b| a.start.total_cmp(&b.start));
    found
}

async fn reference(url: &str, key: &str, wav: &[u8]) -> (Vec<Word>, f64) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/listen?punctuate=true"))
        .bearer_auth(key)
        .header("content-type", "audio/wav")
        .body(wav.to_vec())
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let words = body["results"]["channels"][0]["alternatives"][0]["words"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|w| Word {
            end: w["end"].as_f64().unwrap(),
            text: w["punctuated_word"].as_str().unwrap().to_owned(),
        })
        .collect();
    (words, body["metadata"]["duration"].as_f64().unwrap())
}

#[derive(Clone, Copy)]
enum Policy {
    Fixed(u64),
    Semantic(Eagerness),
}

impl Policy {
    fn name(self) -> String {
        match self {
            Policy::Fixed(ms) => format!("server_vad {ms} ms"),
            Policy::Semantic(eagerness) => format!("semantic_vad {eagerness:?}").to_lowercase(),
        }
    }

    fn wait(self, transcript: &str) -> f64 {
        match self {
            Policy::Fixed(ms) => ms as f64 / 1000.0,
            Policy::Semantic(eagerness) => turns::turn_pause(eagerness, transcript).as_secs_f64(),
        }
    }
}

/// (false cut-ins, turn ends at sentence ends, their summed waits).
fn score(policy: Policy, utterances: &[Utterance], words: &[Word]) -> (usize, usize, f64) {
    let (mut false_cuts, mut good, mut waited) = (0, 0, 0.0);
    for pair in utterances.windows(2) {
        let (said, next) = (&pair[0], &pair[1]);
        let pause = next.start - said.end;
        let wait = policy.wait(&said.text);
        if pause <= wait {
            continue;
        }
        let last = words.iter().rev().find(|w| w.end <= said.end + 0.3);
        match last.is_some_and(|w| w.text.ends_with(['.', '?', '!'])) {
            true => {
                good += 1;
                waited += wait;
            }
            false => false_cuts += 1,
        }
    }
    (false_cuts, good, waited)
}

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        raw.iter()
            .position(|a| a == name)
            .and_then(|i| raw.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let (url, key) = (value("--url"), value("--key"));
    let clips: Vec<String> = raw
        .iter()
        .filter(|a| a.ends_with(".wav"))
        .cloned()
        .collect();
    let policies = [
        Policy::Fixed(200),
        Policy::Fixed(500),
        Policy::Fixed(800),
        Policy::Semantic(Eagerness::High),
        Policy::Semantic(Eagerness::Medium),
        Policy::Semantic(Eagerness::Low),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bar = ProgressBar::new(clips.len() as u64)
            .with_style(ProgressStyle::with_template("{bar:30} {pos}/{len} clips").unwrap());
        let mut heard = Vec::new();
        for clip in &clips {
            let wav = std::fs::read(clip).unwrap();
            let said = utterances(&url, &key, &wav).await;
            let (words, seconds) = reference(&url, &key, &wav).await;
            heard.push((clip.clone(), said, words, seconds));
            bar.inc(1);
        }
        bar.finish_and_clear();
        // `SCAIGRID_TURNS_DUMP=file`: what was heard, for studying the policies.
        if let Ok(path) = std::env::var("SCAIGRID_TURNS_DUMP") {
            let dump: Vec<Value> = heard
                .iter()
                .map(|(clip, said, words, seconds)| {
                    json!({"clip": clip, "seconds": seconds,
                        "utterances": said.iter().map(|u| json!([u.start, u.end, u.text])).collect::<Vec<_>>(),
                        "words": words.iter().map(|w| json!([w.end, w.text])).collect::<Vec<_>>()})
                })
                .collect();
            std::fs::write(path, serde_json::to_vec_pretty(&dump).unwrap()).unwrap();
        }
        let minutes: f64 = heard.iter().map(|h| h.3).sum::<f64>() / 60.0;
        let sentence_ends: usize = heard
            .iter()
            .map(|h| h.2.iter().filter(|w| w.text.ends_with(['.', '?', '!'])).count())
            .sum();
        println!(
            "{} clips, {minutes:.1} min of speech, {} utterances at {SPLIT_MS} ms pauses, {sentence_ends} sentence ends in the reference",
            heard.len(),
            heard.iter().map(|h| h.1.len()).sum::<usize>()
        );
        for policy in policies {
            let (mut false_cuts, mut good, mut waited) = (0, 0, 0.0);
            for (_, said, words, _) in &heard {
                let (f, g, w) = score(policy, said, words);
                false_cuts += f;
                good += g;
                waited += w;
            }
            println!(
                "  {:24} false cut-ins {:5.2}/min ({false_cuts:3})  turns at sentence ends {good:3}, waited {:4.0} ms each",
                policy.name(),
                false_cuts as f64 / minutes,
                waited / good.max(1) as f64 * 1000.0
            );
        }
    });
}
