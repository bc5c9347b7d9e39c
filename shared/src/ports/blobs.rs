//! The blob port: where uploaded files live (S3 in AWS, a folder locally), read as a
//! stream from any byte offset so an import can continue where it stopped.

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::io::AsyncRead;
use utoipa::ToSchema;

/// A stream of an object's bytes.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;
/// A stream of chunks to store.
pub type BlobBody = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the object does not exist")]
    NotFound,
    #[error("the object is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the blob store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BlobError {
    pub fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BlobError::Unavailable(e.into())
    }
}

pub type BlobResult<T> = Result<T, BlobError>;

/// Where and how a client uploads a file straight to the blob store: an HTML form
/// POST (`multipart/form-data`) of `fields` and then the file as the `file` field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadForm {
    pub url: String,
    pub fields: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// The object's size, `None` when it does not exist.
    async fn size(&self, key: &str) -> BlobResult<Option<u64>>;

    /// The object's bytes from `offset` to the end (empty past the end).
    async fn read_from(&self, key: &str, offset: u64) -> BlobResult<BlobReader>;

    /// Stores an object from a stream, failing with `TooLarge` past `max` bytes (then
    /// nothing is stored). Returns its size.
    async fn put(&self, key: &str, body: BlobBody, max: u64) -> BlobResult<u64>;

    async fn delete(&self, key: &str) -> BlobResult<()>;

    /// A presigned form for uploading `key` directly (at most `max` bytes), or `None`
    /// when this store takes uploads only through the API (the local folder).
    async fn upload_form(&self, key: &str, max: u64) -> BlobResult<Option<UploadForm>>;
}
