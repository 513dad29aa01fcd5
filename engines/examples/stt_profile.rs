use engines::models::ModelDir;
use engines::silero::SileroVad;
use engines::whisper::{Options, Whisper, mel::LogMel};
use engines::{Device, Runtime, RuntimeConfig};
use std::time::Instant;
fn main() {
    let models = ModelDir::from_env();
    let runtime = Runtime::init(RuntimeConfig {
        library: models.onnxruntime_library().unwrap(),
        device: Device::Cpu,
        intra_threads: 1,
    })
    .unwrap();
    let bytes = std::fs::read(models.file("x", "test-audio/two_cities.wav").unwrap()).unwrap();
    let audio = media::decode(&bytes, &media::DecodeOptions::default()).unwrap();
    let long = media::resample::to_mono(&audio, 16_000).unwrap();
    let vad = SileroVad::load(&runtime, &models).unwrap();
    let whisper = Whisper::load(&runtime, &models).unwrap();
    let t = Instant::now();
    let p = vad.probabilities(&long).unwrap();
    println!("vad {:?} {}", t.elapsed(), p.len());
    let mel = LogMel::new();
    let t = Instant::now();
    let m = mel.window(&long[..480000]);
    println!("mel {:?} {}", t.elapsed(), m.len());
    for _ in 0..3 {
        let t = Instant::now();
        let tr = whisper
            .transcribe(&vad, &long, &Options::default())
            .unwrap();
        println!("total {:?} {}", t.elapsed(), tr.segments.len());
    }
    let w: Vec<&[f32]> = vec![&long[..480000], &long[480000..]];
    let t = Instant::now();
    let r = whisper.transcribe_windows(&w, &Options::default()).unwrap();
    println!(
        "2 windows {:?} tokens {} {}",
        t.elapsed(),
        r[0].tokens.len(),
        r[1].tokens.len()
    );
    let t = Instant::now();
    let r = whisper
        .transcribe_windows(&w[..1], &Options::default())
        .unwrap();
    println!("1 window {:?} tokens {}", t.elapsed(), r[0].tokens.len());
    let t = Instant::now();
    let r = whisper
        .transcribe_windows(
            &w[..1],
            &Options {
                timestamps: false,
                ..Options::default()
            },
        )
        .unwrap();
    println!(
        "1 window no ts {:?} tokens {}",
        t.elapsed(),
        r[0].tokens.len()
    );
}
