//! Blobs in a local folder (the runner's `$MAILPILOT_DATA/uploads`). A file is written
//! under a temporary name and renamed when complete, so a reader never sees half of it.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::ports::blobs::{BlobBody, BlobError, BlobReader, BlobResult, Blobs, UploadForm};

pub struct FileBlobs {
    root: PathBuf,
}

impl FileBlobs {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// Keys are built by the use cases (`imports/<ws>/<id>`), never taken from users;
    /// anything but `[A-Za-z0-9_/-]` is refused all the same.
    fn path(&self, key: &str) -> BlobResult<PathBuf> {
        let ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b))
            && !key.split('/').any(|s| s.is_empty());
        if !ok {
            return Err(BlobError::unavailable(format!("bad blob key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl Blobs for FileBlobs {
    async fn size(&self, key: &str) -> BlobResult<Option<u64>> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::unavailable(e)),
        }
    }

    async fn read_from(&self, key: &str, offset: u64) -> BlobResult<BlobReader> {
        let mut f = match tokio::fs::File::open(self.path(key)?).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(BlobError::unavailable(e)),
        };
        f.seek(SeekFrom::Start(offset))
            .await
            .map_err(BlobError::unavailable)?;
        Ok(Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, f)))
    }

    async fn put(&self, key: &str, mut body: BlobBody, max: u64) -> BlobResult<u64> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(BlobError::unavailable)?;
        }
        let tmp = path.with_extension(format!("part-{}", std::process::id()));
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(BlobError::unavailable)?;
        let mut size = 0u64;
        let result: BlobResult<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(BlobError::unavailable)?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(BlobError::TooLarge(max));
                }
                f.write_all(&chunk).await.map_err(BlobError::unavailable)?;
            }
            f.sync_all().await.map_err(BlobError::unavailable)?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(BlobError::unavailable)?;
        Ok(size)
    }

    async fn delete(&self, key: &str) -> BlobResult<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::unavailable(e)),
        }
    }

    async fn upload_form(&self, _key: &str, _max: u64) -> BlobResult<Option<UploadForm>> {
        Ok(None)
    }
}
