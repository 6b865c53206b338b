//! What the container tests of sf-build share: real Podman (runc, vfs storage kept under
//! target/) and the Debian base image made by debootstrap, built once per storage.

#![allow(dead_code)] // each test binary uses its own part of it

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use assert_cmd::Command as Bin;
use sf_testkit::require_tool;

/// The local base image the container tests use (debootstrap + podman import, cached under target/).
pub const BASE_IMAGE: &str = "localhost/sf-test-base:bookworm";

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

pub fn short_hash(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:08x}", h.finish() as u32)
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

/// The Debian base image: `debootstrap --variant=minbase bookworm` (with Lmod, which the
/// toolchains' images get from their package manager) imported into the test storage once.
pub fn base_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        require_tool("debootstrap");
        require_tool("flock");
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sf-build-podman");
        fs::create_dir_all(&root).unwrap();
        // One process builds it; concurrent test processes wait on the lock, then find it.
        let script = format!(
            "set -e; rc=0; podman {args} image exists {BASE_IMAGE} || rc=$?; \
             case $rc in 0) exit 0 ;; 1) ;; *) exit \"$rc\" ;; esac; \
             d=$(mktemp -d {root}/debootstrap.XXXXXX); \
             debootstrap --variant=minbase --include=lmod bookworm \"$d/root\" http://deb.debian.org/debian >\"$d.log\" 2>&1 || {{ cat \"$d.log\" >&2; exit 1; }}; \
             tar -C \"$d/root\" -c . | podman {args} import - {BASE_IMAGE} >/dev/null; rm -rf \"$d\" \"$d.log\"",
            args = podman_args().join(" "),
            root = root.display()
        );
        sh(Command::new("flock").arg(root.join("base.lock")).args(["bash", "-c", &script]));
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
