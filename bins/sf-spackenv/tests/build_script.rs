//! The rendered build script run by real bash, outside a container: where Spack is not installed
//! it must stop at the first Spack step and say which step failed and where its log is, after
//! recording the compiler it found; with a stand-in `spack` on PATH it must run every step in
//! order with the right arguments, and stop at whichever step fails, naming it and its log.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use sf_spackenv::plan::FileKind;
use sf_testkit::require_tool;
use support::snapshots::{snapshot_cells, snapshot_files, SNAPSHOT_BUILD_JOBS};

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
    let path = path_with(dir.path(), &["gcc", "tee", "mkdir"]);
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
    // What the image is, measured, for the tarball's BUILDINFO.json.
    let facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(logs.join("built-on.json")).unwrap()).unwrap();
    let gcc = facts["gcc"].as_str().unwrap().to_string();
    assert!(gcc.chars().next().unwrap().is_ascii_digit(), "{facts}");
    assert!(
        facts["os"].is_string() && facts["glibc"].is_string(),
        "{facts}"
    );
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
    let path = path_with(dir.path(), &["tee", "mkdir"]);
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

/// A stand-in for Spack: Spack cannot be installed on this machine (it is cloned from git into the
/// build image, and nothing but package registries is reachable here), so this stub takes its
/// place on PATH. The script under test is the real rendered bash. The stub appends its argv (one
/// call a line, each argument shell-quoted) to `$SPACK_ARGV_LOG`, works out which build step the
/// call belongs to from the subcommand, and exits 1 when that step is `$SF_FAIL_AT`.
const SPACK_STUB: &str = r#"#!/bin/bash
printf '%q ' "$@" >>"$SPACK_ARGV_LOG"
echo >>"$SPACK_ARGV_LOG"
args=("$@")
if [[ "${args[0]:-}" == --env-dir ]]; then
    args=("${args[@]:2}")
fi
case "${args[0]:-} ${args[1]:-}" in
    "compiler list") step=compiler ;;
    "buildcache keys") step=trust-keys ;;
    "concretize "*) step=concretize ;;
    "install "*) step=install ;;
    "buildcache push") step=push ;;
    "env view") step=view ;;
    "module lmod") step=modules ;;
    *) echo "spack stub: unexpected call: $*" >&2; exit 3 ;;
esac
echo "spack stub: $step"
if [[ "${SF_FAIL_AT:-}" == "$step" ]]; then
    echo "spack stub: failing $step on purpose" >&2
    exit 1
fi
"#;

/// The outcome of one run of a cell's script with the stub.
struct StubRun {
    status: std::process::ExitStatus,
    stderr: String,
    /// The stub's calls, one line each.
    calls: Vec<String>,
    logs: std::path::PathBuf,
    env_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Run a cell's script with the stub; `SF_BUILD_JOBS=3` unless `default_jobs`.
fn run_with_stub(id: &str, fail_at: Option<&str>, default_jobs: bool) -> StubRun {
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("build.sh");
    std::fs::write(&script_path, script(id)).unwrap();
    let logs = dir.path().join("logs");
    let env_dir = dir.path().join("env");
    std::fs::create_dir_all(&env_dir).unwrap();
    let path = path_with(dir.path(), &["gcc", "tee", "mkdir"]);
    let stub = dir.path().join("bin/spack");
    std::fs::write(&stub, SPACK_STUB).unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let argv_log = dir.path().join("spack-argv");
    let mut cmd = Command::new(require_tool("bash"));
    cmd.arg(&script_path)
        .env_clear()
        .env("PATH", path)
        .env("SF_ENV_DIR", &env_dir)
        .env("SF_LOG_DIR", &logs)
        .env("SPACK_ARGV_LOG", &argv_log);
    if !default_jobs {
        cmd.env("SF_BUILD_JOBS", "3");
    }
    if let Some(step) = fail_at {
        cmd.env("SF_FAIL_AT", step);
    }
    let out = cmd.output().unwrap();
    let calls = std::fs::read_to_string(&argv_log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    StubRun {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
        logs,
        env_dir,
        _dir: dir,
    }
}

/// Every step after the compiler check, with the spack call it makes, in order.
fn expected_calls(env_dir: &Path, builds_slurm: bool, jobs: u32) -> Vec<(&'static str, String)> {
    let env = format!("--env-dir {}", env_dir.display());
    let mut calls = vec![
        ("compiler", "compiler list".to_string()),
        (
            "trust-keys",
            format!("{env} buildcache keys --install --trust"),
        ),
        ("concretize", format!("{env} concretize --force")),
        (
            "install",
            format!("{env} install --fail-fast --jobs {jobs}"),
        ),
        (
            "push",
            format!(
                "{env} buildcache push --unsigned --update-index --with-build-dependencies {}",
                sf_core::container::OUT_MIRROR_DIR
            ),
        ),
    ];
    if builds_slurm {
        calls.push(("view", format!("{env} env view regenerate")));
        calls.push((
            "modules",
            format!("{env} module lmod refresh --delete-tree --yes-to-all"),
        ));
    }
    calls
}

#[test]
fn a_version_cell_runs_every_step_in_order() {
    let r = run_with_stub("version-25.11-noble-amd64-cpu", None, false);
    assert!(r.status.success(), "{}", r.stderr);
    let want: Vec<String> = expected_calls(&r.env_dir, true, 3)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(r.calls, want, "{}", r.stderr);
    for step in [
        "compiler",
        "trust-keys",
        "concretize",
        "install",
        "push",
        "view",
        "modules",
    ] {
        let log = std::fs::read_to_string(r.logs.join(format!("{step}.log"))).unwrap();
        assert!(
            log.contains(&format!("spack stub: {step}")),
            "{step}: {log}"
        );
    }
    assert!(r.stderr.contains("build finished"), "{}", r.stderr);
}

#[test]
fn a_deps_cell_pushes_its_build_cache_and_makes_no_view_or_modules() {
    // Without SF_BUILD_JOBS the jobs are the rendered default (spack.yaml's config:build_jobs).
    let r = run_with_stub("deps-rockylinux9-amd64-cpu", None, true);
    assert!(r.status.success(), "{}", r.stderr);
    let want: Vec<String> = expected_calls(&r.env_dir, false, SNAPSHOT_BUILD_JOBS)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    assert_eq!(r.calls, want, "{}", r.stderr);
    assert!(!r.logs.join("view.log").exists());
    assert!(!r.logs.join("modules.log").exists());
}

#[test]
fn a_failure_at_any_spack_step_names_it_and_stops_there() {
    let id = "version-25.11-noble-amd64-cpu";
    for (cell, step) in [
        (id, "trust-keys"),
        (id, "concretize"),
        (id, "install"),
        (id, "push"),
        (id, "view"),
        (id, "modules"),
        ("deps-noble-amd64-cpu", "push"),
    ] {
        let r = run_with_stub(cell, Some(step), false);
        assert_eq!(r.status.code(), Some(1), "{step}: {}", r.stderr);
        let log = r.logs.join(format!("{step}.log"));
        assert!(
            r.stderr.contains(&format!(
                "error: [{cell}] step '{step}' failed (exit 1); its log is {} (all logs: {})",
                log.display(),
                r.logs.display()
            )),
            "{step}: {}",
            r.stderr
        );
        let log_text = std::fs::read_to_string(&log).unwrap();
        assert!(
            log_text.contains(&format!("spack stub: failing {step} on purpose")),
            "{step}: {log_text}"
        );
        // The calls made are exactly the steps up to and including the failed one.
        let all = expected_calls(&r.env_dir, cell.starts_with("version-"), 3);
        let upto = all.iter().position(|(s, _)| *s == step).unwrap();
        let want: Vec<String> = all[..=upto].iter().map(|(_, c)| c.clone()).collect();
        assert_eq!(r.calls, want, "{step}: {}", r.stderr);
        for (later, _) in &all[upto + 1..] {
            assert!(
                !r.logs.join(format!("{later}.log")).exists(),
                "{step}: the later step {later} ran"
            );
        }
        assert!(!r.logs.join("finished.log").exists(), "{step}");
    }
}
