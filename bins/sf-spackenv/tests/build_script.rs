//! The rendered build script run by real bash, outside a container: where Spack is not installed
//! it must stop at the first Spack step and say which step failed and where its log is, after
//! recording the compiler it found.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use sf_spackenv::plan::FileKind;
use sf_testkit::require_tool;
use support::snapshots::{snapshot_cells, snapshot_files};

/// A PATH holding only the named real tools (so `spack` is certainly absent).
fn path_with(dir: &Path, tools: &[&str]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for t in tools {
        symlink(require_tool(t), bin.join(t)).unwrap();
    }
    bin.display().to_string()
}

fn script(id: &str) -> Vec<u8> {
    let cell = snapshot_cells().into_iter().find(|c| c.id() == id).unwrap();
    snapshot_files(&cell)
        .into_iter()
        .find(|f| f.kind == FileKind::BuildScript)
        .unwrap()
        .bytes
}

#[test]
fn a_failed_step_names_itself_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("build.sh");
    std::fs::write(&script_path, script("version-25.11-noble-amd64-cpu")).unwrap();
    let logs = dir.path().join("logs");
    let path = path_with(dir.path(), &["gcc", "nproc", "tee", "mkdir"]);
    let out = Command::new(require_tool("bash"))
        .arg(&script_path)
        .env_clear()
        .env("PATH", path)
        .env("SF_ENV_DIR", dir.path())
        .env("SF_LOG_DIR", &logs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let log = logs.join("compiler.log");
    assert!(
        stderr.contains(&format!("error: [version-25.11-noble-amd64-cpu] step 'compiler' failed (exit 127); its log is {}", log.display())),
        "{stderr}"
    );
    let gcc = std::fs::read_to_string(logs.join("gcc-version")).unwrap();
    assert!(gcc.trim().chars().next().unwrap().is_ascii_digit(), "{gcc}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains(&format!("gcc {} (expected 13)", gcc.trim())),
        "{log_text}"
    );
    assert!(!logs.join("install.log").exists(), "later steps never ran");
}

#[test]
fn a_missing_compiler_fails_the_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("build.sh");
    std::fs::write(&script_path, script("deps-rockylinux8-amd64-cpu")).unwrap();
    let logs = dir.path().join("logs");
    let path = path_with(dir.path(), &["nproc", "tee", "mkdir"]);
    let out = Command::new(require_tool("bash"))
        .arg(&script_path)
        .env_clear()
        .env("PATH", path)
        .env("SF_LOG_DIR", &logs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("[deps-rockylinux8-amd64-cpu] step 'compiler' failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&logs.join("compiler.log").display().to_string()),
        "{stderr}"
    );
}
