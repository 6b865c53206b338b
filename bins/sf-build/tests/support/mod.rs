//! What the container tests of sf-build share: real Podman (runc, vfs storage kept under
//! target/) and the rehearsal cell's Debian base image (scripts/lib/rehearsal-image.sh), made
//! once per storage.

#![allow(dead_code)] // each test binary uses its own part of it

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use assert_cmd::Command as Bin;
use sf_testkit::{repo_root, require_tool};

/// The local base image the container tests use: the rehearsal cell's (data/rehearsal/matrix.yaml
/// names it; debootstrap + podman import, kept under target/).
pub const BASE_IMAGE: &str = "localhost/slurm-factory-rehearsal:bookworm";

/// Run a command that must succeed; its stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Global options for every podman call: runc, vfs storage kept under target/ (so the base image
/// survives between runs), cgroupfs and file events (no systemd here).
pub fn podman_args() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sf-build-podman");
    vec![
        format!("--root={}", root.join("storage").display()),
        // Short (socket paths have a length limit) and one per storage root.
        format!(
            "--runroot=/tmp/sf-build-podman-run-{}",
            short_hash(&root.display().to_string())
        ),
        "--storage-driver=vfs".into(),
        "--runtime=runc".into(),
        "--cgroup-manager=cgroupfs".into(),
        "--events-backend=file".into(),
    ]
}

/// The first 8 hex digits of the sha256 of `s`: what scripts compute with `sha256sum | cut -c1-8`
/// to find a storage's runroot (scripts/checks/local-pipeline.sh).
pub fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))[..8].to_string()
}

pub const RUN_ARGS: [&str; 2] = [
    "--run-arg=--ulimit=nofile=20000:20000",
    "--run-arg=--ulimit=nproc=32768:32768",
];

pub fn podman() -> Command {
    require_tool("podman");
    require_tool("runc");
    let mut c = Command::new("podman");
    c.args(podman_args());
    c
}

/// The rehearsal base image, made by the project's own script into the test storage once.
pub fn base_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let matrix = fs::read_to_string(repo_root().join("data/rehearsal/matrix.yaml")).unwrap();
        assert!(
            matrix.contains(&format!("base_image: {BASE_IMAGE}\n")),
            "data/rehearsal/matrix.yaml names another base image than {BASE_IMAGE}"
        );
        require_tool("debootstrap");
        require_tool("flock");
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sf-build-podman");
        fs::create_dir_all(&root).unwrap();
        // One process makes it; concurrent test processes wait on the lock, then find it.
        sh(Command::new("flock")
            .arg(root.join("base.lock"))
            .arg("bash")
            .arg(repo_root().join("scripts/lib/rehearsal-image.sh"))
            .arg(BASE_IMAGE)
            .arg("podman")
            .args(podman_args())
            .env("TMPDIR", &root));
    });
    BASE_IMAGE
}

pub fn with_engine(b: &mut Bin) -> &mut Bin {
    b.args(["--engine", "podman"]);
    for a in podman_args() {
        b.arg(format!("--engine-arg={a}"));
    }
    b.args(RUN_ARGS)
}
