//! The change list: every key a run created or replaced, written by `sf-publish` and read by
//! `sf-invalidate`, and the kinds of object it names.
//!
//! Schema (`schema/change-list.schema.json`, generated from [`ChangeList`] and checked by a test):
//! `{"schema_version":1,"destination":"s3://bucket/prefix","changes":[{"key","url","object_key",
//! "kind","action","immutable","size","sha256"}, ...]}`. `key` is relative to `destination` (the same keys the
//! storage layout formats, so `/<key>` is the CDN path when the CDN serves the destination root);
//! objects skipped because they were already there unchanged are not listed. `immutable` marks
//! content-addressed blobs, which a CDN never needs to invalidate. The order is the order of
//! writes.

use std::path::Path;

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind of a published object.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// `blobs/sha256/..`: a tarball, spec, index, key or key-index blob of a mirror.
    Blob,
    /// `v3/manifests/spec/**.spec.manifest.json` (usually clearsigned).
    SpecManifest,
    /// `v3/manifests/key/<FPR>.key.manifest.json`.
    KeyManifest,
    /// `v3/manifests/key/keys.manifest.json`.
    KeyIndexManifest,
    /// `v3/manifests/index/index.manifest.json`.
    IndexManifest,
    /// `v3/layout.json`.
    LayoutJson,
    /// A relocatable Slurm tarball.
    Tarball,
    /// A detached signature (`.asc`) of a tarball or of `SHA256SUMS`.
    Signature,
    /// A folder's `SHA256SUMS`.
    Sums,
    /// `keys/*.asc`: the signing key's public certificate.
    PublicKey,
    /// `keys/signing-key.fingerprint`: the fingerprint of the key that signs now.
    KeyFingerprint,
}

impl ObjectKind {
    /// Whether the object never changes at its key: content-addressed, so a CDN never needs to
    /// invalidate it and caches may keep it for good.
    pub fn immutable(self) -> bool {
        self == ObjectKind::Blob
    }
}

/// Bumped when a field changes meaning or is removed.
pub const CHANGE_LIST_VERSION: u32 = 1;

/// Whether a key was new or had other content before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Replaced,
}

/// One changed object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// Key relative to the destination root, e.g. `noble/slurm/deps/v3/manifests/index/index.manifest.json`.
    pub key: String,
    /// Full destination URL (`s3://...` or `file://...`).
    pub url: String,
    /// The key in the bucket, the destination's prefix included (for a directory, the same as
    /// `key`): what a CDN in front of the bucket root serves at `/<object_key>`.
    pub object_key: String,
    pub kind: ObjectKind,
    pub action: Action,
    /// True for content-addressed blobs: never changes once written, nothing to invalidate.
    pub immutable: bool,
    pub size: u64,
    /// Lowercase hex sha256 of the content written.
    pub sha256: String,
}

/// What one run changed at one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeList {
    pub schema_version: u32,
    /// The destination root the keys are relative to.
    pub destination: String,
    pub changes: Vec<Change>,
}

impl ChangeList {
    pub fn new(destination: &str) -> Self {
        ChangeList {
            schema_version: CHANGE_LIST_VERSION,
            destination: destination.to_string(),
            changes: Vec::new(),
        }
    }

    /// Write as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::fsutil::write_atomic(path, &bytes)
            .with_context(|| format!("writing the change list {}", path.display()))
    }
}

/// The JSON Schema of [`ChangeList`], as checked into the repository.
pub fn schema_json() -> String {
    crate::record::schema_json_of::<ChangeList>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_schema_matches_the_type() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/change-list.schema.json"
        );
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == schema_json(),
            "schema/change-list.schema.json is out of date; regenerate it with `cargo run -p sf-publish --example write-schema`"
        );
    }
}
