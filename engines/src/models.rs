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

    /// The folder the models are installed in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `$SCAIGRID_MODELS_DIR`, else `models/cache` of the repository the running test or
    /// bench belongs to (found from the runtime `CARGO_MANIFEST_DIR` upwards: a binary
    /// built in another clone sharing the target folder carries that clone's
    /// compile-time path), else of the repository this crate was compiled in.
    pub fn from_env() -> ModelDir {
        if let Some(dir) = std::env::var_os("SCAIGRID_MODELS_DIR") {
            return ModelDir::new(dir);
        }
        let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let start = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let root = start
            .iter()
            .flat_map(|dir| dir.ancestors())
            .find(|dir| dir.join("models/manifest.toml").is_file())
            .map_or(compiled, Path::to_path_buf);
        ModelDir::new(root.join("models/cache"))
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
}
