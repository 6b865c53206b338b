//! The real `sf-matrix` binary: args in; stdout, stderr, exit code and GITHUB_OUTPUT out.

use assert_cmd::Command;
use serde_json::Value;
use sf_testkit::parse_file_commands;

fn sf_matrix() -> Command {
    Command::from_std(sf_matrix_std())
}

fn sf_matrix_std() -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("sf-matrix"));
    // A clean slate: no runner variables or SF_* settings leak in from the caller.
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") {
            c.env_remove(k);
        }
    }
    c
}

fn cells(stdout: &[u8]) -> Vec<Value> {
    let v: Value = serde_json::from_slice(stdout).unwrap();
    v["include"].as_array().unwrap().clone()
}

#[test]
fn version_pipeline_all_by_amd64_is_18_full_cells() {
    let out = sf_matrix()
        .args([
            "--slurm-versions",
            "all",
            "--toolchains",
            "all",
            "--archs",
            "amd64",
            "--pipeline",
            "version",
        ])
        .assert()
        .success();
    let cells = cells(&out.get_output().stdout);
    assert_eq!(cells.len(), 18);
    let ids: std::collections::BTreeSet<_> = cells
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 18, "ids are unique");
    for c in &cells {
        for field in [
            "toolchain",
            "os",
            "base_image",
            "slurm_version",
            "slurm_spack_version",
            "arch",
            "spack_target",
            "build",
            "id",
        ] {
            assert!(c[field].is_string(), "{field} in {c}");
        }
        assert!(c["runner_labels"].as_array().unwrap().len() >= 2);
        assert!(c["deps_mirror"]["url"]
            .as_str()
            .unwrap()
            .starts_with("s3://"));
        assert!(c["version_mirror"]["cdn_url"]
            .as_str()
            .unwrap()
            .starts_with("https://"));
        let t = &c["tarball"];
        let key = t["key"]
            .as_str()
            .unwrap_or_else(|| panic!("tarball.key in {c}"));
        assert!(
            key.starts_with("builds/") && key.ends_with(".tar.gz"),
            "{key}"
        );
        assert_eq!(t["signature_key"], format!("{key}.asc"));
        assert!(t["signature_cdn_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{key}.asc")));
    }
    let noble = cells
        .iter()
        .find(|c| c["id"] == "version-25.11-noble-amd64-cpu")
        .unwrap();
    assert_eq!(noble["version_mirror"]["key"], "noble/slurm/25.11");
    assert_eq!(noble["deps_mirror"]["key"], "noble/slurm/deps");
    assert_eq!(
        noble["runner_labels"],
        serde_json::json!(["self-hosted", "X64"])
    );
    assert_eq!(
        noble["tarball"]["key"],
        "builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
    );
}

#[test]
fn deps_pipeline_is_one_cell_per_toolchain_without_a_version() {
    let out = sf_matrix()
        .args(["--pipeline", "deps", "--toolchains", "all"])
        .assert()
        .success();
    let cells = cells(&out.get_output().stdout);
    assert_eq!(cells.len(), 6);
    assert!(cells.iter().all(|c| c["slurm_version"].is_null()
        && c["version_mirror"].is_null()
        && c["tarball"].is_null()));
}

#[test]
fn tarball_cells_carry_their_keys() {
    let out = sf_matrix()
        .args([
            "--pipeline",
            "tarball",
            "--slurm-versions",
            "24.11",
            "--toolchains",
            "jammy",
            "--archs",
            "amd64,arm64",
        ])
        .assert()
        .success();
    let cells = cells(&out.get_output().stdout);
    assert_eq!(
        cells[0]["tarball"]["key"],
        "builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz"
    );
    assert_eq!(
        cells[1]["tarball"]["key"],
        "builds/24.11/jammy/arm64/slurm-24.11-jammy-arm64-software.tar.gz"
    );
    assert_eq!(cells[1]["spack_target"], "aarch64");
}

#[test]
fn env_vars_work_like_flags_and_destination_shapes_urls() {
    let out = sf_matrix()
        .env("SF_PIPELINE", "tarball")
        .env("SF_TOOLCHAINS", " noble ")
        .env("SF_SLURM_VERSIONS", "25.11")
        .env("SF_DESTINATION", "file:///srv/bucket")
        .env("SF_CDN_URL", "http://127.0.0.1:9000/")
        .assert()
        .success();
    let cells = cells(&out.get_output().stdout);
    assert_eq!(cells.len(), 1);
    assert_eq!(
        cells[0]["tarball"]["url"],
        "file:///srv/bucket/builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
    );
    assert_eq!(
        cells[0]["tarball"]["cdn_url"],
        "http://127.0.0.1:9000/builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
    );
}

#[test]
fn github_output_parses_as_the_runner_parses_it() {
    let dir = tempfile::tempdir().unwrap();
    let gh_out = dir.path().join("output");
    let results = dir.path().join("results");
    let out = sf_matrix()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh_out)
        .args(["--pipeline", "version", "--results-dir"])
        .arg(&results)
        .assert()
        .success();
    let parsed = parse_file_commands(&std::fs::read_to_string(&gh_out).unwrap());
    assert_eq!(parsed["count"], "18");
    assert_eq!(parsed["chunks"], "1");
    let matrix: Value = serde_json::from_str(&parsed["matrix"]).unwrap();
    let stdout: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(matrix, stdout);
    assert_eq!(parsed["matrix-1"], parsed["matrix"]);
    let records: Vec<_> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(parsed["result"], records[0].display().to_string());
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(&records[0]).unwrap()).unwrap();
    assert_eq!(rec["step"], "sf-matrix");
    assert_eq!(rec["status"], "success");
    assert_eq!(rec["outputs"]["count"], 18);
    assert_eq!(rec["inputs"]["pipeline"], "version");
    assert_eq!(
        rec["inputs"]["toolchains"],
        Value::Null,
        "not given: the defaults"
    );
}

#[test]
fn the_result_record_carries_the_selection_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let out = sf_matrix()
        .env("SF_EXCLUDE", "toolchain=jammy;arch=arm64")
        .args(["--pipeline", "tarball", "--slurm-versions", "25.11, 24.11"])
        .args(["--toolchains", "noble,jammy", "--archs", "amd64"])
        .args(["--include", "slurm=23.11,toolchain=focal,build=gpu"])
        .arg("--results-dir")
        .arg(&results)
        .assert()
        .success();
    assert_eq!(cells(&out.get_output().stdout).len(), 3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    // arm64 is not selected, so that exclude leaves nothing out: a warning, not an error.
    assert!(
        stderr.contains("warning: --exclude arch=arm64 matches none of the 3 selected cells"),
        "{stderr}"
    );
    assert!(!stderr.contains("toolchain=jammy matches"), "{stderr}");
    let file = std::fs::read_dir(&results)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let i = &rec["inputs"];
    assert_eq!(i["pipeline"], "tarball");
    assert_eq!(i["slurm_versions"], "25.11, 24.11");
    assert_eq!(i["toolchains"], "noble,jammy");
    assert_eq!(i["archs"], "amd64");
    assert_eq!(i["builds"], Value::Null);
    assert_eq!(
        i["include"],
        serde_json::json!(["slurm=23.11,toolchain=focal,build=gpu"])
    );
    assert_eq!(
        i["exclude"],
        serde_json::json!(["toolchain=jammy;arch=arm64"])
    );
    assert_eq!(i["skip_published"], Value::Null);
    assert_eq!(rec["outputs"]["count"], 3);
}

#[test]
fn a_results_dir_that_cannot_be_written_is_bad_input_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let gh_out = dir.path().join("output");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for results in [file.clone(), file.join("below")] {
        let out = sf_matrix()
            .env("GITHUB_OUTPUT", &gh_out)
            .arg("--results-dir")
            .arg(&results)
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr);
        assert!(
            stderr.contains(&format!("--results-dir {}", results.display()))
                && stderr.contains("a directory this step can write to"),
            "{stderr}"
        );
        assert!(out.get_output().stdout.is_empty());
        assert!(!gh_out.exists());
    }
}

#[test]
fn inside_actions_an_error_is_printed_once() {
    let out = sf_matrix()
        .env("GITHUB_ACTIONS", "true")
        .args(["--toolchains", "plan9"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("::error::") && stderr.contains("unknown toolchain \"plan9\""),
        "{stderr}"
    );
}

#[test]
fn large_matrices_split_under_githubs_limits() {
    let dir = tempfile::tempdir().unwrap();
    let gh_out = dir.path().join("output");
    // all x all x all x all, at most 5 cells per matrix: 3*6*2*2 = 72 cells -> 15 matrices
    let out = sf_matrix()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh_out)
        .args([
            "--pipeline",
            "tarball",
            "--slurm-versions",
            "all",
            "--toolchains",
            "all",
            "--archs",
            "all",
        ])
        .args(["--builds", "all", "--max-cells", "5"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        stderr.contains("::warning::72 cells split into 15 matrices"),
        "{stderr}"
    );
    let parsed = parse_file_commands(&std::fs::read_to_string(&gh_out).unwrap());
    assert_eq!(parsed["chunks"], "15");
    assert!(!parsed.contains_key("matrix"));
    let mut total = 0;
    for i in 1..=15 {
        let m: Value = serde_json::from_str(&parsed[&format!("matrix-{i}")]).unwrap();
        let n = m["include"].as_array().unwrap().len();
        assert!(n <= 5);
        total += n;
    }
    assert_eq!(total, 72);
}

/// Ids of the cells in each `matrix-N` output, in order, up to `chunks`.
fn chunk_ids(parsed: &std::collections::BTreeMap<String, String>) -> Vec<Vec<String>> {
    let n: usize = parsed["chunks"].parse().unwrap();
    (1..=n)
        .map(|i| {
            let m: Value = serde_json::from_str(&parsed[&format!("matrix-{i}")]).unwrap();
            m["include"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn stdout_ids(stdout: &[u8]) -> Vec<String> {
    cells(stdout)
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn more_than_256_cells_split_into_a_full_matrix_and_the_rest() {
    // A data file of 300 toolchains (one Slurm version, one arch, one build): 300 version cells.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("matrix.yaml");
    let mut yaml = String::from(
        "schema: 1\nslurm_versions:\n  - name: \"25.11\"\n    spack_version: \"25-11-6-1\"\n    channel: latest\n    default: true\ntoolchains:\n",
    );
    for i in 0..300 {
        yaml.push_str(&format!(
            "  - name: tc{i:03}\n    os: Test {i}\n    family: apt\n    base_image: ubuntu:tc{i:03}\n    gcc: \"13\"\n    glibc: \"2.39\"\n    spack_os: null\n    default: true\n"
        ));
    }
    yaml.push_str("archs:\n  - name: amd64\n    runner_labels: [self-hosted, X64]\n    spack_target: x86_64_v3\n    default: true\nbuilds:\n  - name: cpu\n    default: true\n");
    std::fs::write(&file, yaml).unwrap();
    let gh_out = dir.path().join("output");
    let out = sf_matrix()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh_out)
        .arg("--matrix-file")
        .arg(&file)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        stderr.contains(
            "::warning::300 cells split into 2 matrices (matrix-1..matrix-2): GitHub runs at most 256 jobs per matrix"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("bytes"), "{stderr}");
    let parsed = parse_file_commands(&std::fs::read_to_string(&gh_out).unwrap());
    assert_eq!(parsed["count"], "300");
    assert_eq!(parsed["chunks"], "2");
    assert!(!parsed.contains_key("matrix"));
    let chunks = chunk_ids(&parsed);
    assert_eq!(chunks[0].len(), 256);
    assert_eq!(chunks[1].len(), 44);
    let all = stdout_ids(&out.get_output().stdout);
    assert_eq!(all.len(), 300);
    assert_eq!(chunks.concat(), all, "every cell once, in order");
}

#[test]
fn a_long_cdn_url_splits_by_bytes_under_1_mb_each() {
    // 72 tarball cells, each with four CDN URLs of 5,000+ bytes: about 1.5 MB of JSON.
    let dir = tempfile::tempdir().unwrap();
    let gh_out = dir.path().join("output");
    let cdn = format!("https://cdn.example.com/{}", "p".repeat(5_000));
    let out = sf_matrix()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &gh_out)
        .args(["--pipeline", "tarball", "--slurm-versions", "all"])
        .args(["--toolchains", "all", "--archs", "all", "--builds", "all"])
        .arg("--cdn-url")
        .arg(&cdn)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    assert!(
        stderr.contains("::warning::72 cells split into 2 matrices"),
        "{stderr}"
    );
    assert!(
        stderr.contains("one output holds at most 1000000 bytes") && !stderr.contains("jobs"),
        "{stderr}"
    );
    let parsed = parse_file_commands(&std::fs::read_to_string(&gh_out).unwrap());
    assert_eq!(parsed["count"], "72");
    assert!(!parsed.contains_key("matrix"));
    let n: usize = parsed["chunks"].parse().unwrap();
    for i in 1..=n {
        let m = &parsed[&format!("matrix-{i}")];
        assert!(m.len() <= 1_000_000, "matrix-{i} is {} bytes", m.len());
        assert!(m.contains(&cdn));
    }
    let all = stdout_ids(&out.get_output().stdout);
    assert_eq!(all.len(), 72);
    assert_eq!(
        chunk_ids(&parsed).concat(),
        all,
        "every cell once, in order"
    );
}

#[test]
fn bad_input_exits_2_names_the_value_and_writes_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let gh_out = dir.path().join("output");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--toolchains", "noble,bionic"],
            "unknown toolchain \"bionic\"; valid: noble, jammy",
        ),
        (
            &["--slurm-versions", "26.05"],
            "unknown Slurm version \"26.05\"; valid: 25.11, 24.11, 23.11",
        ),
        (&["--archs", "riscv64"], "valid: amd64, arm64"),
        (&["--builds", "tpu"], "valid: cpu, gpu"),
        (
            &["--toolchains", ""],
            "--toolchains: the list is empty; give `all` or a comma list; valid: all, noble, jammy, resolute, rockylinux10, rockylinux9, rockylinux8, focal",
        ),
        (
            &["--archs", "amd64, amd64"],
            "--archs: \"amd64\" is listed twice; valid: all, amd64, arm64",
        ),
        (
            &[
                "--include",
                "slurm=24.11,toolchain=focal",
                "--exclude",
                "toolchain=focal",
            ],
            "--include slurm=24.11,toolchain=focal names cell version-24.11-focal-amd64-cpu, which --exclude toolchain=focal leaves out",
        ),
        (
            &["--toolchains", "noble;rm -rf /"],
            "unknown toolchain \"noble;rm -rf /\"",
        ),
        (&["--toolchains", "{a: b}"], "unknown toolchain \"{a: b}\""),
        (
            &["--include", "slurm=25.11,toolchain=plan9"],
            "unknown toolchain \"plan9\"",
        ),
        (
            &["--include", "toolchain=noble"],
            "must name a Slurm version",
        ),
        (&["--pipeline", "nightly"], "nightly"),
        (&["--destination", "ftp://x"], "unknown scheme"),
    ];
    for (args, expected) in cases {
        let out = sf_matrix()
            .env("GITHUB_OUTPUT", &gh_out)
            .args(*args)
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.get_output().stdout.is_empty(), "{args:?} printed data");
        assert!(!gh_out.exists(), "{args:?} wrote GITHUB_OUTPUT");
    }
}

#[test]
fn a_broken_data_file_is_bad_input_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("matrix.yaml");
    let text = std::fs::read_to_string(sf_testkit::repo_root().join("data/matrix.yaml")).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "base_image: docker.io/library/ubuntu:jammy",
            "base_image: \"Ubuntu Jammy\"",
        ),
    )
    .unwrap();
    let out = sf_matrix().arg("--matrix-file").arg(&file).assert().code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr);
    let line = text
        .lines()
        .position(|l| l.contains("base_image: docker.io/library/ubuntu:jammy"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("matrix.yaml:{line}:")), "{stderr}");
    assert!(
        stderr.starts_with("error: loading the support matrix\n  caused by:"),
        "{stderr}"
    );
}

#[test]
fn a_closed_stdout_pipe_exits_quietly() {
    // The reader is gone before the first byte is written, so even a small output hits EPIPE.
    for format in ["json", "table"] {
        let mut cmd = sf_matrix_std();
        cmd.args(["--format", format]);
        let (status, stderr) = sf_testkit::run_with_closed_stdout(&mut cmd);
        assert_eq!(status.code(), Some(0), "--format {format}: {stderr}");
        assert!(stderr.is_empty(), "--format {format}: {stderr}");
    }
}

#[test]
fn table_format_lists_every_cell() {
    let out = sf_matrix()
        .args(["--format", "table", "--pipeline", "deps"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout);
    assert!(text.starts_with("id "));
    assert!(text.contains("deps-rockylinux8-amd64-cpu"));
    assert!(text.trim_end().ends_with("6 cells"));
}

#[test]
fn help_documents_env_vars() {
    let out = sf_matrix().arg("--help").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout);
    for var in [
        "SF_SLURM_VERSIONS",
        "SF_TOOLCHAINS",
        "SF_ARCHS",
        "SF_BUILDS",
        "SF_PIPELINE",
        "SF_INCLUDE",
        "SF_EXCLUDE",
        "SF_SKIP_PUBLISHED",
    ] {
        assert!(text.contains(var), "{var} missing from --help");
    }
}

#[test]
fn empty_sf_variables_mean_the_default() {
    // What a workflow's `env: SF_X: ${{ vars.SF_X }}` gives when the variable is not set.
    let out = sf_matrix()
        .env("SF_DESTINATION", "")
        .env("SF_TOOLCHAINS", "")
        .env("SF_PIPELINE", "")
        .assert()
        .success();
    let cells = cells(&out.get_output().stdout);
    assert_eq!(cells.len(), 18);
    assert!(cells[0]["deps_mirror"]["url"]
        .as_str()
        .unwrap()
        .starts_with("s3://slurm-factory-spack-buildcache-4b670/"));
}

#[test]
fn skip_published_drops_exactly_the_published_cells() {
    let status = serde_json::json!({
        "schema_version": 1,
        "published": [{"id": "tarball-25.11-noble-amd64-cpu", "reason": "there"}],
        "pending": [{"id": "tarball-25.11-jammy-amd64-cpu", "reason": "missing"}]
    });
    let args = [
        "--pipeline",
        "tarball",
        "--slurm-versions",
        "25.11",
        "--toolchains",
        "noble,jammy",
    ];
    let all = cells(
        &sf_matrix()
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    let out = sf_matrix()
        .args(args)
        .args(["--skip-published", "-"])
        .write_stdin(status.to_string())
        .assert()
        .success();
    let left = cells(&out.get_output().stdout);
    assert_eq!(left.len(), all.len() - 1);
    assert!(left
        .iter()
        .all(|c| c["id"] != "tarball-25.11-noble-amd64-cpu"));
    assert!(left
        .iter()
        .any(|c| c["id"] == "tarball-25.11-jammy-amd64-cpu"));

    // The same from the environment, as a workflow sets it.
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("published.json");
    std::fs::write(&status_file, status.to_string()).unwrap();
    let out = sf_matrix()
        .args(args)
        .env("SF_SKIP_PUBLISHED", &status_file)
        .assert()
        .success();
    assert_eq!(cells(&out.get_output().stdout), left);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("status.json");
    std::fs::write(&bad, "{\"include\": []}").unwrap();
    let out = sf_matrix()
        .args(args)
        .arg("--skip-published")
        .arg(&bad)
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("sf-publish status"));
    assert!(out.get_output().stdout.is_empty());
}

#[test]
fn a_variable_of_ours_that_is_not_utf8_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"tar\xffball");
    for var in ["SF_PIPELINE", "GPG_PASSPHRASE"] {
        let out = sf_matrix().env(var, bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "the environment variable {var} is not valid UTF-8"
            )),
            "{var}: {err}"
        );
    }
    // Someone else's variable is none of our business.
    sf_matrix()
        .env("SOME_OTHER_TOOL", bad)
        .args(["--pipeline", "deps"])
        .assert()
        .success();
}
