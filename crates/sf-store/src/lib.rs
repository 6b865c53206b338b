//! One storage interface over the places a mirror or tarball can live: `s3://bucket/prefix`
//! (aws-sdk-s3) and `file:///dir` (a local directory standing in for a bucket).
//!
//! Every feature of `sf-publish` is written once against [`Store`]: reads (`get`, `head`), writes
//! with object metadata (Content-Type, Cache-Control and the sha256 of the content, so an unchanged
//! object is never uploaded again), create-only writes (`If-None-Match: *`) for immutable blobs,
//! compare-and-swap writes (`If-Match` on the ETag) for the few mutable objects several publishers
//! update at once (the index manifests), and listing under a prefix. On S3 the server enforces the
//! conditions; on a directory the same guarantees come from an atomic rename done while holding an
//! exclusive lock on the target's directory, and the ETag is the sha256 of the content.
//!
//! Keys are relative to the destination's root (the layout keys of `sf_core::layout`); the S3 key
//! prefix of `s3://bucket/prefix` is applied here and nowhere else.

mod dir;
mod s3;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use sf_aws::AwsSettings;
use sf_core::exit::bad_input;
use sf_core::layout::Destination;

pub use dir::{DirStore, Staged};
pub use s3::{S3Store, Transfer};

/// The user-metadata name holding the lowercase hex sha256 of an object (`x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// An opaque object version tag, compared for compare-and-swap writes. On S3 the server's ETag
/// (quotes included); on a directory the sha256 of the content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a HEAD tells about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: ETag,
    /// From the object's metadata on S3 (absent on objects others wrote); computed on a directory.
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
}

/// An object read whole (manifests, indexes: small by nature).
#[derive(Clone, Debug)]
pub struct Object {
    pub info: ObjectInfo,
    pub bytes: Vec<u8>,
}

/// What an object is stored with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutMeta {
    pub content_type: String,
    pub cache_control: String,
    /// Lowercase hex sha256 of the content; stored as metadata and, on S3, sent as the full-object
    /// checksum the server verifies.
    pub sha256: String,
}

/// The precondition of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Write whatever is there.
    Always,
    /// Only if no object exists at the key (`If-None-Match: *`).
    CreateOnly,
    /// Only if the object still has this ETag (`If-Match`).
    IfMatch(ETag),
}

/// The content of a write: bytes in memory, or a file streamed from disk.
#[derive(Clone, Debug)]
pub enum Body {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Body {
    pub fn len(&self) -> Result<u64> {
        match self {
            Body::Bytes(b) => Ok(b.len() as u64),
            Body::File(p) => Ok(std::fs::metadata(p)
                .with_context(|| format!("reading {}", p.display()))?
                .len()),
        }
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// A check a write waits for before it becomes visible. The upload itself may run while the check
/// does (a multipart upload's parts, a staged temporary file): only its last step (completing the
/// upload, the rename) waits, and when the check fails the upload is abandoned (aborted, removed),
/// so a large file is never read twice in a row and nothing unchecked is ever visible.
#[derive(Clone, Debug)]
pub struct Gate(tokio::sync::watch::Receiver<Option<bool>>);

/// The side of a [`Gate`] that gives the verdict; dropped without one, the gate stays shut.
#[derive(Debug)]
pub struct GateKeeper(tokio::sync::watch::Sender<Option<bool>>);

impl Gate {
    pub fn new() -> (GateKeeper, Gate) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (GateKeeper(tx), Gate(rx))
    }

    /// Wait for the verdict: `Ok` once the check passed, an error once it failed.
    pub async fn pass(&self) -> Result<()> {
        let mut rx = self.0.clone();
        let verdict = rx.wait_for(Option::is_some).await.map(|v| *v);
        match verdict {
            Ok(Some(true)) => Ok(()),
            _ => Err(anyhow::anyhow!(
                "not completed: the checks of what was being uploaded did not pass"
            )),
        }
    }
}

impl GateKeeper {
    pub fn verdict(self, passed: bool) {
        // No receiver left means no upload waits any more; nothing to tell.
        let _ = self.0.send(Some(passed));
    }
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written(ETag),
    /// The condition did not hold; nothing was changed.
    PreconditionFailed,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// When the object was last written (S3's LastModified, a file's mtime), when known.
    pub modified: Option<std::time::SystemTime>,
}

/// A destination to read and write.
#[derive(Clone, Debug)]
pub enum Store {
    S3(S3Store),
    Dir(DirStore),
}

impl Store {
    /// Open a destination. For S3 this loads the AWS configuration, checks credentials and that
    /// the bucket exists, so a wrong destination fails before anything is read or written.
    pub async fn open(dest: &Destination, aws: &AwsSettings) -> Result<Store> {
        match dest {
            Destination::S3 { bucket, prefix } => {
                Ok(Store::S3(S3Store::open(bucket, prefix, aws).await?))
            }
            Destination::Dir { path } => Ok(Store::Dir(DirStore::open(Path::new(path))?)),
        }
    }

    /// Open with other multipart settings (S3 only; a directory copies files whole).
    pub async fn open_with(
        dest: &Destination,
        aws: &AwsSettings,
        transfer: Transfer,
    ) -> Result<Store> {
        Ok(match Store::open(dest, aws).await? {
            Store::S3(s) => Store::S3(s.with_transfer(transfer)),
            other => other,
        })
    }

    /// The destination URL of a key (for messages and records).
    pub fn url_of(&self, key: &str) -> String {
        match self {
            Store::S3(s) => s.destination().url_of(key),
            Store::Dir(d) => d.destination().url_of(key),
        }
    }

    /// Bytes sent to the destination so far by this store and its clones (multipart parts as they
    /// land), for progress reports.
    pub fn sent(&self) -> u64 {
        match self {
            Store::S3(s) => s.sent(),
            Store::Dir(d) => d.sent(),
        }
    }

    pub fn destination(&self) -> Destination {
        match self {
            Store::S3(s) => s.destination(),
            Store::Dir(d) => d.destination(),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        check_key(key)?;
        match self {
            Store::S3(s) => s.head(key).await,
            Store::Dir(d) => d.clone().blocking(key, move |d, k| d.head(&k)).await,
        }
        .with_context(|| format!("reading {}", self.url_of(key)))
    }

    /// Read an object whole; one stored with a sha256 is checked against it.
    pub async fn get(&self, key: &str) -> Result<Option<Object>> {
        check_key(key)?;
        let got = match self {
            Store::S3(s) => s.get(key).await,
            Store::Dir(d) => d.clone().blocking(key, move |d, k| d.get(&k)).await,
        }
        .with_context(|| format!("reading {}", self.url_of(key)))?;
        if let Some(o) = &got {
            if let Some(want) = &o.info.sha256 {
                let actual = sha256_hex(&o.bytes);
                if &actual != want {
                    anyhow::bail!(
                        "{} has sha256 {actual}, but was stored with {want}",
                        self.url_of(key)
                    );
                }
            }
        }
        Ok(got)
    }

    /// Bytes `range` of the object `head` describes, or `None` when the key holds another object
    /// by now (S3: another ETag, or too short for the range; a directory, which has no ETag: a
    /// file of another length). Reading a large object in pieces this way never splices two
    /// versions of it.
    pub async fn read_range(
        &self,
        head: &ObjectInfo,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>> {
        check_key(&head.key)?;
        match self {
            Store::S3(s) => s.read_range(&head.key, range, &head.etag).await,
            Store::Dir(d) => {
                let size = head.size;
                d.clone()
                    .blocking(&head.key, move |d, k| d.read_range(&k, range, size))
                    .await
            }
        }
        .with_context(|| format!("reading {}", self.url_of(&head.key)))
    }

    /// Write an object, if `cond` holds.
    pub async fn put(
        &self,
        key: &str,
        body: Body,
        meta: &PutMeta,
        cond: Condition,
    ) -> Result<PutOutcome> {
        self.put_gated(key, body, meta, cond, None).await
    }

    /// Write an object, if `cond` holds, visible only once `gate` (if any) passes.
    pub async fn put_gated(
        &self,
        key: &str,
        body: Body,
        meta: &PutMeta,
        cond: Condition,
        gate: Option<Gate>,
    ) -> Result<PutOutcome> {
        check_key(key)?;
        let r = match self {
            Store::S3(s) => s.put(key, body, meta, &cond, gate).await,
            Store::Dir(d) => {
                async {
                    let staged = d
                        .clone()
                        .blocking(key, move |d, k| d.stage(&k, &body))
                        .await?;
                    // A shut gate drops the staged file, which removes it.
                    if let Some(g) = gate {
                        g.pass().await?;
                    }
                    d.clone()
                        .blocking(key, move |d, _| d.commit(staged, &cond))
                        .await
                }
                .await
            }
        };
        r.with_context(|| format!("writing {}", self.url_of(key)))
    }

    /// Every object under a key prefix (a folder when it ends in `/`), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut out = match self {
            Store::S3(s) => s.list(prefix).await,
            Store::Dir(d) => d.clone().blocking(prefix, move |d, p| d.list(&p)).await,
        }
        .with_context(|| format!("listing {}", self.url_of(prefix)))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A key must be relative, without empty, `.` or `..` segments: it may name a path on disk.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && !key.ends_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !key.contains('\\')
        && !key.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(bad_input(format!(
            "{key:?} is not a valid object key (relative, no empty, '.' or '..' segments)"
        )))
    }
}

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lowercase hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Standard base64 (with padding), for the `x-amz-checksum-sha256` header.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn keys_that_could_escape_are_rejected() {
        for bad in ["", "/abs", "a/../b", "a//b", "a/", "./a"] {
            assert_eq!(
                sf_core::exit::code_for(&check_key(bad).unwrap_err()),
                2,
                "{bad}"
            );
        }
        check_key("v3/manifests/index/index.manifest.json").unwrap();
    }
}
