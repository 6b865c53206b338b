//! `file:///dir`: a local directory standing in for a bucket.
//!
//! Objects are plain files at `<root>/<key>`. A write goes to a temporary file beside the target
//! (a hidden `.name.<random>.tmp`), is flushed, and is renamed into place while an exclusive
//! `flock` on the target's directory is held; the conditions (create-only, compare-and-swap) are
//! checked under that same lock, so concurrent publishers on one machine (or one NFS-free shared
//! disk) get the guarantees S3 gives. Readers take no lock: a rename is atomic, so they see the old
//! or the new object, never half of one. The ETag is the sha256 of the content, and Content-Type
//! and Cache-Control are not kept (a directory has nowhere to keep them; a web server in front
//! decides those).

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use sf_core::exit::bad_input;
use sf_core::layout::Destination;

use crate::{sha256_hex, Body, Condition, ETag, Listed, Object, ObjectInfo, PutMeta, PutOutcome};

#[derive(Clone, Debug)]
pub struct DirStore {
    root: PathBuf,
    /// Bytes written so far (for progress).
    sent: Arc<AtomicU64>,
}

impl DirStore {
    /// A directory destination, created if missing (as a key prefix in a bucket needs no
    /// creating).
    pub fn open(root: &Path) -> Result<Self> {
        if !root.exists() {
            fs::create_dir_all(root).map_err(|e| {
                bad_input(format!(
                    "destination directory {} cannot be created: {e}",
                    root.display()
                ))
            })?;
        }
        let meta = fs::metadata(root).map_err(|e| {
            bad_input(format!(
                "destination directory {} cannot be used: {e}",
                root.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(bad_input(format!(
                "destination {} is not a directory",
                root.display()
            )));
        }
        Ok(DirStore {
            root: root.to_path_buf(),
            sent: Arc::default(),
        })
    }

    /// Bytes written so far by this store and its clones.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn destination(&self) -> Destination {
        Destination::Dir {
            path: self.root.to_string_lossy().into_owned(),
        }
    }

    /// Run blocking file work off the async executor.
    pub(crate) async fn blocking<T: Send + 'static>(
        self,
        key: &str,
        f: impl FnOnce(&DirStore, String) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let key = key.to_string();
        tokio::task::spawn_blocking(move || f(&self, key))
            .await
            .context("file task panicked")?
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key);
        let Some(meta) = file_meta(&path)? else {
            return Ok(None);
        };
        let sha = crate::sha256_file(&path)?;
        Ok(Some(info(key, meta.len(), sha)))
    }

    pub fn get(&self, key: &str) -> Result<Option<Object>> {
        let path = self.path(key);
        if file_meta(&path)?.is_none() {
            return Ok(None);
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let sha = sha256_hex(&bytes);
        Ok(Some(Object {
            info: info(key, bytes.len() as u64, sha),
            bytes,
        }))
    }

    /// See [`crate::Store::read_range`]; `size` is the length the file had when it was looked at.
    pub fn read_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        size: u64,
    ) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        let mut f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        f.seek(io::SeekFrom::Start(range.start))?;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        (&mut f)
            .take(range.end - range.start)
            .read_to_end(&mut out)?;
        // A file of another length is another object: a new one a publish renamed in before
        // the open, or this one rewritten while it was read.
        Ok((f.metadata()?.len() == size).then_some(out))
    }

    pub fn put(
        &self,
        key: &str,
        body: &Body,
        _meta: &PutMeta,
        cond: &Condition,
    ) -> Result<PutOutcome> {
        let staged = self.stage(key, body)?;
        self.commit(staged, cond)
    }

    /// Write the content beside its key, not yet visible.
    pub fn stage(&self, key: &str, body: &Body) -> Result<Staged> {
        let dest = self.path(key);
        let parent = dest
            .parent()
            .expect("a key has a parent under the root")
            .to_path_buf();
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let name = dest
            .file_name()
            .expect("a key has a name")
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!(
            ".{name}.{}.{}.tmp",
            writer_tag(),
            sf_core::fsutil::random_hex(6)?
        ));
        let guard = TempGuard(tmp.clone());
        let sha = write_temp(&tmp, body)?;
        self.sent.fetch_add(body.len()?, Ordering::Relaxed);
        Ok(Staged {
            tmp: guard,
            parent,
            dest,
            sha,
        })
    }

    /// Move staged content into place if `cond` holds (the staged file is removed if not).
    pub fn commit(&self, staged: Staged, cond: &Condition) -> Result<PutOutcome> {
        let Staged {
            tmp,
            parent,
            dest,
            sha,
        } = staged;
        let dir =
            fs::File::open(&parent).with_context(|| format!("opening {}", parent.display()))?;
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io::Error::from)
            .with_context(|| format!("locking {}", parent.display()))?;
        let holds = match cond {
            Condition::Always => true,
            Condition::CreateOnly => file_meta(&dest)?.is_none(),
            Condition::IfMatch(etag) => match file_meta(&dest)? {
                Some(_) => crate::sha256_file(&dest)? == etag.0,
                None => false,
            },
        };
        if !holds {
            return Ok(PutOutcome::PreconditionFailed);
        }
        sweep_dead_writers(&parent, &dest);
        fs::rename(&tmp.0, &dest)
            .with_context(|| format!("moving {} into place", dest.display()))?;
        std::mem::forget(tmp);
        // The rename is durable only once the directory is; the lock is released when `dir` drops.
        dir.sync_all().ok();
        Ok(PutOutcome::Written(ETag(sha)))
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let folder = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if folder.is_empty() {
            self.root.clone()
        } else {
            self.root.join(folder)
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, folder.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Hidden entries are our temporary files (or not part of a bucket's contents).
                if name.starts_with('.') {
                    continue;
                }
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    stack.push((entry.path(), key));
                } else if ft.is_file() && key.starts_with(prefix) {
                    let meta = entry.metadata()?;
                    out.push(Listed {
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        key,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn info(key: &str, size: u64, sha: String) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size,
        etag: ETag(sha.clone()),
        sha256: Some(sha),
        content_type: None,
        cache_control: None,
    }
}

/// Metadata of a regular file; `None` when nothing (or a directory) is there.
fn file_meta(path: &Path) -> Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write the body to `tmp`, flushed to disk, and return its sha256.
fn write_temp(tmp: &Path, body: &Body) -> Result<String> {
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let sha = match body {
        Body::Bytes(b) => {
            out.write_all(b)?;
            sha256_hex(b)
        }
        Body::File(src) => {
            let mut input =
                fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = input
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", src.display()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n])?;
            }
            hex::encode(h.finalize())
        }
    };
    out.sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    Ok(sha)
}

/// This host's name, which temporary file names carry with the writer's process id.
fn this_host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// This writer's mark in its temporary file names (host and process id), so that a later writer
/// can tell a file whose writer was killed mid-write from one still being written.
fn writer_tag() -> String {
    format!("{}-{}", this_host(), std::process::id())
}

/// Remove the temporary files of `dest` left by writers of this host that no longer run (a
/// publisher killed between staging and moving into place). Called under the folder's lock.
fn sweep_dead_writers(parent: &Path, dest: &Path) {
    let Some(name) = dest.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.");
    let host = this_host();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let writer = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|r| r.rsplit_once('.'))
            .and_then(|(tag, _)| tag.rsplit_once('-'));
        let Some((h, pid)) = writer else { continue };
        let dead =
            h == host && pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
        if dead {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes the temporary file unless it was moved into place.
#[derive(Debug)]
struct TempGuard(PathBuf);

/// Content written beside its key by [`DirStore::stage`], removed unless committed.
#[derive(Debug)]
pub struct Staged {
    tmp: TempGuard,
    parent: PathBuf,
    dest: PathBuf,
    sha: String,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
