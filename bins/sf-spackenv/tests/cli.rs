//! The real `sf-spackenv` binary: a cell in (file, stdin, flags); files, stdout, GITHUB_OUTPUT, the
//! result record and the exit code out.

mod support;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use sf_core::layout::Layout;
use sf_core::matrix::{CellKey, Pipeline, SupportMatrix};
use sf_testkit::parse_file_commands;
use support::snapshots::{snapshot_root, SNAPSHOT_BUILD_JOBS};

fn sf_spackenv() -> Command {
    let mut c = Command::cargo_bin("sf-spackenv").unwrap();
    // A clean slate: no runner variables or SF_* settings leak in from the caller.
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") {
            c.env_remove(k);
        }
    }
    c
}

/// A cell exactly as sf-matrix prints it (same library, same layout).
fn cell(pipeline: Pipeline, v: Option<&str>, tc: &str, arch: &str, build: &str) -> Value {
    let m = SupportMatrix::embedded();
    let key = CellKey {
        pipeline,
        slurm_version: v.map(|v| m.slurm_version(v).unwrap()),
        toolchain: m.toolchain_name(tc).unwrap(),
        arch: m.arch_name(arch).unwrap(),
        build: m.build_kind(build).unwrap(),
    };
    serde_json::to_value(Layout::default().cell(&m, &key)).unwrap()
}

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// The one result record in `dir`.
fn only_record(dir: &Path) -> Value {
    let records: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap()
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

#[test]
fn a_cell_file_gives_the_snapshot_files_outputs_and_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let cell_file = write_json(
        dir.path(),
        "cell.json",
        &cell(Pipeline::Version, Some("25.11"), "noble", "amd64", "cpu"),
    );
    let out = dir.path().join("out/env");
    let gh_out = dir.path().join("github_output");
    let results = dir.path().join("results");
    let a = sf_spackenv()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh_out)
        .arg("--cell")
        .arg(&cell_file)
        .arg("--out")
        .arg(&out)
        .arg("--results-dir")
        .arg(&results)
        .args(["--build-jobs", "4"])
        .assert()
        .success();

    assert_eq!(
        tree(&out),
        vec![
            "Dockerfile",
            "build.sh",
            "modules/slurm/25.11-noble.lua",
            "spack.yaml"
        ]
    );
    let snap = snapshot_root().join("version-25.11-noble-amd64-cpu");
    for f in tree(&out) {
        assert_eq!(
            std::fs::read(out.join(&f)).unwrap(),
            std::fs::read(snap.join(&f)).unwrap(),
            "{f} differs from its snapshot"
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out.join("build.sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);

    let parsed = parse_file_commands(&std::fs::read_to_string(&gh_out).unwrap());
    assert_eq!(parsed["cell"], "version-25.11-noble-amd64-cpu");
    assert_eq!(
        parsed["spack_yaml"],
        out.join("spack.yaml").display().to_string()
    );
    assert_eq!(
        parsed["dockerfile"],
        out.join("Dockerfile").display().to_string()
    );
    assert_eq!(
        parsed["build_script"],
        out.join("build.sh").display().to_string()
    );
    assert_eq!(
        parsed["modulefile"],
        out.join("modules/slurm/25.11-noble.lua")
            .display()
            .to_string()
    );
    assert!(parsed["image_tag"].starts_with("slurm-factory-build:noble-"));

    let stdout: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(stdout["cell"], "version-25.11-noble-amd64-cpu");
    assert_eq!(stdout["files"].as_array().unwrap().len(), 4);
    assert_eq!(stdout["container"]["view_root"], "/opt/slurm/view");

    let records: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1);
    let rec: Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(rec["step"], "sf-spackenv");
    assert_eq!(rec["status"], "success");
    assert_eq!(rec["cell"], "version-25.11-noble-amd64-cpu");
    assert_eq!(rec["artifacts"].as_array().unwrap().len(), 4);
    assert_eq!(rec["cell_data"]["toolchain"], "noble");
}

#[test]
fn stdin_matrices_flags_and_repeat_runs_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let c = cell(
        Pipeline::Tarball,
        Some("24.11"),
        "rockylinux9",
        "amd64",
        "gpu",
    );
    let matrix = serde_json::json!({ "include": [c] });
    let from_stdin = sf_spackenv()
        .args(["--cell", "-", "--print", "spack.yaml"])
        .env("SF_BUILD_JOBS", "4")
        .write_stdin(serde_json::to_vec(&matrix).unwrap())
        .assert()
        .success();
    let from_flags = sf_spackenv()
        .args([
            "--pipeline",
            "tarball",
            "--slurm-version",
            "24.11",
            "--toolchain",
            "rockylinux9",
            "--build",
            "gpu",
        ])
        .args(["--print", "spack.yaml", "--build-jobs", "4"])
        .assert()
        .success();
    // The JSON itself, as a workflow passes toJSON(matrix) through SF_CELL.
    let inline = sf_spackenv()
        .args(["--print", "spack.yaml", "--build-jobs", "4"])
        .env("SF_CELL", serde_json::to_string(&c).unwrap())
        .assert()
        .success();
    assert_eq!(inline.get_output().stdout, from_flags.get_output().stdout);
    assert_eq!(
        from_stdin.get_output().stdout,
        from_flags.get_output().stdout
    );
    let snap =
        std::fs::read(snapshot_root().join("tarball-24.11-rockylinux9-amd64-gpu/spack.yaml"))
            .unwrap();
    assert_eq!(from_flags.get_output().stdout, snap);

    let f = write_json(dir.path(), "c.json", &c);
    for _ in 0..2 {
        sf_spackenv()
            .arg("--cell")
            .arg(&f)
            .arg("--out")
            .arg(dir.path().join("o"))
            .assert()
            .success();
    }
    sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .arg("--out")
        .arg(dir.path().join("p"))
        .assert()
        .success();
    for name in tree(&dir.path().join("o")) {
        assert_eq!(
            std::fs::read(dir.path().join("o").join(&name)).unwrap(),
            std::fs::read(dir.path().join("p").join(&name)).unwrap()
        );
    }
}

#[test]
fn print_writes_one_file_to_stdout_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    for (what, expect) in [
        ("dockerfile", "FROM docker.io/library/ubuntu:jammy"),
        ("build-script", "#!/usr/bin/env bash"),
        ("modulefile", "conflict(\"slurm\")"),
        ("spack.yaml", "spack:"),
    ] {
        let a = sf_spackenv()
            .current_dir(dir.path())
            .args([
                "--pipeline",
                "version",
                "--slurm-version",
                "23.11",
                "--toolchain",
                "jammy",
                "--print",
                what,
            ])
            .assert()
            .success();
        assert!(
            String::from_utf8_lossy(&a.get_output().stdout).contains(expect),
            "{what}"
        );
    }
    assert!(tree(dir.path()).is_empty());
    let a = sf_spackenv()
        .args([
            "--pipeline",
            "deps",
            "--toolchain",
            "noble",
            "--print",
            "modulefile",
        ])
        .assert()
        .code(2);
    assert!(
        stderr_of(&a).contains("builds no Slurm"),
        "{}",
        stderr_of(&a)
    );
}

#[test]
fn dry_run_lists_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let gh_out = dir.path().join("github_output");
    let a = sf_spackenv()
        .env("GITHUB_OUTPUT", &gh_out)
        .args([
            "--pipeline",
            "deps",
            "--toolchain",
            "rockylinux8",
            "--dry-run",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    let kinds: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["spack.yaml", "dockerfile", "build-script"]);
    assert_eq!(v["dry_run"], true);
    assert!(v["files"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with(out.to_str().unwrap()));
    assert_eq!(v["files"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(!out.exists());
    assert!(!gh_out.exists());
}

#[test]
fn a_closed_stdout_pipe_exits_quietly() {
    // The reader is gone before the first byte: the JSON writer meets EPIPE at once.
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sf-spackenv"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--pipeline",
        "deps",
        "--toolchain",
        "rockylinux8",
        "--dry-run",
    ]);
    let (status, stderr) = sf_testkit::run_with_closed_stdout(&mut cmd);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn cells_not_from_the_data_file_are_refused_with_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = cell(Pipeline::Version, Some("25.11"), "noble", "amd64", "cpu");
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut unknown_tc = base.clone();
    unknown_tc["toolchain"] = "bionic".into();
    cases.push((
        "unknown toolchain",
        unknown_tc,
        "unknown toolchain \"bionic\"",
    ));
    let mut unknown_v = base.clone();
    unknown_v["slurm_version"] = "22.05".into();
    cases.push((
        "unknown version",
        unknown_v,
        "unknown Slurm version \"22.05\"",
    ));
    let mut unknown_arch = base.clone();
    unknown_arch["arch"] = "riscv64".into();
    cases.push((
        "unknown arch",
        unknown_arch,
        "unknown architecture \"riscv64\"",
    ));
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("deps_mirror");
    cases.push(("missing field", missing, "deps_mirror"));
    let mut tampered = base.clone();
    tampered["slurm_spack_version"] = "25.11.0".into();
    cases.push(("tampered pin", tampered, "slurm_spack_version"));
    let two = serde_json::json!({ "include": [base.clone(), base.clone()] });
    cases.push(("two cells", two, "2 cells"));
    let mut extra = base.clone();
    extra["runner"] = "big".into();
    cases.push((
        "unknown key",
        extra,
        "unknown key \"runner\"; valid keys: arch, base_image",
    ));
    let mut nested = base.clone();
    nested["version_mirror"]["signed"] = true.into();
    cases.push((
        "unknown nested key",
        nested,
        "unknown key \"version_mirror.signed\"; valid keys in version_mirror: cdn_url, key, url",
    ));
    let mut moved = base.clone();
    moved["version_mirror"]["key"] = "noble/slurm/25.11-test".into();
    cases.push(("moved mirror", moved, "the cell's version_mirror is"));
    let mut release = base.clone();
    release["slurm_release"] = "25.11.99".into();
    cases.push(("tampered release", release, "slurm_release"));
    let mut image = base.clone();
    image["pipeline"] = "image".into();
    cases.push(("image pipeline", image, "no Spack environment"));

    for (what, value, message) in cases {
        let f = write_json(dir.path(), "bad.json", &value);
        let a = sf_spackenv()
            .arg("--cell")
            .arg(&f)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2);
        let err = stderr_of(&a);
        assert!(err.contains(message), "{what}: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert!(!out.exists(), "{what}: wrote {:?}", tree(&out));
    }
    let a = sf_spackenv()
        .args(["--cell", "/nonexistent/cell.json", "--print", "spack.yaml"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("/nonexistent/cell.json"));
    let a = sf_spackenv()
        .args(["--cell", "-", "--print", "spack.yaml"])
        .write_stdin("not json")
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("not JSON"));
}

#[test]
fn bad_usage_is_exit_2() {
    let a = sf_spackenv().assert().code(2);
    assert!(stderr_of(&a).contains("--cell"));
    let a = sf_spackenv()
        .args(["--pipeline", "version", "--toolchain", "noble"])
        .arg("--print")
        .arg("spack.yaml")
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--slurm-version"));
    let a = sf_spackenv()
        .args([
            "--pipeline",
            "version",
            "--slurm-version",
            "25.11",
            "--toolchain",
            "noble",
        ])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--out"));
    sf_spackenv()
        .args([
            "--pipeline",
            "version",
            "--slurm-version",
            "25.11",
            "--toolchain",
            "noble",
            "--print",
            "readme",
        ])
        .assert()
        .code(2);
    let dir = tempfile::tempdir().unwrap();
    let f = write_json(
        dir.path(),
        "c.json",
        &cell(Pipeline::Deps, None, "noble", "amd64", "cpu"),
    );
    let a = sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .args(["--pipeline", "version", "--print", "spack.yaml"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("disagrees"));
    sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .args(["--toolchain", "jammy", "--print", "spack.yaml"])
        .assert()
        .code(2);
}

#[test]
fn an_unwritable_out_is_exit_2_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let gh_out = dir.path().join("github_output");
    let results = dir.path().join("results");
    let a = sf_spackenv()
        .env("GITHUB_OUTPUT", &gh_out)
        .args([
            "--pipeline",
            "version",
            "--slurm-version",
            "25.11",
            "--toolchain",
            "noble",
            "--out",
        ])
        .arg(blocker.join("out"))
        .arg("--results-dir")
        .arg(&results)
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--out"), "{}", stderr_of(&a));
    // The failure is recorded in --results-dir; nothing else appears, under --out or beside it.
    let rec = only_record(&results);
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["cell"], "version-25.11-noble-amd64-cpu");
    assert_eq!(rec["error"]["exit_code"], 2);
    assert!(
        rec["error"]["message"].as_str().unwrap().contains("--out"),
        "{rec}"
    );
    let files = tree(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], "a-file");
    assert!(files[1].starts_with("results/sf-spackenv-"), "{files:?}");
    assert!(!gh_out.exists());

    // A directory this run creates is removed again when a file inside it cannot be written:
    // `modules` exists as a file, so the modulefile's folder cannot be made after the others.
    let out = dir.path().join("fresh/env");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("modules"), "in the way").unwrap();
    sf_spackenv()
        .args([
            "--pipeline",
            "tarball",
            "--slurm-version",
            "25.11",
            "--toolchain",
            "noble",
            "--out",
        ])
        .arg(&out)
        .assert()
        .code(2);
    assert_eq!(
        tree(&out),
        vec!["modules"],
        "no temporary or partial files are left"
    );
}

#[test]
fn deps_cells_get_no_modulefile_and_no_view() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_json(
        dir.path(),
        "c.json",
        &cell(Pipeline::Deps, None, "rockylinux10", "amd64", "cpu"),
    );
    sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .success();
    assert_eq!(
        tree(&dir.path().join("o")),
        vec!["Dockerfile", "build.sh", "spack.yaml"]
    );
    let y = std::fs::read_to_string(dir.path().join("o/spack.yaml")).unwrap();
    assert!(
        y.contains("  view: false\n") && !y.contains("modules:") && !y.contains("slurm@"),
        "{y}"
    );
}

#[test]
fn a_refused_cell_leaves_a_failed_record_and_nothing_under_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let results = dir.path().join("results");
    let mut c = cell(Pipeline::Deps, None, "noble", "amd64", "cpu");
    c["toolchain"] = "bionic".into();
    let f = write_json(dir.path(), "bad.json", &c);
    let a = sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .arg("--out")
        .arg(&out)
        .arg("--results-dir")
        .arg(&results)
        .assert()
        .code(2);
    let rec = only_record(&results);
    assert_eq!(rec["step"], "sf-spackenv");
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["error"]["exit_code"], 2);
    let message =
        rec["error"]["message"].as_str().unwrap().to_string() + &rec["error"]["chain"].to_string();
    assert!(message.contains("bionic"), "{rec}");
    assert!(stderr_of(&a).contains("bionic"));
    assert!(!out.exists(), "wrote {:?}", tree(&out));
}

#[test]
fn build_jobs_reach_spack_yaml_and_the_script_and_default_to_the_cores() {
    let print = |what: &str, jobs: Option<&str>| {
        let mut c = sf_spackenv();
        c.args([
            "--pipeline",
            "deps",
            "--toolchain",
            "noble",
            "--print",
            what,
        ]);
        if let Some(j) = jobs {
            c.args(["--build-jobs", j]);
        }
        String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    for (jobs, want) in [(Some("7"), 7), (None, cores)] {
        let yaml = print("spack.yaml", jobs);
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            doc["spack"]["config"]["build_jobs"].as_u64(),
            Some(want as u64),
            "{yaml}"
        );
        let script = print("build-script", jobs);
        assert!(
            script.contains(&format!("JOBS=\"${{SF_BUILD_JOBS:-{want}}}\"")),
            "{script}"
        );
    }
    assert_ne!(SNAPSHOT_BUILD_JOBS, 7);
    for bad in ["0", "many"] {
        let a = sf_spackenv()
            .args(["--pipeline", "deps", "--toolchain", "noble", "--dry-run"])
            .args(["--build-jobs", bad])
            .assert()
            .code(2);
        assert!(stderr_of(&a).contains("--build-jobs"), "{}", stderr_of(&a));
    }
}

#[test]
fn an_unwritable_github_output_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A directory cannot be appended to: GITHUB_OUTPUT fails after the files were staged.
    let gh_out = dir.path().join("github_output");
    std::fs::create_dir_all(&gh_out).unwrap();
    let results = dir.path().join("results");
    let a = sf_spackenv()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh_out)
        .args(["--pipeline", "deps", "--toolchain", "noble", "--out"])
        .arg(&out)
        .arg("--results-dir")
        .arg(&results)
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("GITHUB_OUTPUT"), "{}", stderr_of(&a));
    assert!(!out.exists(), "left {:?}", tree(&out));
    assert!(tree(&gh_out).is_empty());
    let rec = only_record(&results);
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["error"]["exit_code"], 2);
}

#[test]
fn a_directory_in_the_way_of_a_later_file_leaves_out_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = [
        "--pipeline",
        "tarball",
        "--slurm-version",
        "25.11",
        "--toolchain",
        "noble",
        "--out",
    ];
    sf_spackenv().args(args).arg(&out).assert().success();
    let before: Vec<(String, Vec<u8>)> = tree(&out)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(out.join(&f)).unwrap()))
        .collect();
    // build.sh becomes a directory: the run for another version renames spack.yaml and the
    // Dockerfile into place, fails on build.sh, and must put the earlier two back.
    std::fs::remove_file(out.join("build.sh")).unwrap();
    std::fs::create_dir(out.join("build.sh")).unwrap();
    std::fs::write(out.join("build.sh/keep"), "mine").unwrap();
    let a = sf_spackenv()
        .args(["--pipeline", "tarball", "--slurm-version", "24.11"])
        .args(["--toolchain", "noble", "--out"])
        .arg(&out)
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("build.sh"), "{}", stderr_of(&a));
    let mut expect: Vec<(String, Vec<u8>)> = before
        .into_iter()
        .filter(|(f, _)| f != "build.sh")
        .collect();
    expect.push(("build.sh/keep".into(), b"mine".to_vec()));
    expect.sort();
    let now: Vec<(String, Vec<u8>)> = tree(&out)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(out.join(&f)).unwrap()))
        .collect();
    assert_eq!(
        now, expect,
        "the earlier files are restored, nothing else is left"
    );
}

#[test]
fn storage_flags_that_disagree_with_the_cell_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_json(
        dir.path(),
        "c.json",
        &cell(Pipeline::Deps, None, "noble", "amd64", "cpu"),
    );
    let a = sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .env("SF_DESTINATION", "file:///srv/elsewhere")
        .args(["--print", "spack.yaml"])
        .assert()
        .code(2);
    assert!(
        stderr_of(&a).contains("SF_DESTINATION"),
        "{}",
        stderr_of(&a)
    );
    // The same settings sf-matrix used are accepted.
    sf_spackenv()
        .arg("--cell")
        .arg(&f)
        .env(
            "SF_DESTINATION",
            "s3://slurm-factory-spack-buildcache-4b670",
        )
        .env("SF_CDN_URL", sf_core::layout::DEFAULT_CDN_URL)
        .args(["--print", "spack.yaml"])
        .assert()
        .success();
}
