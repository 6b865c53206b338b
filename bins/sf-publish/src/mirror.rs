//! `sf-publish mirror SRC DEST`: a signed local layout-3 mirror onto a mirror root.
//!
//! Plan, then act. The plan checks the whole source first, the way Spack's `update-index` and
//! `install` would read it, and with signatures checked against the expected key: every spec
//! manifest version 3, signed by that key (unless `--allow-unsigned`), both blobs present with the
//! recorded size and sha256, the spec blob parsing with DAG hashes that match the manifest's name;
//! every key manifest's key blob intact. Any problem stops the run before the first upload.
//!
//! Then, in the order that keeps every reader's view whole: all blobs (create-only), spec
//! manifests, key manifests, `v3/layout.json`, and last the package index and key index, merged
//! into what the destination already holds (see [`crate::merge`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use sf_core::exit::bad_input;
use sf_core::layout::spack;
use sf_spack::index::Index;
use sf_spack::manifest::{media_type, BlobRecord, KeyIndex};
use sf_spack::mirror::{Mirror, LAYOUT_JSON_CONTENT};
use sf_spack::spec::{read_spec_blob, SpecBlob};
use sf_store::Body;

use crate::merge::{merge, Merged};
use crate::objects::ObjectKind;
use crate::publish::{Item, Publisher};
use crate::trust::Trust;

/// Suffix of key manifests (the key index manifest is not one).
const KEY_MANIFEST_SUFFIX: &str = ".key.manifest.json";

/// One checked spec manifest.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub key: String,
    pub bytes: Vec<u8>,
    pub signed_by: Option<String>,
    pub blobs: Vec<BlobRecord>,
    pub spec: SpecBlob,
}

/// One checked key manifest.
#[derive(Clone, Debug)]
pub struct SourceKey {
    pub fingerprint: String,
    pub key: String,
    pub bytes: Vec<u8>,
    pub blob: BlobRecord,
}

/// Everything the source holds that will be published, checked.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mirror: Mirror,
    pub specs: Vec<SourceSpec>,
    pub keys: Vec<SourceKey>,
}

/// What `--dry-run` prints: the objects in upload order.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedObject {
    pub key: String,
    pub kind: ObjectKind,
    pub size: u64,
}

/// Read and check the source mirror. `trust` is `None` with `--allow-unsigned`.
pub fn plan(src: &Path, trust: Option<&Trust>) -> Result<Plan> {
    let mirror = Mirror::open(src)?;
    mirror.require_v3()?;
    let entries = mirror.spec_manifests()?;
    if entries.is_empty() {
        return Err(bad_input(format!(
            "{} has no spec manifests under {}; nothing to publish",
            src.display(),
            spack::SPEC_MANIFESTS_DIR
        )));
    }
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    for e in &entries {
        let check = mirror
            .check_spec_manifest(e)
            .with_context(|| e.key.clone())?;
        let mut bad: Vec<String> = check.problems.iter().map(ToString::to_string).collect();
        let bytes = std::fs::read(mirror.path(&e.key)).with_context(|| e.key.clone())?;
        let signed_by = match trust {
            None => None,
            Some(_) if !check.file.is_signed() => {
                bad.push("is not signed".into());
                None
            }
            Some(t) => match t.check_clearsigned(&e.key, &bytes) {
                Ok(fpr) => Some(fpr),
                Err(err) => {
                    bad.push(
                        format!("{err:#}")
                            .trim_start_matches(&format!("{}: ", e.key))
                            .to_string(),
                    );
                    None
                }
            },
        };
        let spec = if bad.is_empty() {
            let rec = check
                .file
                .manifest
                .record(media_type::SPEC)
                .expect("checked above");
            match read_spec_blob(&mirror.blob_path(rec)?) {
                Ok(s) if e.dag_hash.as_deref().is_some_and(|h| h != s.root().hash()) => {
                    bad.push(format!(
                        "its spec's DAG hash is {}, its name says otherwise",
                        s.root().hash()
                    ));
                    None
                }
                Ok(s) if s.root().name() != e.name => {
                    bad.push(format!(
                        "its spec is for {}, it is filed under {}",
                        s.root().name(),
                        e.name
                    ));
                    None
                }
                Ok(s) => Some(s),
                Err(err) => {
                    bad.push(format!("{err:#}"));
                    None
                }
            }
        } else {
            None
        };
        match spec {
            Some(spec) if bad.is_empty() => {
                let blobs = [media_type::TARBALL, media_type::SPEC]
                    .iter()
                    .filter_map(|m| check.file.manifest.record(m).cloned())
                    .collect();
                specs.push(SourceSpec {
                    key: e.key.clone(),
                    bytes,
                    signed_by,
                    blobs,
                    spec,
                });
            }
            _ => problems.extend(bad.into_iter().map(|b| format!("{}: {b}", e.key))),
        }
    }
    let keys = source_keys(&mirror, &mut problems)?;
    if !problems.is_empty() {
        let n = problems.len();
        let shown: Vec<String> = problems.into_iter().take(20).collect();
        return Err(bad_input(format!(
            "{} cannot be published, nothing was uploaded ({n} problem{}):\n  {}",
            src.display(),
            if n == 1 { "" } else { "s" },
            shown.join("\n  ")
        )));
    }
    Ok(Plan {
        mirror,
        specs,
        keys,
    })
}

fn source_keys(mirror: &Mirror, problems: &mut Vec<String>) -> Result<Vec<SourceKey>> {
    let dir = mirror.path(spack::KEY_MANIFESTS_DIR);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let Some(fpr) = name.strip_suffix(KEY_MANIFEST_SUFFIX) else {
            continue;
        };
        if name.starts_with('.') || name == "keys.manifest.json" {
            continue;
        }
        let key = spack::key_manifest(fpr);
        let file = mirror.read_manifest(&key)?;
        let rec = match (
            file.manifest.ensure_v3(),
            file.manifest.record(media_type::PGP_KEYS),
        ) {
            (Ok(()), Some(r)) => r.clone(),
            (Err(e), _) => {
                problems.push(format!("{key}: {e:#}"));
                continue;
            }
            (_, None) => {
                problems.push(format!("{key}: no {} record", media_type::PGP_KEYS));
                continue;
            }
        };
        let status = mirror.check_blob(&rec)?;
        if status != sf_spack::BlobStatus::Ok {
            problems.push(format!("{key}: key blob {} is {status:?}", rec.blob_key()?));
            continue;
        }
        let bytes = std::fs::read(mirror.path(&key))?;
        out.push(SourceKey {
            fingerprint: fpr.to_string(),
            key,
            bytes,
            blob: rec,
        });
    }
    Ok(out)
}

/// The public key a mirror publishes for a fingerprint, if any.
pub fn published_key(src: &Path, fpr: &str) -> Result<Option<Vec<u8>>> {
    let mirror = Mirror::open(src)?;
    let Some(file) = mirror.read_manifest_opt(&spack::key_manifest(fpr))? else {
        return Ok(None);
    };
    let Some(rec) = file.manifest.record(media_type::PGP_KEYS) else {
        return Ok(None);
    };
    Ok(Some(
        std::fs::read(mirror.blob_path(rec)?).context("reading the published key")?,
    ))
}

impl Plan {
    fn blob_items(&self) -> Result<Vec<Item>> {
        let mut seen = BTreeSet::new();
        let mut items = Vec::new();
        let recs = self
            .specs
            .iter()
            .flat_map(|s| s.blobs.iter())
            .chain(self.keys.iter().map(|k| &k.blob));
        for rec in recs {
            let key = rec.blob_key()?;
            if seen.insert(key.clone()) {
                items.push(Item {
                    body: Body::File(self.mirror.path(&key)),
                    key,
                    size: rec.content_length,
                    sha256: rec.checksum.clone(),
                    kind: ObjectKind::Blob,
                    media_type: Some(rec.media_type.clone()),
                    signed: false,
                    gate: None,
                });
            }
        }
        Ok(items)
    }

    fn spec_items(&self) -> Vec<Item> {
        self.specs
            .iter()
            .map(|s| Item {
                signed: s.signed_by.is_some(),
                ..Item::bytes(&s.key, s.bytes.clone(), ObjectKind::SpecManifest)
            })
            .collect()
    }

    fn key_items(&self) -> Vec<Item> {
        self.keys
            .iter()
            .map(|k| Item::bytes(&k.key, k.bytes.clone(), ObjectKind::KeyManifest))
            .collect()
    }

    /// The objects in upload order (the index and key index come last, merged).
    pub fn objects(&self) -> Result<Vec<PlannedObject>> {
        let mut out: Vec<PlannedObject> = Vec::new();
        let mut add = |items: Vec<Item>| {
            out.extend(items.into_iter().map(|i| PlannedObject {
                key: i.key,
                kind: i.kind,
                size: i.size,
            }))
        };
        add(self.blob_items()?);
        add(self.spec_items());
        add(self.key_items());
        add(vec![Item::bytes(
            spack::LAYOUT_JSON,
            LAYOUT_JSON_CONTENT.as_bytes().to_vec(),
            ObjectKind::LayoutJson,
        )]);
        out.push(PlannedObject {
            key: spack::INDEX_MANIFEST.into(),
            kind: ObjectKind::IndexManifest,
            size: 0,
        });
        if !self.keys.is_empty() {
            out.push(PlannedObject {
                key: spack::KEYS_MANIFEST.into(),
                kind: ObjectKind::KeyIndexManifest,
                size: 0,
            });
        }
        Ok(out)
    }
}

/// What the publish phases took.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub index: Merged,
    pub keys: Merged,
    pub timings: Vec<(&'static str, Duration)>,
}

/// Upload a checked plan.
pub async fn publish(plan: &Plan, p: &Publisher, settle: Duration) -> Result<Outcome> {
    let mut out = Outcome::default();
    let mut t = Instant::now();
    let mut phase = |name: &'static str, out: &mut Outcome| {
        out.timings.push((name, t.elapsed()));
        t = Instant::now();
    };
    p.plan_bytes(plan.objects()?.iter().map(|o| o.size).sum());
    p.upload_all(plan.blob_items()?)
        .await
        .context("uploading blobs")?;
    phase("blobs", &mut out);
    p.upload_all(plan.spec_items())
        .await
        .context("uploading spec manifests")?;
    phase("spec_manifests", &mut out);
    p.upload_all(plan.key_items())
        .await
        .context("uploading key manifests")?;
    let layout = Item::bytes(
        spack::LAYOUT_JSON,
        LAYOUT_JSON_CONTENT.as_bytes().to_vec(),
        ObjectKind::LayoutJson,
    );
    if p.store.head(spack::LAYOUT_JSON).await?.is_none() {
        p.upload(layout).await.context("uploading v3/layout.json")?;
    }
    phase("keys_and_layout", &mut out);

    let specs: Vec<&SpecBlob> = plan.specs.iter().map(|s| &s.spec).collect();
    out.index = merge::<Index>(
        p,
        spack::INDEX_MANIFEST,
        ObjectKind::IndexManifest,
        settle,
        |index| {
            let mut changed = false;
            for s in &specs {
                changed |= index.add_spec(s)?;
            }
            Ok(changed)
        },
    )
    .await
    .context("merging the package index")?;
    phase("index", &mut out);
    if !plan.keys.is_empty() {
        let fprs: Vec<&str> = plan.keys.iter().map(|k| k.fingerprint.as_str()).collect();
        out.keys = merge::<KeyIndex>(
            p,
            spack::KEYS_MANIFEST,
            ObjectKind::KeyIndexManifest,
            settle,
            |ki| {
                let mut changed = false;
                for f in &fprs {
                    changed |= ki.insert(f);
                }
                Ok(changed)
            },
        )
        .await
        .context("merging the key index")?;
        phase("key_index", &mut out);
    }
    Ok(out)
}
