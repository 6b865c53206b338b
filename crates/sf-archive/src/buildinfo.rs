//! `BUILDINFO.json`: what a tarball was built from and what the pack did to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or is removed.
pub const BUILDINFO_SCHEMA_VERSION: u32 = 1;

/// The build facts shipped in every tarball.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub schema_version: u32,
    pub slurm_version: Option<String>,
    /// The exact Spack package version of Slurm.
    pub slurm_spack_version: Option<String>,
    pub toolchain: String,
    pub os: String,
    pub gcc: String,
    pub glibc: String,
    pub arch: String,
    /// Spack's microarchitecture target.
    pub target: String,
    pub gpu: bool,
    /// Package name to Spack DAG hash, for every root and dependency in the view.
    pub spec_hashes: BTreeMap<String, String>,
    /// RFC 3339 UTC, equal to `source_date_epoch`, so two packs of one view agree.
    pub build_date: String,
    pub source_date_epoch: u64,
    /// The commit of the tooling (and package repo) that built it.
    pub source_commit: Option<String>,
    pub relocation: Relocation,
}

/// What relocation did and what it could not do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocation {
    /// The build-time prefixes relocated away from.
    pub build_prefixes: Vec<String>,
    /// ELF files whose RPATH/RUNPATH now is `$ORIGIN`-relative.
    pub elf_relocated: Vec<String>,
    /// RPATH entries into the install tree with nothing in the view to point at (build-only deps).
    pub rpaths_dropped: u64,
    /// Files that still hold a build prefix as text (configs, scripts, compiled-in strings):
    /// these need `SLURM_INSTALL_PREFIX` or an edit to work from another prefix.
    pub files_with_build_prefix: Vec<String>,
}

impl BuildInfo {
    /// Fresh build facts with the schema version set.
    pub fn new() -> Self {
        BuildInfo {
            schema_version: BUILDINFO_SCHEMA_VERSION,
            ..Default::default()
        }
    }
}
