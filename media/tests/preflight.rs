//! Preflight on clips made to trip each check, and on a clean one.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod fixtures;

use media::preflight::{Thresholds, analyse};
use media::vad::EnergyVad;
use media::{DecodeOptions, decode};

fn preflight(name: &str) -> media::preflight::Preflight {
    let audio = decode(&fixtures::read(name), &DecodeOptions::default()).unwrap();
    analyse(&audio, &Thresholds::default(), &mut EnergyVad::default()).unwrap()
}

#[test]
fn a_clean_clip_passes() {
    let report = preflight("clean_8s.wav");
    assert!(report.passed, "{report:#?}");
    assert!(report.fail_reasons.is_empty());
    assert!((report.metrics.duration_seconds - 8.0).abs() < 0.01);
    assert!(report.metrics.voice_activity_ratio > 0.5, "{report:#?}");
}

#[test]
fn each_reason_on_the_clip_made_to_trigger_it() {
    for (name, reason) in [
        ("short_3s.wav", "duration_below_minimum"),
        ("long_30s.opus", "duration_above_maximum"),
        ("silent_8s.wav", "low_voice_activity_ratio"),
        ("clipped_8s.wav", "peak_dbfs_above_threshold"),
        ("noisy_8s.wav", "snr_below_threshold"),
        ("lowrate_8k_8s.wav", "sample_rate_below_minimum"),
    ] {
        let report = preflight(name);
        assert!(!report.passed, "{name} passed: {report:#?}");
        assert!(
            report.fail_reasons.contains(&reason),
            "{name}: {:?} lacks {reason}: {:#?}",
            report.fail_reasons,
            report.metrics
        );
    }
}

#[test]
fn only_the_intended_reason_where_the_clip_is_otherwise_clean() {
    for (name, reason) in [
        ("short_3s.wav", "duration_below_minimum"),
        ("long_30s.opus", "duration_above_maximum"),
        ("clipped_8s.wav", "peak_dbfs_above_threshold"),
        ("noisy_8s.wav", "snr_below_threshold"),
        ("lowrate_8k_8s.wav", "sample_rate_below_minimum"),
    ] {
        assert_eq!(preflight(name).fail_reasons, vec![reason], "{name}");
    }
}
