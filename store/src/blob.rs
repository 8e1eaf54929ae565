//! Uploaded files on disk, next to the database (firmware images, floor plan images): streamed
//! in with their SHA-256 computed on the way, never held whole in memory.
//!
//! Each kind of file has its own folder and its own id type ([`BlobKey`]). A file is written
//! to `<dir>/<random>.part`, synced, then renamed to `<dir>/<id>`, and
//! only then recorded in the database: a crash leaves at most a stray `.part` or an
//! unreferenced file (both removed at the next start, see [`BlobStore::sweep`]), never a record
//! without its file. Short of a crash, no file outlives a failed upload: a [`BlobWriter`] and a
//! [`StoredBlob`] remove their file when dropped (a refused form, a client gone mid-upload,
//! a failed commit) unless the image was recorded ([`StoredBlob::keep`]).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{ImageId, PlanImageId};

/// The id a file is named after: a firmware image's, a floor plan image's.
pub trait BlobKey: Copy + std::fmt::Display {
    /// The id a file name parses to.
    fn from_uuid(id: uuid::Uuid) -> Self;
}

impl BlobKey for ImageId {
    fn from_uuid(id: uuid::Uuid) -> Self {
        ImageId(id)
    }
}

impl BlobKey for PlanImageId {
    fn from_uuid(id: uuid::Uuid) -> Self {
        PlanImageId(id)
    }
}

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

/// A folder of uploaded files.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating) `dir`. Call [`BlobStore::sweep`] before serving.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Removes unfinished uploads and every file `keep` says has no record (blocking;
    /// at start-up, before any upload can be under way). Other files are left alone. Returns
    /// how many files were removed.
    pub fn sweep<K: BlobKey>(
        &self,
        mut keep: impl FnMut(K) -> crate::Result<bool>,
    ) -> crate::Result<usize> {
        let io = |e: std::io::Error| crate::StoreError::Database(e.into());
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let unfinished = path.extension().is_some_and(|e| e == "part");
            let image = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
                .map(K::from_uuid);
            let orphan = match image {
                Some(id) => !keep(id)?,
                None => false,
            };
            if unfinished || orphan {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                    _ => removed += 1,
                }
            }
        }
        Ok(removed)
    }

    /// Where a file lives.
    pub fn path(&self, id: impl BlobKey) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Starts a new file of at most `limit` bytes.
    pub async fn writer(&self, limit: u64) -> std::io::Result<BlobWriter> {
        let temp = self.dir.join(format!("{}.part", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&temp).await?;
        Ok(BlobWriter {
            file,
            temp: Some(temp),
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Deletes an image's file from a blocking thread (missing files are fine).
    pub fn remove_blocking(&self, id: impl BlobKey) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes an image's file (missing files are fine).
    pub async fn remove(&self, id: impl BlobKey) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A file being written; removed when dropped unfinished (a failed or abandoned upload).
pub struct BlobWriter {
    file: tokio::fs::File,
    /// The `.part` file, until it is renamed.
    temp: Option<PathBuf>,
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

    /// Makes the file durable under the image's name. The answer removes it again when
    /// dropped, unless [`StoredBlob::keep`] says its record was committed.
    pub async fn finish(
        mut self,
        store: &BlobStore,
        id: impl BlobKey,
    ) -> std::io::Result<StoredBlob> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        let path = store.path(id);
        if let Some(temp) = &self.temp {
            tokio::fs::rename(temp, &path).await?;
        }
        self.temp = None;
        Ok(StoredBlob {
            path: Some(path),
            size: self.size,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
        })
    }

    /// Drops the unfinished file.
    pub async fn abort(self) {
        drop(self);
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // A plain unlink: quick enough for an async thread, and it must happen even when the
        // upload's future is dropped (the client went away), where nothing can be awaited.
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A complete file under its image's name whose record may not be committed yet; removed
/// when dropped unless kept.
#[derive(Debug)]
pub struct StoredBlob {
    path: Option<PathBuf>,
    size: u64,
    sha256: String,
}

impl StoredBlob {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its SHA-256, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The image's record is committed: the file stays.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for StoredBlob {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn an_upload_dropped_at_any_stage_leaves_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = BlobStore::open(dir.path()).expect("open");
        let mut writer = blobs.writer(1024).await.expect("writer");
        writer.write(b"half a file").await.expect("write");
        drop(writer);
        assert!(
            files(dir.path()).is_empty(),
            "an abandoned write is removed"
        );

        let mut writer = blobs.writer(1024).await.expect("writer");
        writer.write(b"a whole file").await.expect("write");
        let stored = writer.finish(&blobs, ImageId::new()).await.expect("finish");
        assert_eq!(stored.size(), 12);
        drop(stored);
        assert!(
            files(dir.path()).is_empty(),
            "a file never recorded is removed"
        );

        let id = ImageId::new();
        let mut writer = blobs.writer(1024).await.expect("writer");
        writer.write(b"a kept file").await.expect("write");
        writer.finish(&blobs, id).await.expect("finish").keep();
        assert_eq!(files(dir.path()), vec![id.to_string()]);
    }

    #[test]
    fn the_sweep_keeps_recorded_images_and_unknown_files_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = BlobStore::open(dir.path()).expect("open");
        let (recorded, orphan) = (ImageId::new(), ImageId::new());
        for name in [
            recorded.to_string(),
            orphan.to_string(),
            "x.part".to_owned(),
            "README".to_owned(),
        ] {
            std::fs::write(dir.path().join(name), b"bytes").expect("write");
        }
        let removed = blobs
            .sweep(|id: ImageId| Ok(id == recorded))
            .expect("sweep");
        assert_eq!(removed, 2);
        let mut expected = vec![recorded.to_string(), "README".to_owned()];
        expected.sort();
        assert_eq!(files(dir.path()), expected);
    }
}
