//! `sf-build test`: prove a tarball works before anything publishes it.
//!
//! The archive is first checked on the host (no member may land outside its destination). Then
//! the test script (`scripts/test-tarball.sh`, embedded) runs either in a clean container of the
//! cell's base image with the tarball mounted read-only, or on this host (`--local`) against a
//! fresh prefix extracted by us: it loads the modulefile with Lmod, checks `sinfo --version`
//! against the cell's Slurm version and runs `ldd` on every ELF file of the view.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use sf_core::bad_input;

use crate::engine::Engine;

/// The test script, shipped inside the binary.
pub const SCRIPT: &str = include_str!("../scripts/test-tarball.sh");

/// Where the tarball test runs.
#[derive(Debug)]
pub enum Where<'a> {
    /// On this host.
    Local,
    /// In a fresh container of `image`.
    Container {
        engine: &'a Engine,
        image: String,
        run_args: Vec<String>,
    },
}

/// The outcome of a tarball test.
#[derive(Debug)]
pub struct TestOutcome {
    pub passed: bool,
    /// The script's output (stdout then stderr).
    pub log: String,
    /// The `PASS:` line or the `FAIL:` reason.
    pub summary: String,
}

impl TestOutcome {
    /// The verdict of a test script: it passed if it exited 0 and said `PASS:`.
    pub fn from_output(output: &std::process::Output) -> Self {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let summary = stdout
            .lines()
            .chain(stderr.lines())
            .find(|l| l.starts_with("PASS:") || l.starts_with("FAIL:"))
            .map(str::to_string)
            .unwrap_or_else(|| format!("the test exited with {} without a verdict", output.status));
        TestOutcome {
            passed: output.status.success() && summary.starts_with("PASS:"),
            log: format!("{stdout}{stderr}"),
            summary,
        }
    }
}

/// Run the tarball test.
pub fn run(
    tarball: &Path,
    module: &str,
    version: &str,
    place: &Where,
    scratch: &Path,
) -> Result<TestOutcome> {
    if !tarball.is_file() {
        return Err(bad_input(format!(
            "the tarball {} does not exist",
            tarball.display()
        )));
    }
    sf_archive::extract::check(tarball)?;
    let script = scratch.join("test-tarball.sh");
    std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let output = match place {
        Where::Local => {
            let prefix = scratch.join("prefix");
            sf_archive::extract(tarball, &prefix)?;
            let mut c = Command::new("bash");
            c.arg(&script).arg("--prefix").arg(&prefix).args([
                "--module",
                module,
                "--version",
                version,
            ]);
            // A clean environment: what the user's shell would have, nothing of ours.
            c.env_clear();
            for k in ["PATH", "HOME", "LANG", "TERM"] {
                if let Some(v) = std::env::var_os(k) {
                    c.env(k, v);
                }
            }
            c.stdin(Stdio::null())
                .output()
                .context("running the tarball test script")?
        }
        Where::Container {
            engine,
            image,
            run_args,
        } => {
            let abs = tarball.canonicalize()?;
            let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
            args.extend(run_args.iter().cloned());
            args.extend([
                "--volume".into(),
                format!("{}:/sf/tarball.tar.gz:ro", abs.display()),
                "--volume".into(),
                format!("{}:/sf/test-tarball.sh:ro", script.display()),
                "--entrypoint".into(),
                "/bin/bash".into(),
                image.clone(),
                "/sf/test-tarball.sh".into(),
                "--tarball".into(),
                "/sf/tarball.tar.gz".into(),
                "--module".into(),
                module.into(),
                "--version".into(),
                version.into(),
            ]);
            engine
                .command(&args)
                .stdin(Stdio::null())
                .output()
                .context("running the tarball test container")?
        }
    };
    Ok(TestOutcome::from_output(&output))
}

/// A scratch directory for one test run, kept on failure.
pub fn scratch_dir(base: Option<&Path>) -> Result<PathBuf> {
    let base = base
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let dir = base.join(format!("sf-build-test-{}", sf_core::fsutil::random_hex(6)?));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
