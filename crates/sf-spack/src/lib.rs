//! The Spack binary build-cache format, as Spack v1.0 writes and reads it (`docs/spack-buildcache.md`).
//!
//! [`manifest`] parses and serialises the small JSON manifests (unsigned or clearsigned) and the key
//! index blob, byte for byte the way Spack writes them; [`mirror`] walks a build-cache mirror in a
//! local directory (layout 3, detecting layout 2), checks blobs against their records and writes
//! new blobs and manifests atomically; [`cache`] merges one build's mirror into a runner's shared
//! local cache. Every mirror-relative path comes from
//! [`sf_core::layout::spack`].

pub mod cache;
pub mod index;
pub mod manifest;
pub mod mirror;
pub mod spec;

pub use manifest::{BlobRecord, KeyIndex, Manifest, ManifestFile};
pub use mirror::{BlobStatus, Mirror, MirrorLayout, SpecManifestEntry};
