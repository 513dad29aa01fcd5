//! The local-folder object store: `<root>/tenants/<tenant_id>/<path>`.
//!
//! Writes go to a temporary file beside the target and are renamed into place, so a
//! crash never leaves a half-written object under its real name.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ByteChunks, ObjectKey, ObjectStore, StoreError};

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Creates the root folder if needed.
    pub fn open(root: &Path) -> std::io::Result<LocalStore> {
        std::fs::create_dir_all(root.join("tenants"))?;
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn tenant_dir(&self, tenant_id: &str) -> PathBuf {
        self.root.join("tenants").join(tenant_id)
    }

    fn file(&self, key: &ObjectKey) -> PathBuf {
        self.tenant_dir(key.tenant_id()).join(key.path())
    }
}

fn not_found_as(error: std::io::Error) -> StoreError {
    if error.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(error)
    }
}

/// Chunk size of streamed reads.
const READ_CHUNK: usize = 256 * 1024;

impl LocalStore {
    /// Writes `chunks` to a temporary file beside the target, then renames it into place.
    async fn write_atomically(
        &self,
        key: &ObjectKey,
        mut chunks: ByteChunks,
    ) -> Result<(), StoreError> {
        let target = self.file(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let temporary = target.with_file_name(format!(
            ".{}.tmp-{}",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object"),
            uuid::Uuid::now_v7().simple()
        ));
        let written = async {
            let mut file = tokio::fs::File::create(&temporary).await?;
            while let Some(chunk) = chunks.next().await {
                file.write_all(&chunk?).await?;
            }
            file.flush().await?;
            drop(file);
            tokio::fs::rename(&temporary, &target).await?;
            Ok(())
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temporary).await;
        }
        written
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StoreError> {
        let once = futures_util::stream::once(async move { Ok(bytes) });
        self.write_atomically(key, Box::pin(once)).await
    }

    async fn put_stream(&self, key: &ObjectKey, chunks: ByteChunks) -> Result<(), StoreError> {
        self.write_atomically(key, chunks).await
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteChunks, StoreError> {
        let file = tokio::fs::File::open(self.file(key))
            .await
            .map_err(not_found_as)?;
        Ok(Box::pin(futures_util::stream::unfold(
            Some(file),
            |file| async move {
                let mut file = file?;
                let mut buffer = vec![0u8; READ_CHUNK];
                match file.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        Some((Ok(Bytes::from(buffer)), Some(file)))
                    }
                    Err(error) => Some((Err(StoreError::Io(error)), None)),
                }
            },
        )))
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        tokio::fs::read(self.file(key))
            .await
            .map(Bytes::from)
            .map_err(not_found_as)
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        Ok(tokio::fs::try_exists(self.file(key)).await?)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        match tokio::fs::remove_file(self.file(key)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn list(&self, tenant_id: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Validates the tenant id the same way keys are validated.
        ObjectKey::new(tenant_id, "probe")?;
        let base = self.tenant_dir(tenant_id);
        let mut out = Vec::new();
        let mut pending = vec![base.clone()];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let path = entry.path();
                if entry.file_type().await?.is_dir() {
                    pending.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(&base) else {
                    continue;
                };
                let relative = relative.to_string_lossy().into_owned();
                let hidden = relative
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with('.'));
                if !hidden && relative.starts_with(prefix) {
                    out.push(relative);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn check(&self) -> Result<(), String> {
        let probe = self
            .root
            .join(format!(".ready-{}", uuid::Uuid::now_v7().simple()));
        let result = async {
            tokio::fs::write(&probe, b"ok").await?;
            let back = tokio::fs::read(&probe).await?;
            tokio::fs::remove_file(&probe).await?;
            if back != b"ok" {
                return Err(std::io::Error::other("probe read back differently"));
            }
            Ok(())
        }
        .await;
        result.map_err(|error| format!("{}: {error}", self.root.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let a = ObjectKey::new("ten_a", "voices/v1.wav").unwrap();
        let b = ObjectKey::new("ten_b", "voices/v1.wav").unwrap();
        store.put(&a, Bytes::from_static(b"alpha")).await.unwrap();
        store.put(&b, Bytes::from_static(b"beta")).await.unwrap();
        assert_eq!(store.get(&a).await.unwrap(), Bytes::from_static(b"alpha"));
        assert_eq!(store.get(&b).await.unwrap(), Bytes::from_static(b"beta"));
        assert_eq!(
            store.list("ten_a", "voices/").await.unwrap(),
            vec!["voices/v1.wav"]
        );
        assert!(store.delete(&a).await.unwrap());
        assert!(!store.delete(&a).await.unwrap());
        assert!(matches!(store.get(&a).await, Err(StoreError::NotFound)));
        assert!(store.exists(&b).await.unwrap());
        store.check().await.unwrap();
        super::super::tests::streams_round_trip(&store).await;
    }
}
