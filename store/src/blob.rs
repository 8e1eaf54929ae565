//! Firmware files on disk, next to the database: streamed in with their SHA-256 computed on
//! the way, never held whole in memory.
//!
//! A file is written to `<dir>/<random>.part`, synced, then renamed to `<dir>/<image id>`, and
//! only then recorded in the database: a crash leaves at most a stray `.part` (removed at the
//! next start) or an unreferenced file, never a record without its file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::ImageId;

/// Why a write stopped.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file is larger than allowed.
    #[error("the file is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The disk failed.
    #[error("file storage failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The folder of firmware files.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating) `dir` and removes unfinished uploads left by a crash.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Where an image's file lives.
    pub fn path(&self, id: ImageId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Starts a new file of at most `limit` bytes.
    pub async fn writer(&self, limit: u64) -> std::io::Result<BlobWriter> {
        let temp = self.dir.join(format!("{}.part", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&temp).await?;
        Ok(BlobWriter {
            file,
            temp,
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Deletes an image's file (missing files are fine).
    pub async fn remove(&self, id: ImageId) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A file being written.
pub struct BlobWriter {
    file: tokio::fs::File,
    temp: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl BlobWriter {
    /// Appends a chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await?;
        Ok(())
    }

    /// Makes the file durable under the image's name; returns its size and SHA-256 (hex).
    pub async fn finish(
        mut self,
        store: &BlobStore,
        id: ImageId,
    ) -> std::io::Result<(u64, String)> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        tokio::fs::rename(&self.temp, store.path(id)).await?;
        Ok((self.size, hex::encode(self.hasher.finalize())))
    }

    /// Drops the unfinished file.
    pub async fn abort(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}
