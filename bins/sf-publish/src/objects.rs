//! What each published object is, and the HTTP metadata that follows from it.
//!
//! Blobs are content-addressed and never change, so caches keep them for a year without asking
//! again; everything else (manifests, the index, keys, `SHA256SUMS`, tarballs and signatures) can
//! change at a fixed key and is served `no-cache`, so a CDN or client revalidates it (a cheap 304
//! when unchanged) and never serves an index that points at something newer than it knows.

use sf_spack::manifest::media_type;
use sf_store::PutMeta;

/// `Cache-Control` of immutable, content-addressed objects.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of objects that change at a fixed key.
pub const REVALIDATE: &str = "public, no-cache";

pub use sf_core::changes::ObjectKind;

/// The HTTP metadata that follows from an object's kind.
pub trait ObjectMeta {
    fn cache_control(self) -> &'static str;
    fn content_type(self, blob_media_type: Option<&str>, signed: bool) -> &'static str;
    fn meta(self, sha256: &str, blob_media_type: Option<&str>, signed: bool) -> PutMeta;
}

impl ObjectMeta for ObjectKind {
    fn cache_control(self) -> &'static str {
        if self.immutable() {
            IMMUTABLE
        } else {
            REVALIDATE
        }
    }

    /// Content-Type; a blob's follows its record's media type.
    fn content_type(self, blob_media_type: Option<&str>, signed: bool) -> &'static str {
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
            ObjectKind::Sums | ObjectKind::KeyFingerprint => "text/plain; charset=utf-8",
            ObjectKind::PublicKey => "application/pgp-keys",
        }
    }

    /// The metadata an object of this kind is stored with.
    fn meta(self, sha256: &str, blob_media_type: Option<&str>, signed: bool) -> PutMeta {
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
