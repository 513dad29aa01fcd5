//! What routing a call to an inference node costs: the same transcription through the
//! edge's `Dispatcher` to a node served in this process (over a Unix socket and over
//! loopback TCP: pick a node, encode the PCM, gRPC, the node's checks, decode the
//! reply) and on the engines directly (the node's own speech-to-text dispatcher, no
//! wire). The difference per call is the routing overhead; one second of silence
//! (the voice activity detector only: the overhead is most of it) and a 3 s utterance
//! (Whisper runs: what the overhead is worth on real work).
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use engines::whisper::Options;
use media::{DecodeOptions, decode, resample};
use scaigrid::config::{Config, Overrides};
use scaigrid::inference::pool::Dispatcher;
use scaigrid::inference::serve::{NodeOptions, load, run};
use scaigrid::inference::stt::Stt;
use scaigrid::inference::token::Bearer;
use scaigrid::inference::{Address, max_message_bytes};

fn english() -> Options {
    Options {
        language: Some("en".into()),
        ..Options::default()
    }
}

/// A node serving speech to text at `address`, in this process, for the bench's life.
fn serve(runtime: &tokio::runtime::Runtime, config: &Config, address: Address) {
    let options = NodeOptions {
        address,
        engines: config.engines.clone(),
        max_message_bytes: max_message_bytes(config.limits.max_audio_seconds),
        supervised: false,
        registry: None,
    };
    runtime.spawn(async move {
        run(options, std::future::pending()).await.unwrap();
    });
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = Config::load(None, &Overrides::default()).unwrap();
    config.engines.models = Some(vec![engines::whisper::ENGINE_ID.to_owned()]);
    config.engines.node_token = None;

    let dir = tempfile::tempdir().unwrap();
    let socket = Address::Unix(dir.path().join("node.sock"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = Address::Tcp(format!("127.0.0.1:{port}"));
    serve(&runtime, &config, socket.clone());
    serve(&runtime, &config, tcp.clone());
    let routes: Vec<(&str, Arc<Dispatcher>)> = [("unix", socket), ("tcp", tcp)]
        .into_iter()
        .map(|(name, address)| {
            let nodes = vec![(format!("bench-{name}"), address)];
            let dispatcher = runtime.block_on(async {
                let dispatcher = Arc::new(Dispatcher::new(nodes, Bearer::new(None)?)?);
                dispatcher.spawn_probes();
                anyhow::ensure!(
                    dispatcher.wait_all_ready(Duration::from_secs(120)).await,
                    "the node did not come up: {:?}",
                    dispatcher.problems()
                );
                Ok(dispatcher)
            });
            (name, dispatcher.unwrap())
        })
        .collect();
    let node = runtime.block_on(load(&config.engines, false)).unwrap();
    let direct = runtime
        .block_on(async { Stt::start(Arc::new(node), 16) })
        .unwrap()
        .expect("speech to text loaded");

    let models = engines::models::ModelDir::from_env();
    let path = models
        .file("test.speech.beckett", "test-audio/beckett.wav")
        .unwrap();
    let audio = decode(&std::fs::read(path).unwrap(), &DecodeOptions::default()).unwrap();
    let speech = resample::to_mono(&audio, 16_000).unwrap();
    let inputs = [
        ("silence_1s", Arc::new(vec![0.0f32; 16_000])),
        ("utterance_3s", Arc::new(speech[..48_000].to_vec())),
    ];

    for (input, samples) in &inputs {
        let mut group = c.benchmark_group(format!("route/{input}"));
        group.sample_size(30);
        group.bench_function("direct", |b| {
            b.iter(|| runtime.block_on(direct.transcribe(samples.clone(), english())))
        });
        for (name, dispatcher) in &routes {
            group.bench_function(*name, |b| {
                b.iter(|| runtime.block_on(dispatcher.transcribe(samples.clone(), english())))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
