//! Where `models/fetch` installs each model (the `install_as` paths of
//! `models/manifest.toml`), below one models folder.

use std::path::{Path, PathBuf};

use crate::error::{EngineError, EngineResult};

#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    pub fn new(root: impl Into<PathBuf>) -> ModelDir {
        ModelDir { root: root.into() }
    }

    /// `$SCAIGRID_MODELS_DIR`, else `models/cache` of this repository.
    pub fn from_env() -> ModelDir {
        match std::env::var_os("SCAIGRID_MODELS_DIR") {
            Some(dir) => ModelDir::new(dir),
            None => ModelDir::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cache")),
        }
    }

    /// An installed file, or `ModelUnavailable` naming the fetch command.
    pub fn file(&self, id: &str, relative: &str) -> EngineResult<PathBuf> {
        let path = self.root.join(relative);
        if path.is_file() {
            Ok(path)
        } else {
            Err(EngineError::ModelUnavailable {
                id: id.to_owned(),
                reason: format!("{} is missing; run `models/fetch`", path.display()),
            })
        }
    }

    pub fn onnxruntime_library(&self) -> EngineResult<PathBuf> {
        self.file("onnxruntime", "onnxruntime/libonnxruntime.so")
    }

    pub fn silero_vad(&self) -> EngineResult<PathBuf> {
        self.file(crate::silero::ENGINE_ID, "silero-vad/silero_vad.onnx")
    }

    pub fn silero_vad_sequence(&self) -> EngineResult<PathBuf> {
        self.file(
            crate::silero::ENGINE_ID,
            "silero-vad/silero_vad_16k_sequence.onnx",
        )
    }
}
