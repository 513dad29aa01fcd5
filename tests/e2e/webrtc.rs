//! WebRTC sessions: a real headless Chromium with a fake microphone talks to the server
//! through the demo page (ScaiEcho hears the microphone, ScaiSpeak's track is recorded
//! and transcribed back), and every failure state of the contract.

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::browser::Browser;
use crate::stream::says_beckett;
use crate::support::{ADMIN_KEY, Options, Server, assert_error};

const ECHO: &str = "/v1/modules/scaiecho/sessions";
const SPEAK: &str = "/v1/modules/scaispeak/sessions";
/// Silence before the speech in the fake microphone: the peer connects meanwhile.
const LEAD_MS: usize = 3000;

/// beckett.wav at 16 kHz mono with `LEAD_MS` of silence before it and one second after;
/// and where its speech ends (ms from the file's start).
pub(crate) fn microphone_file(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let bytes = std::fs::read("models/cache/test-audio/beckett.wav").unwrap();
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    let speech = media::resample::to_mono(&audio, 16_000).unwrap();
    let last_loud = speech
        .chunks(320)
        .rposition(|window| {
            (window.iter().map(|s| s * s).sum::<f32>() / window.len() as f32).sqrt() > 0.02
        })
        .unwrap();
    let mut samples = vec![0.0f32; LEAD_MS * 16];
    samples.extend_from_slice(&speech);
    samples.extend(std::iter::repeat_n(0.0, 16_000));
    let path = dir.join("microphone.wav");
    std::fs::write(&path, media::encode::wav_s16(&samples, 16_000, 1)).unwrap();
    (path, LEAD_MS + (last_loud + 1) * 20)
}

pub(crate) async fn control_socket(
    server: &Server,
    session: &Value,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let base = server.base.replacen("http://", "ws://", 1);
    let url = format!(
        "{base}{}?token={token}",
        session["control_url"].as_str().unwrap()
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The error frame and close code a control socket ends with.
pub(crate) async fn refused(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (Value, u16, String) {
    let mut error = Value::Null;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => error = serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Close(Some(frame)))) => {
                return (error, u16::from(frame.code), frame.reason.to_string());
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A ScaiEcho session from the demo page of `server`: the microphone plays the file
/// once; wait for it to end, then `close`. The session's frames, its last frame and
/// what came on the data channel.
pub(crate) async fn echo_from_the_page(
    browser: &Browser,
    server: &Server,
    speech_end_ms: usize,
) -> Value {
    browser.open(&server.url("/webrtc-demo")).await;
    browser
        .run(
            "const s = await scaigrid.echo(args.token, {});
             const wait = s.captureStart + args.until_ms - performance.now();
             await new Promise((r) => setTimeout(r, Math.max(0, wait)));
             const last = await scaigrid.echoStop(s);
             return { id: s.session.id, last, frames: s.frames, captureStart: s.captureStart,
                      channelFrames: s.channelFrames };",
            json!({"token": ADMIN_KEY, "until_ms": speech_end_ms + 2500}),
        )
        .await
}

/// The finals' text of a session's frames.
pub(crate) fn finals_text(frames: &Value) -> String {
    frames
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["type"] == "delta" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn a_browser_microphone_is_transcribed_and_a_spoken_text_comes_back_as_audio() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (microphone, speech_end_ms) = microphone_file(dir.path());
    let browser = Browser::start(&microphone).await;
    let heard = echo_from_the_page(&browser, &server, speech_end_ms).await;
    let frames = heard["frames"].as_array().unwrap();
    assert_eq!(frames[0]["type"], "ready", "{heard}");
    assert_eq!(heard["last"]["type"], "done", "{heard}");
    let finals: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "delta" && f["is_final"] == true)
        .collect();
    let text = finals_text(&heard["frames"]);
    assert!(says_beckett(&text), "transcript: {text}");
    // The data channel the page opened got the same finals.
    let on_channel: Vec<&Value> = heard["channelFrames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["type"] == "delta" && f["is_final"] == true)
        .collect();
    assert_eq!(on_channel.len(), finals.len(), "{}", heard["channelFrames"]);
    assert!(
        heard["last"]["usage"]["audio_seconds"].as_f64().unwrap() > 5.0,
        "{heard}"
    );
    // Mouth to transcript: the end of speech in the microphone to the final that has it.
    let spoken_end = heard["captureStart"].as_f64().unwrap() + speech_end_ms as f64;
    let final_at = finals.last().unwrap()["at"].as_f64().unwrap();
    eprintln!(
        "webrtc latency: mouth-to-final {:.0} ms",
        final_at - spoken_end
    );

    // ScaiSpeak: a text sent on the data channel comes back as an Opus track; the page
    // records it at 16 kHz.
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank.";
    let spoken = browser
        .run(
            "const s = await scaigrid.speakSession(args.token, {});
             await s.channelOpen;
             scaigrid.say(s, args.text, { close: true, channel: true });
             const last = await s.done;
             await new Promise((r) => setTimeout(r, 1500));
             s.recording = false;
             return { id: s.session.id, last, frames: s.frames, sentAt: s.sentAt, firstPacketAt: s.firstPacketAt,
                      wav: scaigrid.wavBase64(s.samples) };",
            json!({"token": ADMIN_KEY, "text": sentence}),
        )
        .await;
    assert_eq!(spoken["frames"][0]["type"], "ready", "{}", spoken["frames"]);
    assert_eq!(spoken["frames"][0]["codec"], "opus");
    assert_eq!(spoken["last"]["type"], "done", "{}", spoken["last"]);
    assert_eq!(
        spoken["last"]["usage"]["characters"].as_u64().unwrap() as usize,
        sentence.chars().count()
    );
    let first_packet = spoken["firstPacketAt"].as_f64().expect("a packet arrived");
    eprintln!(
        "webrtc latency: text-to-first-packet {:.0} ms",
        first_packet - spoken["sentAt"].as_f64().unwrap()
    );
    let wav = base64::engine::general_purpose::STANDARD
        .decode(spoken["wav"].as_str().unwrap())
        .unwrap();
    let response = server
        .http
        .post(server.url("/v1/modules/scaiecho/transcribe"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "audio/wav")
        .body(wav)
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::read(response).await;
    assert_eq!(status, 200, "{body}");
    let lower = body["text"].as_str().unwrap().to_lowercase();
    let heard_words = ["quick", "brown", "fox", "jumps", "lazy", "dog", "river"]
        .iter()
        .filter(|word| lower.contains(*word))
        .count();
    assert!(heard_words >= 5, "the recorded track says: {lower}");

    // Both sessions ended and say why.
    for (base, id) in [(ECHO, &heard["id"]), (SPEAK, &spoken["id"])] {
        let path = format!("{base}/{}", id.as_str().unwrap());
        let mut body = Value::Null;
        for _ in 0..50 {
            body = server.get(&path, Some(ADMIN_KEY)).await.1;
            if body["status"] == "ended" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(body["status"], "ended", "{body}");
        assert_eq!(body["end_reason"], "done", "{body}");
    }
}

#[tokio::test]
async fn session_requests_are_checked_before_any_peer_exists() {
    let server = Server::start().await;
    // Auth, module, options: the HTTP codes, before anything is prepared.
    let (status, body) = server.post(ECHO, None, json!({})).await;
    assert_error(status, &body, 401, "AUTH_TOKEN_MISSING");
    let (status, body) = server
        .post("/v1/modules/gateway/sessions", Some(ADMIN_KEY), json!({}))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = server
        .post(ECHO, Some(ADMIN_KEY), json!({"media_type": "audio/wav"}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(ECHO, Some(ADMIN_KEY), json!({"chunk_seconds": 99}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(SPEAK, Some(ADMIN_KEY), json!({"voice": "no-such-voice"}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(SPEAK, Some(ADMIN_KEY), json!({"output": {"codec": "wav"}}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");

    // A created session: its URLs, and the control socket refuses until the answer.
    let (status, session) = server.post(ECHO, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["status"], "created");
    assert_eq!(session["webrtc_available"], true);
    let id = session["id"].as_str().unwrap();
    let mut control = control_socket(&server, &session, ADMIN_KEY).await;
    let (error, code, reason) = refused(&mut control).await;
    assert_eq!((code, reason.as_str()), (4404, "session_not_ready"));
    assert_eq!(error["code"], "SESSION_NOT_READY", "{error}");

    // A bad offer is refused and loses nothing: the session still waits for one.
    let offer = format!("{ECHO}/{id}/offer");
    let (status, body) = server
        .post(
            &offer,
            Some(ADMIN_KEY),
            json!({"type": "offer", "sdp": "v=0\r\nnonsense"}),
        )
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server
        .post(&offer, Some(ADMIN_KEY), json!({"sdp": 5}))
        .await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
    let (status, body) = server.get(&format!("{ECHO}/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("created")),
        "{body}"
    );

    // Another tenant (with the module) cannot see it; the other module's path does not
    // name it.
    let other = server.tenant("rtc-other").await;
    let (status, body) = server
        .post(
            "/v1/modules/scaiecho/enable",
            Some(&other.admin_key),
            json!({}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server
        .get(&format!("{ECHO}/{id}"), Some(&other.admin_key))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");
    let (status, body) = server.get(&format!("{SPEAK}/{id}"), Some(ADMIN_KEY)).await;
    assert_error(status, &body, 404, "NOT_FOUND");

    // DELETE ends it; an offer after that is a conflict, and a second DELETE is fine.
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{ECHO}/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = server.get(&format!("{ECHO}/{id}"), Some(ADMIN_KEY)).await;
    assert_eq!(body["status"], "ended", "{status} {body}");
    assert_eq!(body["end_reason"], "deleted", "{body}");
    let (status, body) = server
        .post(
            &offer,
            Some(ADMIN_KEY),
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .await;
    assert_error(status, &body, 409, "CONFLICT");
    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            &format!("{ECHO}/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn sessions_per_tenant_are_capped() {
    let server = Server::start_with(Options {
        config_toml: Some("[webrtc]\nmax_sessions_per_tenant = 2\n".into()),
        ..Options::default()
    })
    .await;
    let tenant = server.tenant("rtc-cap").await;
    for module in ["scaiecho", "scaispeak"] {
        let path = format!("/v1/modules/{module}/enable");
        let (status, body) = server.post(&path, Some(&tenant.admin_key), json!({})).await;
        assert_eq!(status, 204, "{body}");
    }
    for _ in 0..2 {
        let (status, body) = server.post(SPEAK, Some(&tenant.admin_key), json!({})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = server.post(ECHO, Some(&tenant.admin_key), json!({})).await;
    assert_error(status, &body, 429, "RATE_LIMITED");
    // Other tenants have their own allowance.
    let (status, body) = server.post(ECHO, Some(ADMIN_KEY), json!({})).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn offers_are_501_where_webrtc_is_unavailable() {
    let server = Server::start_with(Options {
        config_toml: Some("[webrtc]\nenabled = false\n".into()),
        ..Options::default()
    })
    .await;
    for (base, code) in [
        (ECHO, "SCAIECHO_WEBRTC_UNAVAILABLE"),
        (SPEAK, "SCAISPEAK_WEBRTC_UNAVAILABLE"),
    ] {
        // Creating records intent and works; the SDP exchange is what needs WebRTC.
        let (status, session) = server.post(base, Some(ADMIN_KEY), json!({})).await;
        assert_eq!(status, 201, "{session}");
        assert_eq!(session["webrtc_available"], false);
        let offer = format!("{base}/{}/offer", session["id"].as_str().unwrap());
        let (status, body) = server
            .post(
                &offer,
                Some(ADMIN_KEY),
                json!({"type": "offer", "sdp": "v=0"}),
            )
            .await;
        assert_error(status, &body, 501, code);
    }
}

#[tokio::test]
async fn a_restart_loses_the_peer_state_and_says_so() {
    let mut server = Server::start().await;
    let mut sessions = Vec::new();
    for base in [ECHO, SPEAK] {
        let (status, session) = server.post(base, Some(ADMIN_KEY), json!({})).await;
        assert_eq!(status, 201, "{session}");
        sessions.push((base, session));
    }
    let data_dir = server.data_dir.clone();
    server.kill();
    let server = Server::start_with(Options {
        data_dir: Some(data_dir),
        ..Options::default()
    })
    .await;
    for ((base, session), code) in sessions.iter().zip([
        "SCAIECHO_WEBRTC_SESSION_STATE_LOST",
        "SCAISPEAK_WEBRTC_SESSION_STATE_LOST",
    ]) {
        let id = session["id"].as_str().unwrap();
        let (status, body) = server
            .post(
                &format!("{base}/{id}/offer"),
                Some(ADMIN_KEY),
                json!({"type": "offer", "sdp": "v=0"}),
            )
            .await;
        assert_error(status, &body, 410, code);
        let mut control = control_socket(&server, session, ADMIN_KEY).await;
        let (error, close, reason) = refused(&mut control).await;
        assert_eq!((close, reason.as_str()), (4404, "session_not_ready"));
        assert_eq!(error["code"], *code, "{error}");
        let (_, body) = server.get(&format!("{base}/{id}"), Some(ADMIN_KEY)).await;
        assert_eq!(body["status"], "lost", "{body}");
    }
}

/// An SDP offer with one audio line, made by str0m (no browser needed for the answer).
pub(crate) fn str0m_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    let candidate = str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(candidate);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, _pending) = change.apply().unwrap();
    offer.to_sdp_string()
}

#[tokio::test]
async fn viewers_cannot_touch_sessions_and_oversized_control_frames_close_4413() {
    let server = Server::start().await;
    let tenant = server.tenant("rtc-perm").await;
    let path = "/v1/modules/scaiecho/enable";
    let (status, body) = server.post(path, Some(&tenant.admin_key), json!({})).await;
    assert_eq!(status, 204, "{body}");
    let viewer = server.key(ADMIN_KEY, &tenant.id, &["viewer"]).await;
    let (status, session) = server.post(ECHO, Some(&tenant.admin_key), json!({})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap();
    let at = format!("{ECHO}/{id}");

    // A viewer of the same tenant: no session route and no control socket.
    let (status, body) = server.post(ECHO, Some(&viewer), json!({})).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server.get(&at, Some(&viewer)).await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server
        .post(
            &format!("{at}/offer"),
            Some(&viewer),
            json!({"type": "offer", "sdp": str0m_offer()}),
        )
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let (status, body) = server
        .send(reqwest::Method::DELETE, &at, Some(&viewer), None)
        .await;
    assert_error(status, &body, 403, "AUTHZ_PERMISSION_DENIED");
    let mut control = control_socket(&server, &session, &viewer).await;
    let (error, code, _) = refused(&mut control).await;
    assert_eq!(code, 4403, "{error}");
    assert_eq!(error["code"], "AUTHZ_PERMISSION_DENIED", "{error}");

    // The member's session goes on: answered, and its control socket opens.
    let (status, answer) = server
        .post(
            &format!("{at}/offer"),
            Some(&tenant.admin_key),
            json!({"type": "offer", "sdp": str0m_offer()}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "answer");
    let mut control = control_socket(&server, &session, &tenant.admin_key).await;
    // A 10 MB control frame: the error frame and close 4413, nothing else lost.
    use futures_util::SinkExt;
    control
        .send(Message::Text("x".repeat(10 << 20).into()))
        .await
        .unwrap();
    let (error, code, reason) = refused(&mut control).await;
    assert_eq!((code, reason.as_str()), (4413, "CTX_TOO_LARGE"), "{error}");
    assert_eq!(error["code"], "CTX_TOO_LARGE", "{error}");
    let (status, me) = server.get("/v1/me", Some(&tenant.admin_key)).await;
    assert_eq!(status, 200, "{me}");
}

#[tokio::test]
async fn a_webrtc_session_past_its_budget_ends_with_the_refusal_and_its_usage_kept() {
    // A cost unit a second of audio, checkpoints every second, four units a day.
    let server = Server::start_with(Options {
        config_toml: Some(crate::metering::PRICED.into()),
        ..Options::default()
    })
    .await;
    let (_, me) = server.get("/v1/me", Some(ADMIN_KEY)).await;
    let tenant = me["tenant"]["id"].as_str().unwrap();
    let budget = json!({"scope": "tenant", "scope_id": tenant, "period": "day", "limit": 4.0});
    let (status, body) = server
        .post("/v1/accounting/budgets", Some(ADMIN_KEY), budget)
        .await;
    assert_eq!(status, 201, "{body}");
    let dir = tempfile::tempdir().unwrap();
    let (microphone, speech_end_ms) = microphone_file(dir.path());
    let browser = Browser::start(&microphone).await;
    let heard = echo_from_the_page(&browser, &server, speech_end_ms).await;
    // The microphone plays 14 s; the session ends at the budget with the refusal on
    // the control socket and the data channel.
    assert_eq!(heard["last"]["type"], "error", "{heard}");
    assert_eq!(heard["last"]["code"], "BUDGET_EXCEEDED", "{heard}");
    let on_channel = heard["channelFrames"].as_array().unwrap();
    assert!(
        on_channel.iter().any(|f| f["code"] == "BUDGET_EXCEEDED"),
        "{on_channel:?}"
    );
    let path = format!("{ECHO}/{}", heard["id"].as_str().unwrap());
    let mut session = Value::Null;
    for _ in 0..50 {
        session = server.get(&path, Some(ADMIN_KEY)).await.1;
        if session["status"] == "ended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(session["end_reason"], "budget_exceeded", "{session}");
    // What it heard until then is recorded, within a checkpoint of the limit.
    let (_, usage) = server
        .get("/v1/accounting/usage?group_by=module", Some(ADMIN_KEY))
        .await;
    let row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["key"] == "scaiecho")
        .cloned()
        .unwrap_or_default();
    let seconds = row["audio_seconds"].as_f64().unwrap_or_default();
    assert!((3.0..=5.2).contains(&seconds), "{usage}");
}
