//! The engines on a GPU: a node on `cuda:0` loads its models against the GPU's free
//! memory, transcribes and speaks, and refuses a model over its limit with the
//! figures. Runs only where `nvidia-smi` lists a GPU and the models folder holds an
//! onnxruntime-gpu build of `libonnxruntime.so`; anywhere else it says loudly that
//! it was skipped and why (every CPU machine, CI included).
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod common;

use engines::node::{Node, NodeConfig, memory_mb};
use engines::whisper::Options;
use engines::{Device, EngineError, Runtime, RuntimeConfig};

const GPU: Device = Device::Cuda { device_id: 0 };

/// Why this machine cannot run the GPU test, if it cannot.
fn no_gpu() -> Option<String> {
    let listed = std::process::Command::new("nvidia-smi")
        .arg("--list-gpus")
        .output()
        .ok()
        .filter(|out| out.status.success() && !out.stdout.is_empty());
    if listed.is_none() {
        return Some("no GPU: `nvidia-smi --list-gpus` lists none".into());
    }
    let library = common::models().onnxruntime_library().ok()?;
    match Runtime::init(RuntimeConfig {
        library,
        device: GPU,
        intra_threads: 1,
    }) {
        Ok(_) => None,
        Err(error) => Some(format!(
            "a GPU, but no CUDA build of ONNX Runtime in the models folder ({error})"
        )),
    }
}

fn gpu_node(memory_limit_mb: u64) -> Node {
    Node::load(&NodeConfig {
        node_id: "gpu".into(),
        models_dir: common::models().root().to_path_buf(),
        device: GPU,
        intra_threads: 1,
        models: vec![
            engines::whisper::ENGINE_ID.into(),
            engines::piper::ENGINE_ID.into(),
        ],
        memory_limit_mb,
        phonemizer: common::phonemizer(),
    })
}

#[test]
fn a_gpu_node_transcribes_speaks_and_admits_models_by_free_memory() {
    if let Some(why) = no_gpu() {
        eprintln!("##########################################################");
        eprintln!("# GPU TEST SKIPPED: {why}");
        eprintln!("##########################################################");
        return;
    }
    let node = gpu_node(0);
    assert_eq!(node.info().device, "cuda:0");
    assert_eq!(node.info().status, "online", "{:?}", node.info().failures);
    assert!(node.available_mb() > 0);
    let (vad, whisper) = (node.vad.as_ref().unwrap(), node.whisper.as_ref().unwrap());
    let speech = common::test_audio("beckett.wav");
    let heard = whisper
        .transcribe(vad, &speech, &Options::default())
        .unwrap();
    let lower = heard.text.to_lowercase();
    assert!(
        lower.contains("tried") && lower.contains("failed"),
        "{lower}"
    );
    let spoken = node
        .tts
        .as_ref()
        .unwrap()
        .synthesize("On the GPU.", 1.0)
        .unwrap();
    assert!(spoken.len() > 10_000);

    // Within a limit that holds what is loaded and little more, Whisper base is refused.
    let loaded = node.info().memory_mb;
    let tight = gpu_node(loaded + 10);
    match tight.with_model(engines::whisper::BASE_ENGINE_ID) {
        Err(EngineError::ModelTooLarge {
            needed_mb,
            available_mb,
            ..
        }) => {
            assert_eq!(needed_mb, memory_mb(engines::whisper::BASE_ENGINE_ID));
            assert!(available_mb <= 10);
        }
        other => panic!("{:?}", other.map(|n| n.info().clone())),
    }
    let roomy = node.with_model(engines::whisper::BASE_ENGINE_ID).unwrap();
    assert!(roomy.whisper_multilingual.is_some());
}
