//! `sf-build test`: prove a tarball works before anything publishes it.
//!
//! The archive is first checked on the host (no member may land outside its destination). Then
//! the test script (`scripts/test-tarball.sh`, embedded) runs either in a clean container of the
//! cell's base image with the tarball mounted read-only, or on this host (`--local`) against a
//! fresh prefix extracted by us: it loads the modulefile with Lmod, checks `sinfo --version`
//! against the cell's Slurm version and runs `ldd` on every ELF file of the view; then (unless
//! `--quick`) it installs the tarball with its own `slurm_install.sh --full-init`, starts
//! slurmctld and slurmd, and runs jobs on that one-node cluster.

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

/// How the test cluster authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterAuth {
    /// auth/slurm with a key slurm_install.sh generates: nothing else needed.
    Slurm,
    /// auth/munge: munged must already run where the test runs.
    Munge,
    /// auth/none: no authentication, for a Slurm built without munge and libjwt.
    None,
}

impl ClusterAuth {
    fn as_str(self) -> &'static str {
        match self {
            ClusterAuth::Slurm => "slurm",
            ClusterAuth::Munge => "munge",
            ClusterAuth::None => "none",
        }
    }
}

/// What the test does beyond the version and library checks.
#[derive(Clone, Copy, Debug)]
pub struct TestOptions {
    /// Only the version and the libraries: no cluster.
    pub quick: bool,
    pub auth: ClusterAuth,
}

impl TestOptions {
    fn script_args(&self) -> Vec<String> {
        let mut args = vec!["--auth".to_string(), self.auth.as_str().to_string()];
        if self.quick {
            args.push("--quick".into());
        }
        args
    }
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
    /// The steps the script announced (`==> ...` lines), in order: what the record keeps.
    pub fn steps(&self) -> Vec<String> {
        self.log
            .lines()
            .filter_map(|l| l.strip_prefix("==> "))
            .map(str::to_string)
            .collect()
    }

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
    options: &TestOptions,
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
            // Deeper than the build prefix and named otherwise: nothing may find its way back.
            let prefix = scratch.join("relocated/elsewhere/slurm-under-test");
            sf_archive::extract(tarball, &prefix)?;
            let mut c = Command::new("bash");
            c.arg(&script)
                .arg("--prefix")
                .arg(&prefix)
                .args(["--module", module, "--version", version])
                .args(options.script_args());
            if !options.quick {
                // This host's own Slurm, if it has one, keeps its ports and its user.
                let (ctld, slurmd) = two_free_ports()?;
                c.arg("--ports")
                    .arg(format!("{ctld},{slurmd}"))
                    .arg("--slurm-user")
                    .arg(current_user());
            }
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
            args.extend(options.script_args());
            // A throw-away container may get the Lmod its image lacks; a host never does.
            args.push("--install-lmod".into());
            engine
                .command(&args)
                .stdin(Stdio::null())
                .output()
                .context("running the tarball test container")?
        }
    };
    Ok(TestOutcome::from_output(&output))
}

/// Two different TCP ports nothing listens on now.
fn two_free_ports() -> Result<(u16, u16)> {
    let bind = || std::net::TcpListener::bind(("0.0.0.0", 0)).context("finding a free port");
    let (a, b) = (bind()?, bind()?);
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// The name of the user this runs as (what the test cluster runs as on a host).
fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "root".into())
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
