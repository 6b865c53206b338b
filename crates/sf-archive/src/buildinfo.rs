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
    /// The OS, GCC and glibc the cell's toolchain stands for (the support matrix); what the view
    /// was really built on is `built_on`.
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
    /// Measured where the view was built (the build image, or the host for `--rehearsal`);
    /// absent when nobody measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_on: Option<BuiltOn>,
    /// Packed from a view the pipeline's Spack build did not make (a local rehearsal): for trying
    /// the steps out, not for users.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearsal: bool,
}

/// What a view was really built on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltOn {
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: String,
    pub gcc: String,
    pub glibc: String,
}

impl BuiltOn {
    /// This machine's: `/etc/os-release`, `gcc -dumpfullversion`, `getconf GNU_LIBC_VERSION`
    /// (an empty field when a tool is missing).
    pub fn here() -> Self {
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_default();
        BuiltOn {
            os,
            gcc: run("gcc", &["-dumpfullversion", "-dumpversion"]),
            glibc: run("getconf", &["GNU_LIBC_VERSION"])
                .trim_start_matches("glibc ")
                .to_string(),
        }
    }
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
