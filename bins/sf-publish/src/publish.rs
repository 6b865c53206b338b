//! Uploading objects: skip what is already there unchanged, create blobs only if absent, record
//! every key created or replaced, and count what was done.
//!
//! An object is skipped when the destination holds one with the same sha256 (our metadata on S3,
//! the content itself on a directory). A blob whose known sha256 differs is damaged and fails the
//! run; a content-addressed blob someone else wrote (no metadata) is skipped when its size
//! matches, its key being its checksum. Uploads run concurrently up to a limit; the first failure
//! stops the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::sync::Semaphore;

use sf_store::{Body, Condition, Gate, ObjectInfo, PutOutcome, Store};

use crate::changes::{Action, Change, Changes};
use crate::objects::{ObjectKind, ObjectMeta};

/// Counters of one run, shared by concurrent uploads.
#[derive(Debug, Default)]
pub struct Stats {
    pub uploaded: AtomicU64,
    pub bytes: AtomicU64,
    pub skipped: AtomicU64,
    /// Compare-and-swap attempts that lost to another writer.
    pub retries: AtomicU64,
    /// Bytes the run means to write (for progress).
    pub planned_bytes: AtomicU64,
    /// Bytes found at the destination already (for progress).
    pub skipped_bytes: AtomicU64,
}

impl Stats {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// One object to put.
#[derive(Clone, Debug)]
pub struct Item {
    pub key: String,
    pub body: Body,
    pub size: u64,
    pub sha256: String,
    pub kind: ObjectKind,
    /// A blob's media type (for its Content-Type).
    pub media_type: Option<String>,
    /// A clearsigned manifest.
    pub signed: bool,
    /// Checks still running that must pass before the object becomes visible.
    pub gate: Option<Gate>,
}

impl Item {
    pub fn bytes(key: &str, bytes: Vec<u8>, kind: ObjectKind) -> Self {
        Item {
            key: key.to_string(),
            size: bytes.len() as u64,
            sha256: sf_store::sha256_hex(&bytes),
            body: Body::Bytes(bytes),
            kind,
            media_type: None,
            signed: false,
            gate: None,
        }
    }
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    Written(Action),
    Skipped,
}

/// A destination with the run's change list and counters.
#[derive(Clone, Debug)]
pub struct Publisher {
    pub store: Store,
    pub changes: Changes,
    pub stats: Arc<Stats>,
    pub concurrency: usize,
}

impl Publisher {
    pub fn new(store: Store, concurrency: usize) -> Self {
        let dest = store.destination().to_string();
        Publisher {
            store,
            changes: Changes::new(&dest),
            stats: Arc::new(Stats::default()),
            concurrency: concurrency.max(1),
        }
    }

    /// Add to the bytes the run means to write.
    pub fn plan_bytes(&self, bytes: u64) {
        self.stats.planned_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn skip(&self, item: &Item) {
        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        self.stats
            .skipped_bytes
            .fetch_add(item.size, Ordering::Relaxed);
    }

    /// Note a write in the change list and the counters.
    pub fn note(&self, item: &Item, action: Action) {
        self.stats.uploaded.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(item.size, Ordering::Relaxed);
        self.changes.push(Change {
            key: item.key.clone(),
            url: self.store.url_of(&item.key),
            object_key: self.store.destination().object_key(&item.key),
            kind: item.kind,
            action,
            immutable: item.kind.immutable(),
            size: item.size,
            sha256: item.sha256.clone(),
        });
    }

    /// Put one object unless it is there already.
    pub async fn upload(&self, item: Item) -> Result<Done> {
        let meta = item
            .kind
            .meta(&item.sha256, item.media_type.as_deref(), item.signed);
        let (action, cond) = match self.store.head(&item.key).await? {
            Some(h) if h.sha256.as_deref() == Some(item.sha256.as_str()) => {
                self.skip(&item);
                return Ok(Done::Skipped);
            }
            Some(h) if item.kind.immutable() => {
                // A known checksum that differs is damage whatever the size says; only a blob
                // without one (written by someone else, e.g. Spack) is taken on its size.
                if h.sha256.is_some() || h.size != item.size {
                    return Err(damaged_blob(&self.store.url_of(&item.key), &h, &item));
                }
                self.skip(&item);
                return Ok(Done::Skipped);
            }
            Some(_) => (Action::Replaced, Condition::Always),
            None if item.kind.immutable() => (Action::Created, Condition::CreateOnly),
            None => (Action::Created, Condition::Always),
        };
        match self
            .store
            .put_gated(&item.key, item.body.clone(), &meta, cond, item.gate.clone())
            .await?
        {
            PutOutcome::Written(_) => {
                self.note(&item, action);
                Ok(Done::Written(action))
            }
            PutOutcome::PreconditionFailed => self.after_create_conflict(&item).await,
        }
    }

    /// A create-only write found the key taken. That is our own write when its answer was lost
    /// and the retried request met the object it had made, or an identical blob another
    /// publisher wrote meanwhile: either way the content at the key is right and this run wrote
    /// it as far as readers can tell, so it is counted and listed as created (a CDN invalidation
    /// of it is harmless). Anything else there is damage.
    async fn after_create_conflict(&self, item: &Item) -> Result<Done> {
        let url = self.store.url_of(&item.key);
        let mut tries = 0;
        let h = loop {
            match self.store.head(&item.key).await? {
                Some(h) => break h,
                // A 409 from a racing conditional write that has not finished yet.
                None if tries < 5 => {
                    backoff(tries).await;
                    tries += 1;
                }
                None => {
                    return Err(anyhow!(
                    "{url}: the create-only write was refused, yet nothing is there; publish again"
                ))
                }
            }
        };
        match &h.sha256 {
            Some(theirs) if *theirs == item.sha256 && h.size == item.size => {
                self.note(item, Action::Created);
                Ok(Done::Written(Action::Created))
            }
            // A blob someone else wrote without our metadata (e.g. Spack), taken on its size as
            // in `upload`: not ours, so not counted as written.
            None if h.size == item.size => {
                self.skip(item);
                Ok(Done::Skipped)
            }
            _ => Err(damaged_blob(&url, &h, item)),
        }
    }

    /// Put many objects concurrently; the first error stops the others.
    pub async fn upload_all(&self, items: Vec<Item>) -> Result<()> {
        let sem = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for item in items {
            let p = self.clone();
            let permit = sem.clone().acquire_owned().await?;
            tasks.spawn(async move {
                let r = p.upload(item).await;
                drop(permit);
                r
            });
            // Fail fast: stop launching once something failed.
            while let Some(done) = tasks.try_join_next() {
                done??;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }
}

/// The error for a blob key whose object is not this blob: what it holds against what it should
/// hold, and the remedy. The key is content-addressed, so the object is damaged, never stale.
fn damaged_blob(url: &str, held: &ObjectInfo, item: &Item) -> anyhow::Error {
    let theirs = match &held.sha256 {
        Some(sha) => format!("sha256 {sha}"),
        None => "no recorded sha256".to_string(),
    };
    anyhow!(
        "{url} exists with {} bytes and {theirs}, but this blob has {} bytes and sha256 {}: the destination holds a damaged blob; remove it and publish again",
        held.size,
        item.size,
        item.sha256
    )
}

/// Sleep before retrying a lost compare-and-swap: exponential, capped, with full jitter so
/// colliding publishers spread out.
pub async fn backoff(attempt: u32) {
    let cap_ms = (25u64 << attempt.min(6)).min(1_000);
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    let ms = u64::from_le_bytes(b) % (cap_ms + 1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(size: u64, sha256: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            key: "blobs/sha256/ab/abc".into(),
            size,
            etag: sf_store::ETag("\"e\"".into()),
            sha256: sha256.map(str::to_string),
            content_type: None,
            cache_control: None,
        }
    }

    #[test]
    fn a_damaged_blob_is_named_with_what_it_holds_what_was_expected_and_the_remedy() {
        let item = Item::bytes("blobs/sha256/ab/abc", b"four".to_vec(), ObjectKind::Blob);
        let url = "s3://bucket/m/blobs/sha256/ab/abc";
        let e = damaged_blob(url, &held(4, Some("0123")), &item).to_string();
        assert_eq!(
            e,
            format!(
                "{url} exists with 4 bytes and sha256 0123, but this blob has 4 bytes and sha256 {}: the destination holds a damaged blob; remove it and publish again",
                item.sha256
            )
        );
        // Written by someone else without our metadata, and of another size.
        let e = damaged_blob(url, &held(9, None), &item).to_string();
        assert!(
            e.starts_with(&format!(
                "{url} exists with 9 bytes and no recorded sha256, but this blob has 4 bytes and sha256 {}:",
                item.sha256
            )),
            "{e}"
        );
        assert!(e.ends_with("remove it and publish again"), "{e}");
    }
}
