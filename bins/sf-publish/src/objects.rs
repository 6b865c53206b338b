//! What each published object is, and the HTTP metadata that follows from it.
//!
//! Blobs are content-addressed and never change, so caches keep them for a year without asking
//! again; everything else (manifests, the index, keys, `SHA256SUMS`, tarballs and signatures) can
//! change at a fixed key and is served `no-cache`, so a CDN or client revalidates it (a cheap 304
//! when unchanged) and never serves an index that points at something newer than it knows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use sf_spack::manifest::media_type;
use sf_store::PutMeta;

/// `Cache-Control` of immutable, content-addressed objects.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of objects that change at a fixed key.
pub const REVALIDATE: &str = "public, no-cache";

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
}

impl ObjectKind {
    /// Whether the object never changes at its key (no invalidation needed).
    pub fn immutable(self) -> bool {
        self == ObjectKind::Blob
    }

    pub fn cache_control(self) -> &'static str {
        if self.immutable() {
            IMMUTABLE
        } else {
            REVALIDATE
        }
    }

    /// Content-Type; a blob's follows its record's media type.
    pub fn content_type(self, blob_media_type: Option<&str>, signed: bool) -> &'static str {
        match self {
            ObjectKind::Blob => match blob_media_type {
                Some(media_type::TARBALL) | Some(media_type::SPEC) => "application/gzip",
                Some(media_type::PGP_KEYS) => "application/pgp-keys",
                _ => "application/json",
            },
            ObjectKind::SpecManifest if signed => "text/plain; charset=utf-8",
            ObjectKind::SpecManifest
            | ObjectKind::KeyManifest
            | ObjectKind::KeyIndexManifest
            | ObjectKind::IndexManifest
            | ObjectKind::LayoutJson => "application/json",
            ObjectKind::Tarball => "application/gzip",
            ObjectKind::Signature => "application/pgp-signature",
            ObjectKind::Sums => "text/plain; charset=utf-8",
        }
    }

    /// The metadata an object of this kind is stored with.
    pub fn meta(self, sha256: &str, blob_media_type: Option<&str>, signed: bool) -> PutMeta {
        PutMeta {
            content_type: self.content_type(blob_media_type, signed).to_string(),
            cache_control: self.cache_control().to_string(),
            sha256: sha256.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blobs_are_cached_forever() {
        assert_eq!(ObjectKind::Blob.cache_control(), IMMUTABLE);
        for k in [
            ObjectKind::IndexManifest,
            ObjectKind::Tarball,
            ObjectKind::Signature,
            ObjectKind::Sums,
            ObjectKind::SpecManifest,
        ] {
            assert_eq!(k.cache_control(), REVALIDATE, "{k:?}");
            assert!(!k.immutable());
        }
        assert_eq!(
            ObjectKind::Blob.content_type(Some(media_type::INDEX), false),
            "application/json"
        );
    }
}
