//! `sf-publish reindex DEST`: rebuild a mirror's package index and key index from what it holds,
//! like `spack buildcache update-index --keys`.
//!
//! Spec manifests are listed, then read with their spec blobs in parallel; each is checked as
//! Spack's `update-index` does (manifest version 3, spec blob sha256, spec parse) plus the DAG hash
//! against the manifest's name. A spec whose content fails a check is skipped and reported with
//! the reason; a read the store could not answer (retries spent) fails the run naming the key, since
//! skipping it would silently drop a good spec from the rebuilt index. The
//! index is built in listing order and replaced only if the manifest did not change since before
//! the listing; if it did, a publisher merged meanwhile, and the rebuild starts over so its specs
//! are kept.
//!
//! A destination with neither an index nor a spec manifest is refused (exit 2, nothing written)
//! unless `--allow-empty`: a mistyped URL must not turn into an empty mirror.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use tokio::sync::Semaphore;

use sf_core::exit::bad_input;
use sf_core::layout::spack;
use sf_spack::index::Index;
use sf_spack::manifest::{compression, media_type, BlobRecord, KeyIndex, Manifest, ManifestFile};
use sf_spack::mirror::{LAYOUT_JSON_CONTENT, SPEC_MANIFEST_SUFFIX};
use sf_spack::spec::SpecBlob;
use sf_store::{sha256_hex, Condition, PutOutcome, Store};

use crate::changes::Action;
use crate::merge::MAX_ROUNDS;
use crate::objects::{ObjectKind, ObjectMeta};
use crate::publish::{backoff, Item, Publisher};

/// A spec manifest left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// What a reindex found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Reindexed {
    pub specs: usize,
    pub keys: usize,
    pub skipped: Vec<Skipped>,
}

/// Why a spec manifest could not be used: its content (skipped) or the store (the run fails).
enum ReadError {
    Content(anyhow::Error),
    Store(anyhow::Error),
}

impl From<anyhow::Error> for ReadError {
    fn from(e: anyhow::Error) -> Self {
        ReadError::Content(e)
    }
}

async fn read_spec(store: &Store, key: &str) -> Result<SpecBlob, ReadError> {
    let obj = store
        .get(key)
        .await
        .map_err(ReadError::Store)?
        .ok_or_else(|| anyhow!("vanished while reading"))?;
    // Like update-index: a signature is stripped, not verified.
    let file = ManifestFile::parse(&obj.bytes)?;
    file.manifest.ensure_v3()?;
    let rec = file
        .manifest
        .record(media_type::SPEC)
        .ok_or_else(|| anyhow!("no {} record", media_type::SPEC))?;
    let blob_key = rec.blob_key()?;
    let blob = store
        .get(&blob_key)
        .await
        .map_err(ReadError::Store)?
        .ok_or_else(|| anyhow!("spec blob {blob_key} is missing"))?;
    let actual = sha256_hex(&blob.bytes);
    if actual != rec.checksum {
        return Err(anyhow!("spec blob {blob_key} has sha256 {actual}").into());
    }
    let spec = SpecBlob::parse(&blob.bytes)?;
    let stem = key
        .rsplit('/')
        .next()
        .unwrap_or(key)
        .trim_end_matches(SPEC_MANIFEST_SUFFIX);
    if !stem.ends_with(&format!("-{}", spec.root().hash())) {
        return Err(anyhow!(
            "its spec's DAG hash {} is not the one in its name",
            spec.root().hash()
        )
        .into());
    }
    Ok(spec)
}

/// Read every spec manifest under the mirror, in parallel; listing order is kept. A store error
/// on any of them fails the whole read.
async fn read_all(p: &Publisher) -> Result<(Vec<SpecBlob>, Vec<Skipped>)> {
    let keys: Vec<String> = p
        .store
        .list(&format!("{}/", spack::SPEC_MANIFESTS_DIR))
        .await?
        .into_iter()
        .map(|l| l.key)
        .filter(|k| k.ends_with(SPEC_MANIFEST_SUFFIX))
        .collect();
    let sem = Arc::new(Semaphore::new(p.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, key) in keys.into_iter().enumerate() {
        let store = p.store.clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let r = read_spec(&store, &key).await;
            drop(permit);
            (i, key, r)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r?);
    }
    results.sort_by_key(|(i, _, _)| *i);
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    for (_, key, r) in results {
        match r {
            Ok(s) => specs.push(s),
            Err(ReadError::Content(e)) => skipped.push(Skipped {
                key,
                reason: format!("{e:#}"),
            }),
            Err(ReadError::Store(e)) => {
                return Err(e.context(format!("spec manifest {key} could not be read")))
            }
        }
    }
    Ok((specs, skipped))
}

/// Replace the document behind `manifest_key` with `bytes` if the manifest still has the state
/// `cond` describes; returns false when it changed meanwhile.
async fn replace(
    p: &Publisher,
    manifest_key: &str,
    kind: ObjectKind,
    media: &str,
    bytes: Vec<u8>,
    cond: Condition,
) -> Result<bool> {
    let record = BlobRecord::for_bytes(&bytes, media, compression::NONE);
    let mut blob = Item::bytes(&record.blob_key()?, bytes, ObjectKind::Blob);
    blob.media_type = Some(media.to_string());
    let manifest = Manifest::single(record).to_spack_json().into_bytes();
    let item = Item::bytes(manifest_key, manifest, kind);
    if let Some(cur) = p.store.head(manifest_key).await? {
        if cur.sha256.as_deref() == Some(item.sha256.as_str()) {
            return Ok(true);
        }
    }
    p.upload(blob).await?;
    let action = if cond == Condition::CreateOnly {
        Action::Created
    } else {
        Action::Replaced
    };
    match p
        .store
        .put(
            manifest_key,
            item.body.clone(),
            &kind.meta(&item.sha256, None, false),
            cond,
        )
        .await?
    {
        PutOutcome::Written(_) => {
            p.note(&item, action);
            Ok(true)
        }
        PutOutcome::PreconditionFailed => Ok(false),
    }
}

/// The state of a manifest before a rebuild, as the condition its replacement must carry.
async fn condition(p: &Publisher, key: &str) -> Result<Condition> {
    Ok(match p.store.get(key).await? {
        Some(o) => Condition::IfMatch(o.info.etag),
        None => Condition::CreateOnly,
    })
}

/// Refuse a destination that holds no mirror: a mistyped URL must not become an empty mirror.
async fn require_mirror(p: &Publisher) -> Result<()> {
    if p.store.head(spack::INDEX_MANIFEST).await?.is_some() {
        return Ok(());
    }
    let manifests = p
        .store
        .list(&format!("{}/", spack::SPEC_MANIFESTS_DIR))
        .await?
        .into_iter()
        .any(|l| l.key.ends_with(SPEC_MANIFEST_SUFFIX));
    if manifests {
        return Ok(());
    }
    Err(bad_input(format!(
        "{} holds no build-cache mirror (no {} and no spec manifests under {}/); nothing was written. Check the URL, or give --allow-empty to write an empty index there",
        p.store.destination(),
        spack::INDEX_MANIFEST,
        spack::SPEC_MANIFESTS_DIR
    )))
}

/// Rebuild the indexes; without `allow_empty`, a destination with no mirror is bad input.
pub async fn reindex(p: &Publisher, allow_empty: bool) -> Result<Reindexed> {
    if !allow_empty {
        require_mirror(p).await?;
    }
    let mut out = Reindexed::default();
    let mut done = false;
    for round in 0..MAX_ROUNDS {
        let cond = condition(p, spack::INDEX_MANIFEST).await?;
        let (specs, skipped) = read_all(p).await.context("reading the spec manifests")?;
        let mut index = Index::new();
        for s in &specs {
            index.add_spec(s)?;
        }
        if replace(
            p,
            spack::INDEX_MANIFEST,
            ObjectKind::IndexManifest,
            media_type::INDEX,
            index.to_bytes(),
            cond,
        )
        .await?
        {
            out.specs = specs.len();
            out.skipped = skipped;
            done = true;
            break;
        }
        p.stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        backoff(round).await;
    }
    if !done {
        return Err(anyhow!(
            "the index kept changing during the rebuild; gave up after {MAX_ROUNDS} rounds"
        ));
    }

    // The key index: every key manifest present, fingerprints sorted (as Spack writes it).
    for round in 0..MAX_ROUNDS {
        let cond = condition(p, spack::KEYS_MANIFEST).await?;
        let mut fprs: Vec<String> = p
            .store
            .list(&format!("{}/", spack::KEY_MANIFESTS_DIR))
            .await?
            .into_iter()
            .filter_map(|l| {
                l.key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.strip_suffix(".key.manifest.json"))
                    .map(str::to_string)
            })
            .filter(|f| f != "keys")
            .collect();
        fprs.sort();
        out.keys = fprs.len();
        if fprs.is_empty() {
            break;
        }
        let mut ki = KeyIndex::default();
        for f in &fprs {
            ki.insert(f);
        }
        if replace(
            p,
            spack::KEYS_MANIFEST,
            ObjectKind::KeyIndexManifest,
            media_type::KEY_INDEX,
            ki.to_bytes(),
            cond,
        )
        .await?
        {
            break;
        }
        p.stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        backoff(round).await;
    }
    if p.store.head(spack::LAYOUT_JSON).await?.is_none() {
        p.upload(Item::bytes(
            spack::LAYOUT_JSON,
            LAYOUT_JSON_CONTENT.as_bytes().to_vec(),
            ObjectKind::LayoutJson,
        ))
        .await?;
    }
    Ok(out)
}
