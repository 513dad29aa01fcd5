//! Object storage behind one trait: the local folder (embedded default) or S3.
//!
//! Every key is namespaced by tenant through [`ObjectKey`], whose constructor is the one
//! place that decides what a key may contain: no `..`, no absolute paths, no control
//! characters, so no key can leave its tenant's namespace on any backend.

pub mod local;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    #[error("object not found")]
    NotFound,
    #[error("object store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Backend(String),
}

impl StoreError {
    /// The API error of a store failure while doing `what`: a missing object is 404; a
    /// store that cannot be reached (S3 down, a failing disk) is 503
    /// `SERVICE_UNAVAILABLE` naming `object_store`, so clients retry.
    pub fn api(self, what: &str) -> crate::error::ApiError {
        use crate::error::{ApiError, ErrorCode};
        match self {
            StoreError::NotFound => ApiError::not_found(what),
            StoreError::InvalidKey(_) => ApiError::internal(format_args!("{what}: {self}")),
            StoreError::Io(_) | StoreError::Backend(_) => {
                tracing::warn!(error = %self, what, "object store unavailable");
                ApiError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    format!("object store unavailable ({what})"),
                )
                .with_field("dependency", "object_store")
            }
        }
    }
}

/// An object's bytes as they arrive (or as they are produced, for uploads).
pub type ByteChunks =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A tenant-scoped object key. Fields are private: the only way to get one is
/// [`ObjectKey::new`], which validates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    tenant_id: String,
    path: String,
}

const MAX_KEY_LEN: usize = 1024;

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.len() <= 255
        && !segment
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '/')
}

impl ObjectKey {
    /// `path` is `/`-separated; each segment must be a plain name.
    pub fn new(tenant_id: &str, path: &str) -> Result<ObjectKey, StoreError> {
        if !valid_segment(tenant_id) || tenant_id.starts_with('.') {
            return Err(StoreError::InvalidKey(format!(
                "bad tenant id `{tenant_id}`"
            )));
        }
        if path.is_empty() || path.len() > MAX_KEY_LEN || !path.split('/').all(valid_segment) {
            return Err(StoreError::InvalidKey(format!("bad path `{path}`")));
        }
        Ok(ObjectKey {
            tenant_id: tenant_id.to_owned(),
            path: path.to_owned(),
        })
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes the object whole (readers never see a partial object).
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StoreError>;
    /// Writes the object from a stream without holding it whole (readers never see a
    /// partial object either).
    async fn put_stream(&self, key: &ObjectKey, chunks: ByteChunks) -> Result<(), StoreError>;
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError>;
    /// Reads the object as it arrives.
    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteChunks, StoreError>;
    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError>;
    /// Returns whether the object existed.
    async fn delete(&self, key: &ObjectKey) -> Result<bool, StoreError>;
    /// Paths (relative to the tenant) under `prefix`, sorted.
    async fn list(&self, tenant_id: &str, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Readiness: can we write, read back and delete a probe object?
    async fn check(&self) -> Result<(), String>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// What every store must do with streams: a multi-chunk upload reads back equal,
    /// through `get` and `get_stream`, and a failing upload leaves nothing behind.
    pub(crate) async fn streams_round_trip(store: &dyn ObjectStore) {
        let key = ObjectKey::new("ten_s", "big/blob.bin").unwrap();
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let chunks: Vec<Result<Bytes, StoreError>> =
            (0..3).map(|_| Ok(Bytes::from(chunk.clone()))).collect();
        store
            .put_stream(&key, Box::pin(futures_util::stream::iter(chunks)))
            .await
            .unwrap();
        let whole = store.get(&key).await.unwrap();
        assert_eq!(whole.len(), 3 << 20);
        let mut streamed = Vec::new();
        let mut stream = store.get_stream(&key).await.unwrap();
        while let Some(part) = stream.next().await {
            streamed.extend_from_slice(&part.unwrap());
        }
        assert_eq!(streamed, whole);
        let failing = ObjectKey::new("ten_s", "big/failed.bin").unwrap();
        let chunks: Vec<Result<Bytes, StoreError>> = vec![
            Ok(Bytes::from(chunk.clone())),
            Err(StoreError::Backend("client went away".into())),
        ];
        assert!(
            store
                .put_stream(&failing, Box::pin(futures_util::stream::iter(chunks)))
                .await
                .is_err()
        );
        assert!(!store.exists(&failing).await.unwrap());
        assert!(matches!(
            store.get_stream(&failing).await.err(),
            Some(StoreError::NotFound)
        ));
        assert_eq!(
            store.list("ten_s", "big/").await.unwrap(),
            vec!["big/blob.bin"]
        );
    }

    #[test]
    fn store_failures_map_to_their_codes() {
        use crate::error::ErrorCode;
        let down = StoreError::Backend("connection refused".into()).api("staged audio");
        assert_eq!(down.code, ErrorCode::SERVICE_UNAVAILABLE);
        assert!(!down.message.contains("refused"), "detail stays in the log");
        let missing = StoreError::NotFound.api("job audio");
        assert_eq!(missing.code, ErrorCode::NOT_FOUND);
        let bad = StoreError::InvalidKey("x".into()).api("key");
        assert_eq!(bad.code, ErrorCode::INTERNAL_ERROR);
    }

    #[test]
    fn keys_cannot_escape_their_tenant() {
        for bad in [
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a\\..\\b",
            "x\0y",
            "",
        ] {
            assert!(ObjectKey::new("ten_1", bad).is_err(), "{bad:?} accepted");
        }
        assert!(ObjectKey::new("..", "a").is_err());
        assert!(ObjectKey::new("a/b", "a").is_err());
        assert!(ObjectKey::new("ten_1", "voices/v1/reference.wav").is_ok());
    }
}
