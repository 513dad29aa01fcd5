//! The S3 object store (AWS or any S3-compatible server): objects at
//! `<prefix>tenants/<tenant_id>/<path>` in one bucket, the same layout as the local
//! folder.
//!
//! Large objects never sit in memory twice: [`ObjectStore::put`] of more than
//! [`PART_BYTES`] goes up as a multipart upload of zero-copy slices, `put_stream` sends
//! parts as they fill, and `get_stream` hands out the body as it arrives.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{ByteChunks, ObjectKey, ObjectStore, StoreError};
use crate::config::S3Config;

/// Size of every part of a multipart upload but the last (S3's minimum is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

impl S3Store {
    /// Builds the client (credentials from the config or the standard AWS chain) and,
    /// when asked to, creates the bucket.
    pub async fn open(config: &S3Config) -> anyhow::Result<S3Store> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "scaigrid-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.path_style);
        if shared.region().is_none() {
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let store = S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
        };
        if config.create_bucket {
            store.create_bucket().await?;
        }
        Ok(store)
    }

    async fn create_bucket(&self) -> anyhow::Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                let service = error.as_service_error();
                if service.is_some_and(|e| {
                    e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                }) {
                    return Ok(());
                }
                anyhow::bail!(
                    "creating bucket {}: {}",
                    self.bucket,
                    crate::error::chain(&error)
                )
            }
        }
    }

    fn tenant_prefix(&self, tenant_id: &str) -> String {
        format!("{}tenants/{tenant_id}/", self.prefix)
    }

    fn object(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.tenant_prefix(key.tenant_id()), key.path())
    }

    /// Uploads `parts` (each at least 5 MiB but the last) as one multipart object; the
    /// upload is aborted if any part fails.
    async fn multipart(
        &self,
        object: &str,
        mut next_part: impl FnMut() -> futures_util::future::BoxFuture<
            'static,
            Result<Option<Bytes>, StoreError>,
        > + Send,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| backend(crate::error::chain(&e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| backend("multipart upload without an id"))?
            .to_owned();
        let uploaded = async {
            let mut parts = Vec::new();
            while let Some(chunk) = next_part().await? {
                let number = parts.len() as i32 + 1;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(object)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(chunk))
                    .send()
                    .await
                    .map_err(|e| backend(crate::error::chain(&e)))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| backend(crate::error::chain(&e)))?;
            Ok(())
        }
        .await;
        if uploaded.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        uploaded
    }

    async fn put_small(&self, object: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(object)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| backend(crate::error::chain(&e)))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StoreError> {
        let object = self.object(key);
        if bytes.len() <= 2 * PART_BYTES {
            return self.put_small(&object, bytes).await;
        }
        let mut offset = 0;
        self.multipart(&object, move || {
            let part = (offset < bytes.len()).then(|| {
                let end = (offset + PART_BYTES).min(bytes.len());
                let part = bytes.slice(offset..end);
                offset = end;
                part
            });
            Box::pin(async move { Ok(part) })
        })
        .await
    }

    async fn put_stream(&self, key: &ObjectKey, mut chunks: ByteChunks) -> Result<(), StoreError> {
        let object = self.object(key);
        // The first part decides: a stream that ends within it is a plain upload.
        let mut first = BytesMut::new();
        while first.len() < PART_BYTES {
            match chunks.next().await {
                Some(chunk) => first.extend_from_slice(&chunk?),
                None => return self.put_small(&object, first.freeze()).await,
            }
        }
        let chunks = std::sync::Arc::new(tokio::sync::Mutex::new((chunks, Some(first))));
        self.multipart(&object, move || {
            let chunks = chunks.clone();
            Box::pin(async move {
                let mut guard = chunks.lock().await;
                let (stream, carry) = &mut *guard;
                let mut part = carry.take().unwrap_or_default();
                while part.len() < PART_BYTES {
                    match stream.next().await {
                        Some(chunk) => part.extend_from_slice(&chunk?),
                        None => break,
                    }
                }
                Ok((!part.is_empty()).then(|| part.freeze()))
            })
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let mut chunks = self.get_stream(key).await?;
        let mut out = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ByteChunks, StoreError> {
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(e) if e.is_no_such_key() => StoreError::NotFound,
                _ => backend(crate::error::chain(&error)),
            })?;
        let body = response.body;
        Ok(Box::pin(futures_util::stream::unfold(
            body,
            |mut body| async move {
                let chunk = body.next().await?;
                Some((chunk.map_err(|e| backend(crate::error::chain(&e))), body))
            },
        )))
    }

    async fn exists(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(error) => Err(backend(crate::error::chain(&error))),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        // S3 deletes answer the same whether the object was there: ask first.
        if !self.exists(key).await? {
            return Ok(false);
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map_err(|e| backend(crate::error::chain(&e)))?;
        Ok(true)
    }

    async fn list(&self, tenant_id: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        ObjectKey::new(tenant_id, "probe")?;
        let base = self.tenant_prefix(tenant_id);
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{base}{prefix}"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend(crate::error::chain(&e)))?;
            for object in page.contents() {
                if let Some(relative) = object.key().and_then(|k| k.strip_prefix(&base)) {
                    out.push(relative.to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn check(&self) -> Result<(), String> {
        let probe = format!("{}.ready/{}", self.prefix, uuid::Uuid::now_v7().simple());
        let result = async {
            self.put_small(&probe, Bytes::from_static(b"ok")).await?;
            let back = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&probe)
                .send()
                .await
                .map_err(|e| backend(crate::error::chain(&e)))?
                .body
                .collect()
                .await
                .map_err(|e| backend(crate::error::chain(&e)))?
                .into_bytes();
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&probe)
                .send()
                .await
                .map_err(|e| backend(crate::error::chain(&e)))?;
            match back.as_ref() == b"ok" {
                true => Ok(()),
                false => Err(backend("probe read back differently")),
            }
        }
        .await;
        result.map_err(|error: StoreError| format!("bucket {}: {error}", self.bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    async fn store() -> Option<S3Store> {
        let endpoint = crate::test_support::service("s3", "SCAIGRID_TEST_S3_ENDPOINT")?;
        let config = S3Config {
            bucket: format!("unit{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            path_style: true,
            prefix: "p/".into(),
            access_key_id: Some("test".into()),
            secret_access_key: Some(Secret::new("test")),
            create_bucket: true,
        };
        Some(S3Store::open(&config).await.unwrap())
    }

    #[tokio::test]
    async fn objects_stream_and_go_up_in_parts_per_tenant() {
        let Some(store) = store().await else { return };
        store.check().await.unwrap();
        crate::store::tests::streams_round_trip(&store).await;

        // Over two parts: a multipart upload of zero-copy slices.
        let big: Bytes = (0..(2 * PART_BYTES + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let key = ObjectKey::new("ten_a", "audio/big.wav").unwrap();
        store.put(&key, big.clone()).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), big);

        // A stream longer than one part goes up as it arrives.
        let streamed = ObjectKey::new("ten_a", "audio/streamed.wav").unwrap();
        let chunks: Vec<Result<Bytes, StoreError>> = big
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        store
            .put_stream(&streamed, Box::pin(futures_util::stream::iter(chunks)))
            .await
            .unwrap();
        assert_eq!(store.get(&streamed).await.unwrap(), big);

        // Tenants do not see each other's objects.
        assert!(store.list("ten_b", "").await.unwrap().is_empty());
        let other = ObjectKey::new("ten_b", "audio/big.wav").unwrap();
        assert!(!store.exists(&other).await.unwrap());
        assert!(matches!(store.get(&other).await, Err(StoreError::NotFound)));
        assert_eq!(
            store.list("ten_a", "audio/").await.unwrap(),
            vec!["audio/big.wav", "audio/streamed.wav"]
        );
        assert!(store.delete(&key).await.unwrap());
        assert!(!store.delete(&key).await.unwrap());
    }
}
