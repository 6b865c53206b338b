//! Read-modify-write of a mirror's mutable documents (the package index and the key index) that
//! loses no concurrent writer's update.
//!
//! Each round reads the manifest (and its ETag) and the blob it points at, applies this run's
//! additions, writes the new blob (content-addressed, create-only), then replaces the manifest only
//! if it is unchanged since it was read (`If-Match`, or `If-None-Match: *` when there was none). A
//! lost race means another publisher wrote first: back off, read again, re-apply. A round whose
//! read already contains everything ends the loop, so the last thing a run does is confirm its
//! additions are visible. That confirming read (after a short pause) also catches a writer on a
//! server whose conditional writes are not atomic (moto 5.2 and s3s-fs check and then write), which
//! could otherwise overwrite an update that had just won.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use sf_spack::index::Index;
use sf_spack::manifest::{compression, media_type, BlobRecord, KeyIndex, Manifest, ManifestFile};
use sf_store::{sha256_hex, Condition, PutOutcome};

use crate::changes::Action;
use crate::objects::{ObjectKind, ObjectMeta};
use crate::publish::{backoff, Item, Publisher};

/// Give up after this many rounds (each lost round means another writer made progress).
pub const MAX_ROUNDS: u32 = 200;

/// A document kept in a blob behind a manifest.
pub trait Document: Sized {
    const MEDIA_TYPE: &'static str;
    fn empty() -> Self;
    fn parse(bytes: &[u8]) -> Result<Self>;
    fn to_bytes(&self) -> Vec<u8>;
}

impl Document for Index {
    const MEDIA_TYPE: &'static str = media_type::INDEX;
    fn empty() -> Self {
        Index::new()
    }
    fn parse(bytes: &[u8]) -> Result<Self> {
        Index::parse(bytes)
    }
    fn to_bytes(&self) -> Vec<u8> {
        Index::to_bytes(self)
    }
}

impl Document for KeyIndex {
    const MEDIA_TYPE: &'static str = media_type::KEY_INDEX;
    fn empty() -> Self {
        KeyIndex::default()
    }
    fn parse(bytes: &[u8]) -> Result<Self> {
        KeyIndex::parse(bytes)
    }
    fn to_bytes(&self) -> Vec<u8> {
        KeyIndex::to_bytes(self)
    }
}

/// How a merge ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Whether this run wrote a new version.
    pub written: bool,
    /// Rounds lost to other writers.
    pub lost: u32,
}

/// The current document behind a manifest key, with the condition a replacement must carry.
pub async fn read_document<D: Document>(
    p: &Publisher,
    manifest_key: &str,
) -> Result<(D, Condition)> {
    let Some(obj) = p.store.get(manifest_key).await? else {
        return Ok((D::empty(), Condition::CreateOnly));
    };
    let file = ManifestFile::parse(&obj.bytes).with_context(|| p.store.url_of(manifest_key))?;
    file.manifest
        .ensure_v3()
        .with_context(|| p.store.url_of(manifest_key))?;
    let rec = file.manifest.record(D::MEDIA_TYPE).ok_or_else(|| {
        anyhow!(
            "{} has no {} record",
            p.store.url_of(manifest_key),
            D::MEDIA_TYPE
        )
    })?;
    let blob_key = rec.blob_key()?;
    let blob = p.store.get(&blob_key).await?.ok_or_else(|| {
        anyhow!(
            "{} points at {}, which is missing; rebuild the index with `sf-publish reindex`",
            p.store.url_of(manifest_key),
            p.store.url_of(&blob_key)
        )
    })?;
    if sha256_hex(&blob.bytes) != rec.checksum {
        return Err(anyhow!(
            "{} does not match its checksum in {}",
            p.store.url_of(&blob_key),
            manifest_key
        ));
    }
    let doc = D::parse(&blob.bytes).with_context(|| p.store.url_of(&blob_key))?;
    Ok((doc, Condition::IfMatch(obj.info.etag)))
}

/// Merge this run's additions into the document behind `manifest_key`. `apply` adds them and says
/// whether anything changed; it must be idempotent.
pub async fn merge<D: Document>(
    p: &Publisher,
    manifest_key: &str,
    kind: ObjectKind,
    settle: Duration,
    mut apply: impl FnMut(&mut D) -> Result<bool>,
) -> Result<Merged> {
    let mut out = Merged::default();
    let mut attempted = None;
    for round in 0..MAX_ROUNDS {
        let (mut doc, cond) = read_document::<D>(p, manifest_key).await?;
        if !apply(&mut doc)? {
            // A write whose answer was lost (then retried into a 412) may still have landed; the
            // manifest changed either way, so it belongs in the change list.
            if let (false, Some(item)) = (out.written, attempted) {
                p.note(&item, Action::Replaced);
            }
            return Ok(out);
        }
        let bytes = doc.to_bytes();
        let record = BlobRecord::for_bytes(&bytes, D::MEDIA_TYPE, compression::NONE);
        let mut blob = Item::bytes(&record.blob_key()?, bytes, ObjectKind::Blob);
        blob.media_type = Some(D::MEDIA_TYPE.to_string());
        p.upload(blob).await?;

        let manifest = Manifest::single(record).to_spack_json().into_bytes();
        let item = Item::bytes(manifest_key, manifest, kind);
        let meta = kind.meta(&item.sha256, None, false);
        let action = if cond == Condition::CreateOnly {
            Action::Created
        } else {
            Action::Replaced
        };
        attempted = Some(item.clone());
        match p
            .store
            .put(manifest_key, item.body.clone(), &meta, cond)
            .await?
        {
            PutOutcome::Written(_) => {
                if !out.written {
                    p.note(&item, action);
                }
                out.written = true;
                // Confirm on the next round, after a pause that lets a racing write land.
                tokio::time::sleep(settle).await;
            }
            PutOutcome::PreconditionFailed => {
                out.lost += 1;
                p.stats.retries.fetch_add(1, Ordering::Relaxed);
                backoff(round).await;
            }
        }
    }
    Err(anyhow!(
        "{} kept changing under this run: gave up after {MAX_ROUNDS} rounds",
        p.store.url_of(manifest_key)
    ))
}
