//! `sf-build test-mirror`: prove a signed build-cache mirror installs before anything publishes it.
//!
//! The deps and version pipelines publish Spack mirrors, not tarballs; their test is what a user
//! does with them. On the host each mirror is first checked to be a complete, signed layout-3
//! mirror that publishes its key. Then the test script (`scripts/test-mirror.sh`, embedded) runs
//! in a fresh container of the cell's build image (the one with Spack) with the mirrors and the
//! build's `spack.lock` mounted read-only: it adds the mirrors as signed, trusts the keys they
//! publish, installs the lock file's concrete specs with `--cache-only` and signature checks on,
//! and for a version cell runs the installed `sinfo --version`. The container gets no cache mount
//! and no variable of ours.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

use sf_core::bad_input;
use sf_core::layout::spack;
use sf_spack::Mirror;

use crate::engine::Engine;
use crate::tarball_test::TestOutcome;

/// The test script, shipped inside the binary.
pub const SCRIPT: &str = include_str!("../scripts/test-mirror.sh");

/// What the host check found in one mirror.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckedMirror {
    pub path: PathBuf,
    pub specs: usize,
    pub keys: Vec<String>,
}

/// Check that `dir` is a complete, signed layout-3 mirror that publishes its key; nothing is run
/// on a mirror that fails this (bad input: exit 2).
pub fn check_mirror(dir: &Path) -> Result<CheckedMirror> {
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "the mirror {} is not a directory",
            dir.display()
        )));
    }
    let mirror = Mirror::open(dir)?;
    mirror.require_v3()?;
    let entries = mirror.spec_manifests()?;
    if entries.is_empty() {
        return Err(bad_input(format!(
            "the mirror {} holds no spec manifest under {}",
            dir.display(),
            spack::SPEC_MANIFESTS_DIR
        )));
    }
    for entry in &entries {
        let check = mirror.check_spec_manifest(entry)?;
        if !check.file.is_signed() {
            return Err(bad_input(format!(
                "{} in {} is not signed: sign the mirror first (sf-sign mirror {})",
                entry.key,
                dir.display(),
                dir.display()
            )));
        }
        if !check.is_ok() {
            return Err(bad_input(format!(
                "{} in {} is not complete: {}",
                entry.key,
                dir.display(),
                check
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    }
    let keys: Vec<String> = mirror
        .read_key_index()?
        .map(|ki| ki.fingerprints().map(str::to_string).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(bad_input(format!(
            "the mirror {} publishes no key ({} is missing or empty): Spack could not trust it",
            dir.display(),
            spack::KEYS_MANIFEST
        )));
    }
    Ok(CheckedMirror {
        path: dir.to_path_buf(),
        specs: entries.len(),
        keys,
    })
}

/// One mirror test.
#[derive(Debug)]
pub struct MirrorTest<'a> {
    pub engine: &'a Engine,
    pub image: String,
    pub run_args: Vec<String>,
    /// The build's concretized environment.
    pub lock: PathBuf,
    /// Local signed mirrors, mounted read-only.
    pub mirrors: Vec<PathBuf>,
    /// Mirror URLs the container reaches itself (a version cell's published deps mirror).
    pub upstream: Vec<String>,
    /// The Slurm version `sinfo --version` must report, for cells that build Slurm.
    pub version: Option<String>,
}

/// Run the test in a fresh container; the script's verdict decides.
pub fn run(t: &MirrorTest, scratch: &Path) -> Result<TestOutcome> {
    if !t.lock.is_file() {
        return Err(bad_input(format!(
            "no lock file at {}: give --env-dir the directory the build ran with (sf-build build's env_dir output)",
            t.lock.display()
        )));
    }
    let script = scratch.join("test-mirror.sh");
    std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(t.run_args.iter().cloned());
    let ro = |host: &Path, inside: &str| -> Result<String> {
        Ok(format!("{}:{inside}:ro", host.canonicalize()?.display()))
    };
    args.extend(["--volume".into(), ro(&script, "/sf/test-mirror.sh")?]);
    args.extend(["--volume".into(), ro(&t.lock, "/sf/spack.lock")?]);
    let mut script_args: Vec<String> = vec!["--lock".into(), "/sf/spack.lock".into()];
    for (i, m) in t.mirrors.iter().enumerate() {
        let inside = format!("/sf/mirror-{i}");
        args.extend(["--volume".into(), ro(m, &inside)?]);
        script_args.extend(["--mirror".into(), format!("file://{inside}")]);
    }
    for url in &t.upstream {
        script_args.extend(["--mirror".into(), url.clone()]);
    }
    if let Some(v) = &t.version {
        script_args.extend(["--version".into(), v.clone()]);
    }
    args.extend([
        "--entrypoint".into(),
        "/bin/bash".into(),
        t.image.clone(),
        "/sf/test-mirror.sh".into(),
    ]);
    args.extend(script_args);
    let output = t
        .engine
        .command(&args)
        .stdin(Stdio::null())
        .output()
        .context("running the mirror test container")?;
    Ok(TestOutcome::from_output(&output))
}
