//! One WebRTC peer: str0m's sans-IO `Rtc` driven by a tokio task over UDP sockets.
//!
//! The answer offers one host candidate per configured IP (each its own socket, so the
//! destination of every datagram is known). The task follows str0m's run-loop contract:
//! one mutation (a datagram, a timeout, a packet or text to send), then drain
//! `poll_output` to the next timeout.
//!
//! Incoming Opus is decoded here straight to 16 kHz s16le PCM (libopus's own output
//! stage), so the session's pipeline is the WebSocket one with no resampler in it. str0m's depacketizer reorders packets; a gap in RTP
//! time (loss, or a muted sender) becomes that much silence, capped, so utterances
//! still end on time. Outgoing packets get RTP times from the wall clock whenever the
//! sender paused, so the browser's jitter buffer sees real time, not a compressed one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::opus_decode::OpusPacketDecoder;
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Inbound, Outbound};
use crate::error::{ApiError, ApiResult};

/// Opus's RTP clock.
const RATE: u64 = 48_000;
/// What incoming audio is decoded to: the speech pipeline's rate, so no resampler
/// sits (and buffers) between the track and the VAD.
const PCM_RATE: u32 = 16_000;
const RTP_PER_PCM: u64 = RATE / PCM_RATE as u64;
/// Samples in one 20 ms Opus frame at 48 kHz.
const FRAME: u64 = 960;
/// The longest gap filled with silence (longer ones are cut to this).
const MAX_GAP: u64 = 5 * RATE;
/// A sender this far behind the wall clock restarts its RTP time from it.
const RESYNC: u64 = 5 * FRAME;
/// How long a peer may take to connect after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A socket and the address its candidate advertises (a public IP behind 1:1 NAT).
struct Bound {
    socket: UdpSocket,
    advertised: SocketAddr,
}

/// An answered peer, ready to run.
pub struct Peer {
    rtc: Rtc,
    sockets: Vec<Arc<Bound>>,
}

/// Accepts an SDP offer: binds a UDP socket per candidate IP and answers.
pub async fn accept(
    offer: &str,
    ips: &[IpAddr],
    public_ip: Option<IpAddr>,
) -> ApiResult<(Peer, String)> {
    let offer = parse_offer(offer)?;
    let mut sockets = Vec::new();
    for ip in ips {
        let socket = UdpSocket::bind((*ip, 0))
            .await
            .map_err(|e| ApiError::internal(format!("binding a UDP socket on {ip}: {e}")))?;
        let local = socket.local_addr().map_err(ApiError::internal)?;
        let advertised = match public_ip {
            Some(public) => SocketAddr::new(public, local.port()),
            None => local,
        };
        sockets.push(Arc::new(Bound { socket, advertised }));
    }
    let advertised: Vec<SocketAddr> = sockets.iter().map(|bound| bound.advertised).collect();
    let (rtc, answer) = answer(offer, &advertised, Instant::now())?;
    Ok((Peer { rtc, sockets }, answer))
}

/// Parses a client's SDP offer (before any socket is bound for it). Pure; fuzzed by
/// `fuzz/` `sdp`.
pub fn parse_offer(offer: &str) -> ApiResult<SdpOffer> {
    if !offer.contains("m=audio") {
        return Err(ApiError::invalid("the offer has no audio section").with_field("field", "sdp"));
    }
    SdpOffer::from_sdp_string(offer)
        .map_err(|e| ApiError::invalid(format!("bad SDP offer: {e}")).with_field("field", "sdp"))
}

/// Answers a parsed offer with host candidates at `candidates` (Opus only). Pure; fuzzed
/// by `fuzz/` `sdp`.
pub fn answer(
    offer: SdpOffer,
    candidates: &[SocketAddr],
    now: Instant,
) -> ApiResult<(Rtc, String)> {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    for address in candidates {
        let candidate = Candidate::host(*address, "udp")
            .map_err(|e| ApiError::internal(format!("candidate {address}: {e}")))?;
        rtc.add_local_candidate(candidate);
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| ApiError::invalid(format!("the offer cannot be answered: {e}")))?;
    Ok((rtc, answer.to_sdp_string()))
}

/// A datagram read by one of the socket readers.
struct Datagram {
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
    at: Instant,
}

/// Runs the peer until it disconnects or the session drops `outbound`. Incoming audio
/// and data-channel text go to `inbound`; `Inbound::PeerGone` says the peer ended.
pub async fn run(
    mut peer: Peer,
    inbound: mpsc::Sender<Inbound>,
    mut outbound: mpsc::Receiver<Outbound>,
) {
    let (datagrams_tx, mut datagrams) = mpsc::channel::<Datagram>(512);
    let readers: Vec<_> = peer
        .sockets
        .iter()
        .map(|bound| tokio::spawn(read_socket(bound.clone(), datagrams_tx.clone())))
        .collect();
    drop(datagrams_tx);
    let mut state = Driver {
        inbound,
        decoder: None,
        next_in: None,
        audio_out: None,
        out_clock: None,
        channel: None,
        connected: false,
        started: Instant::now(),
    };
    let reason = loop {
        let timeout = match state.drain(&mut peer) {
            Ok(Some(timeout)) => timeout,
            Ok(None) => break "disconnected",
            Err(error) => {
                tracing::warn!("webrtc peer failed: {error}");
                break "failed";
            }
        };
        if !state.connected && state.started.elapsed() > CONNECT_TIMEOUT {
            break "never connected";
        }
        let deadline = tokio::time::Instant::from_std(timeout.max(Instant::now()))
            .min(tokio::time::Instant::now() + Duration::from_secs(1));
        let input = tokio::select! {
            datagram = datagrams.recv() => match datagram {
                Some(datagram) => Some(datagram),
                None => break "sockets closed",
            },
            command = outbound.recv() => match command {
                Some(command) => {
                    if let Err(error) = state.send(&mut peer.rtc, command) {
                        tracing::debug!("webrtc send dropped: {error}");
                    }
                    None
                }
                None => {
                    // The session ended: say goodbye to the browser.
                    peer.rtc.disconnect();
                    let _ = state.drain(&mut peer);
                    break "session ended";
                }
            },
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let result = match input {
            Some(datagram) => match datagram.data.as_slice().try_into() {
                Ok(contents) => peer.rtc.handle_input(Input::Receive(
                    datagram.at,
                    Receive {
                        proto: Protocol::Udp,
                        source: datagram.source,
                        destination: datagram.destination,
                        contents,
                    },
                )),
                // Not STUN, DTLS, RTP or RTCP: ignore it.
                Err(_) => Ok(()),
            },
            None => peer.rtc.handle_input(Input::Timeout(Instant::now())),
        };
        if let Err(error) = result {
            tracing::warn!("webrtc input failed: {error}");
            break "failed";
        }
    };
    tracing::info!(reason, "webrtc peer ended");
    for reader in readers {
        reader.abort();
    }
    let _ = state.inbound.send(Inbound::PeerGone).await;
}

async fn read_socket(bound: Arc<Bound>, datagrams: mpsc::Sender<Datagram>) {
    let mut buffer = vec![0u8; 2048];
    loop {
        match bound.socket.recv_from(&mut buffer).await {
            Ok((length, source)) => {
                let datagram = Datagram {
                    source,
                    destination: bound.advertised,
                    data: buffer[..length].to_vec(),
                    at: Instant::now(),
                };
                if datagrams.send(datagram).await.is_err() {
                    return;
                }
            }
            // ICMP errors surface as failed reads on some systems: keep reading.
            Err(error) => tracing::debug!("webrtc socket read: {error}"),
        }
    }
}

/// The peer's state between `Rtc` calls.
struct Driver {
    inbound: mpsc::Sender<Inbound>,
    decoder: Option<OpusPacketDecoder>,
    /// RTP time the next incoming packet should carry (to see gaps).
    next_in: Option<u64>,
    /// The track the outgoing audio goes on, and its Opus payload type.
    audio_out: Option<(Mid, Pt)>,
    /// When outgoing RTP time 0 was, and the next packet's RTP time.
    out_clock: Option<(Instant, u64)>,
    channel: Option<ChannelId>,
    connected: bool,
    started: Instant,
}

impl Driver {
    /// Drains `poll_output`: transmits, events. `None` once the peer is gone.
    fn drain(&mut self, peer: &mut Peer) -> Result<Option<Instant>, str0m::RtcError> {
        loop {
            if !peer.rtc.is_alive() {
                return Ok(None);
            }
            match peer.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(Some(at)),
                Output::Transmit(transmit) => {
                    let bound = peer
                        .sockets
                        .iter()
                        .find(|bound| bound.advertised == transmit.source)
                        .or(peer.sockets.first());
                    if let Some(bound) = bound {
                        // UDP: a full buffer drops the datagram, as the network would.
                        let _ = bound
                            .socket
                            .try_send_to(&transmit.contents, transmit.destination);
                    }
                }
                Output::Event(event) => {
                    if !self.event(&mut peer.rtc, event) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Handles one event; `false` ends the peer.
    fn event(&mut self, rtc: &mut Rtc, event: Event) -> bool {
        match event {
            Event::Connected => {
                self.connected = true;
                tracing::info!("webrtc peer connected");
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                return false;
            }
            Event::MediaAdded(added)
                if added.kind == MediaKind::Audio
                    && added.direction.is_sending()
                    && self.audio_out.is_none() =>
            {
                let pt = rtc.writer(added.mid).and_then(|writer| {
                    writer
                        .payload_params()
                        .find(|params| params.spec().codec == Codec::Opus)
                        .map(|params| params.pt())
                });
                if let Some(pt) = pt {
                    self.audio_out = Some((added.mid, pt));
                }
            }
            Event::MediaData(data) => self.audio_in(data.time.numer(), &data.data),
            Event::ChannelOpen(id, label) => {
                tracing::debug!(label, "webrtc data channel open");
                self.channel.get_or_insert(id);
            }
            Event::ChannelData(data) => {
                if !data.binary
                    && let Ok(text) = String::from_utf8(data.data)
                {
                    // Text frames are few and small; a full inbox drops one.
                    let _ = self.inbound.try_send(Inbound::Text(text));
                }
            }
            Event::ChannelClose(id) if self.channel == Some(id) => self.channel = None,
            _ => {}
        }
        true
    }

    /// One incoming Opus packet: silence for any gap before it, then its samples.
    fn audio_in(&mut self, time: u64, packet: &[u8]) {
        let decoder = match &mut self.decoder {
            Some(decoder) => decoder,
            None => match OpusPacketDecoder::at_rate(1, 0, PCM_RATE) {
                Ok(decoder) => self.decoder.insert(decoder),
                Err(error) => {
                    tracing::warn!("opus decoder: {error}");
                    return;
                }
            },
        };
        let mut pcm = Vec::new();
        if let Some(expected) = self.next_in
            && time > expected
        {
            let gap = ((time - expected).min(MAX_GAP) / RTP_PER_PCM) as usize;
            pcm.resize(gap * 2, 0);
        }
        // A late or duplicate packet (before `expected`) still plays: the
        // depacketizer already dropped true duplicates.
        match decoder.decode(packet) {
            Ok(samples) => {
                self.next_in = Some(time + samples.len() as u64 * RTP_PER_PCM);
                pcm.extend(samples.iter().flat_map(|sample| {
                    ((sample.clamp(-1.0, 1.0) * 32_767.0) as i16).to_le_bytes()
                }));
            }
            Err(error) => tracing::debug!("opus packet dropped: {error}"),
        }
        if pcm.is_empty() {
            return;
        }
        if self.inbound.try_send(Inbound::Audio(pcm)).is_err() {
            metrics::counter!("scaigrid_webrtc_audio_dropped_total").increment(1);
        }
    }

    /// One thing the session sends: an Opus packet on the track, or data-channel text.
    fn send(&mut self, rtc: &mut Rtc, outbound: Outbound) -> Result<(), str0m::RtcError> {
        match outbound {
            Outbound::Audio(packet) => {
                let Some((mid, pt)) = self.audio_out else {
                    return Ok(());
                };
                let now = Instant::now();
                let (origin, next) = *self.out_clock.get_or_insert((now, 0));
                let wall = (now - origin).as_micros() as u64 * RATE / 1_000_000;
                // A pause (between sentences, after barge-in) moves RTP time on with
                // the clock; back-to-back packets stay exactly a frame apart.
                let at = if wall > next + RESYNC { wall } else { next };
                self.out_clock = Some((origin, at + FRAME));
                if let Some(writer) = rtc.writer(mid) {
                    writer.write(
                        pt,
                        now,
                        MediaTime::new(at, Frequency::FORTY_EIGHT_KHZ),
                        packet,
                    )?;
                }
            }
            Outbound::Text(text) => {
                if let Some(mut channel) = self.channel.and_then(|id| rtc.channel(id)) {
                    channel.write(false, text.as_bytes())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn offer() -> String {
        use str0m::media::{Direction, MediaKind};
        let mut rtc = Rtc::new(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        change.apply().unwrap().0.to_sdp_string()
    }

    #[test]
    fn an_audio_offer_is_answered_with_the_candidates_given() {
        let offer = parse_offer(&offer()).unwrap();
        let candidate: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let (_rtc, answer) = answer(offer, &[candidate], Instant::now()).unwrap();
        assert!(answer.contains("m=audio"), "{answer}");
        assert!(answer.contains("192.0.2.7 40000"), "{answer}");
        assert!(answer.contains("opus/48000/2"), "{answer}");
    }

    #[test]
    fn offers_without_audio_or_unparseable_are_invalid_requests() {
        for bad in [
            "",
            "v=0\r\n",
            "m=audio garbage",
            &offer().replace("v=0", "v=x"),
        ] {
            let error = parse_offer(bad).unwrap_err();
            assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{bad:?}");
        }
    }
}
