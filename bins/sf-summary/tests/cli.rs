//! The real `sf-summary` binary: result records in; Markdown, JSON, the job summary file, outputs
//! and GitHub calls (to a local server speaking GitHub's wire format) out.

mod github_server;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use sf_core::layout::Layout;
use sf_core::matrix::{ListArg, Pipeline, Selection, SupportMatrix};
use sf_core::record::{write_record, Artifact, ErrorInfo, ResultRecord, Status, SCHEMA_VERSION};
use sf_testkit::parse_file_commands;

use github_server::{FakeGitHub, OWNER, REPO, TOKEN};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn sf_summary() -> Command {
    let mut c = Command::cargo_bin("sf-summary").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") || k.starts_with("ACTIONS_") {
            c.env_remove(k);
        }
    }
    c
}

fn record(
    step: &str,
    cell: &sf_core::layout::Cell,
    status: Status,
    minute: u32,
    duration_ms: u64,
) -> ResultRecord {
    ResultRecord {
        schema_version: SCHEMA_VERSION,
        step: step.into(),
        cell: Some(cell.id.clone()),
        cell_data: Some(serde_json::to_value(cell).unwrap()),
        status,
        reason: None,
        started_at: format!("2026-11-21T10:{minute:02}:00Z"),
        finished_at: format!("2026-11-21T10:{minute:02}:30Z"),
        duration_ms,
        inputs: Default::default(),
        outputs: Default::default(),
        artifacts: vec![],
        metrics: Default::default(),
        timings_ms: Default::default(),
        error: None,
    }
}

/// An 18-cell tarball run (3 Slurm versions x 6 toolchains): two builds fail, two cells are
/// skipped as already published, the rest build, sign and publish. One artifact folder per job.
fn eighteen_cell_run(root: &Path) -> PathBuf {
    let m = SupportMatrix::embedded();
    let layout = Layout::default();
    let sel = Selection {
        slurm_versions: ListArg::All,
        toolchains: ListArg::All,
        ..Default::default()
    };
    let cells: Vec<_> = sel
        .expand(&m, Pipeline::Tarball)
        .unwrap()
        .iter()
        .map(|k| layout.cell(&m, k))
        .collect();
    assert_eq!(cells.len(), 18);
    let dir = root.join("artifacts");
    for (i, c) in cells.iter().enumerate() {
        let job = dir.join(format!("results-{}", c.id));
        let t = c.tarball.clone().unwrap();
        let size = 150_000_000 + i as u64 * 1_000_003;
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(t.file_name.as_bytes()))
        };
        match i {
            0 | 7 => {
                let mut r = record("sf-build", c, Status::Failed, 1, 1_234_567);
                r.error = Some(ErrorInfo {
                    message: format!(
                        "spack install failed for slurm@{}",
                        c.slurm_spack_version.clone().unwrap()
                    ),
                    chain: vec![
                        "==> Error: ProcessError: Command exited with status 2: 'make' '-j8'"
                            .into(),
                        "see the build log | tail".into(),
                    ],
                    exit_code: 1,
                    logs: Some(format!(
                        "/home/runner/.slurm-factory/logs/{}/debug-bundle.tar.gz",
                        c.id
                    )),
                });
                write_record(&job, &r).unwrap();
            }
            3 | 12 => {
                let mut r = record("sf-publish tarball", c, Status::Skipped, 2, 850);
                r.reason = Some("already published with the same sha256".into());
                write_record(&job, &r).unwrap();
            }
            _ => {
                let mut b = record(
                    "sf-build",
                    c,
                    Status::Success,
                    1,
                    2_000_000 + i as u64 * 1000,
                );
                b.artifacts.push(Artifact {
                    kind: "tarball".into(),
                    path: Some(format!("out/{}", t.file_name)),
                    size: Some(size),
                    sha256: Some(sha.clone()),
                    ..Default::default()
                });
                write_record(&job, &b).unwrap();
                let mut s = record("sf-sign file", c, Status::Success, 40, 4_200);
                s.artifacts.push(Artifact {
                    kind: "signature".into(),
                    path: Some(format!("out/{}.asc", t.file_name)),
                    signed_by: Some("50734A75360D09856541FA105F3F251E9B3A56B1".into()),
                    ..Default::default()
                });
                write_record(&job, &s).unwrap();
                let mut p = record("sf-publish tarball", c, Status::Success, 45, 61_000);
                p.artifacts.push(Artifact {
                    kind: "tarball".into(),
                    key: Some(t.key.clone()),
                    url: Some(t.url.clone()),
                    cdn_url: Some(t.cdn_url.clone()),
                    size: Some(size),
                    sha256: Some(sha.clone()),
                    ..Default::default()
                });
                p.artifacts.push(Artifact {
                    kind: "signature".into(),
                    key: Some(t.signature_key.clone()),
                    cdn_url: Some(t.signature_cdn_url.clone()),
                    ..Default::default()
                });
                write_record(&job, &p).unwrap();
            }
        }
    }
    // A step for the whole run, and a file that is not a record.
    let mut inv = ResultRecord {
        cell: None,
        cell_data: None,
        ..record("sf-invalidate", &cells[0], Status::Success, 50, 3_100)
    };
    inv.reason = None;
    write_record(&dir.join("results-invalidate"), &inv).unwrap();
    std::fs::write(
        dir.join("results-invalidate/changes.json"),
        br#"{"changed":[]}"#,
    )
    .unwrap();
    dir
}

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("SF_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{} differs from the output (first differing line {first:?}); rerun with SF_UPDATE_SNAPSHOTS=1 after checking it.\n--- actual ---\n{actual}",
            path.display()
        );
    }
}

#[test]
fn eighteen_mixed_cells_give_the_expected_markdown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = eighteen_cell_run(tmp.path());
    let summary = tmp.path().join("summary.md");
    let output = tmp.path().join("output");
    let out = sf_summary()
        .arg(&dir)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &output)
        .env("SF_RESULTS_DIR", tmp.path().join("own"))
        .assert()
        .success();
    let md = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    snapshot("summary-18.md", &md);
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        md,
        "the job summary gets what stdout got"
    );
    let outputs = parse_file_commands(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["cells"], "18");
    assert_eq!(outputs["failed"], "2");
    assert_eq!(outputs["skipped"], "2");
    assert_eq!(outputs["check-run-url"], "");
    let own: Vec<_> = std::fs::read_dir(tmp.path().join("own")).unwrap().collect();
    assert_eq!(own.len(), 1, "its own result record");
}

#[test]
fn json_format_prints_the_merged_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = eighteen_cell_run(tmp.path());
    let out = sf_summary()
        .arg(&dir)
        .args(["--format", "json"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["totals"]["cells"], 18);
    assert_eq!(v["totals"]["succeeded"], 14);
    let p = &v["pipelines"][0];
    assert_eq!(p["pipeline"], "tarball");
    // Failures come first, with their chain and logs.
    assert_eq!(p["cells"][0]["status"], "failed");
    assert!(p["cells"][0]["failures"][0]["logs"]
        .as_str()
        .unwrap()
        .ends_with("debug-bundle.tar.gz"));
    let ok = p["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "success")
        .unwrap();
    assert_eq!(ok["steps"].as_array().unwrap().len(), 3);
    assert_eq!(ok["signed_by"], "50734A75360D09856541FA105F3F251E9B3A56B1");
    assert_eq!(ok["cdn_urls"].as_array().unwrap().len(), 2);
    assert_eq!(v["run_steps"][0]["step"], "sf-invalidate");
}

#[test]
fn a_thousand_cells_stay_under_one_mebibyte_with_whole_markdown() {
    let tmp = tempfile::tempdir().unwrap();
    let m = SupportMatrix::embedded();
    let layout = Layout::default();
    let key = Selection::default().expand(&m, Pipeline::Tarball).unwrap()[0].clone();
    let base = layout.cell(&m, &key);
    let dir = tmp.path().join("records");
    for i in 0..1000 {
        let mut cell = base.clone();
        cell.id = format!("tarball-25.11-noble-amd64-cpu-{i:04}");
        let status = if i % 2 == 0 {
            Status::Failed
        } else {
            Status::Success
        };
        let mut r = record("sf-build", &cell, status, 1, 1000);
        let long = "x".repeat(380);
        if status == Status::Failed {
            r.error = Some(ErrorInfo {
                message: format!("cell {i}: {long}"),
                chain: vec![long.clone(); 5],
                exit_code: 1,
                logs: Some(format!("/logs/{i}/{long}")),
            });
        }
        let t = cell.tarball.clone().unwrap();
        r.artifacts = (0..4)
            .map(|j| Artifact {
                kind: "tarball".into(),
                cdn_url: Some(format!("{}?{i}-{j}", t.cdn_url)),
                size: Some(1 << 30),
                sha256: Some("e".repeat(64)),
                ..Default::default()
            })
            .collect();
        write_record(&dir.join(format!("job-{}", i % 10)), &r).unwrap();
    }
    // Something else already wrote to this step's summary.
    let summary = tmp.path().join("summary.md");
    std::fs::write(&summary, "# earlier\n".repeat(20_000)).unwrap();
    let out = sf_summary()
        .arg(&dir)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .assert()
        .success();
    let md = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        md.len() as u64 <= sf_core::gha::SUMMARY_LIMIT,
        "stdout {} bytes",
        md.len()
    );
    let file = std::fs::read_to_string(&summary).unwrap();
    assert!(
        file.len() as u64 <= sf_core::gha::SUMMARY_LIMIT,
        "summary file {} bytes",
        file.len()
    );
    assert!(
        file.len() > 900_000,
        "the summary uses the room it has ({} bytes)",
        file.len()
    );
    for text in [&md, &file] {
        assert!(
            text.contains("more cells not shown"),
            "says the table was shortened"
        );
        for line in text.lines().filter(|l| l.starts_with('|')) {
            assert!(line.ends_with('|'), "a table row cut in half: {line}");
        }
        assert!(text.ends_with('\n'));
    }
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("of 1000 cells"));
}

#[test]
fn a_record_of_another_schema_version_is_a_warning_and_counted_and_strict_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = eighteen_cell_run(tmp.path());
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(dir.join("results-invalidate"))
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("sf-invalidate"))
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    v["schema_version"] = 2.into();
    std::fs::write(dir.join("future.json"), v.to_string()).unwrap();
    // Like a record cut short: a warning naming it, counted in the summary, the rest summarised.
    let summary = tmp.path().join("summary.md");
    sf_summary()
        .arg(&dir)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "future.json left out of the summary",
        ))
        .stderr(predicates::str::contains("schema_version 2"));
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.contains("**1 result file left out**"), "{text}");
    assert!(text.contains("18 cells"), "{text}");
    // --strict: refused, nothing written.
    let strict = tmp.path().join("strict.md");
    sf_summary()
        .arg(&dir)
        .arg("--strict")
        .env("GITHUB_STEP_SUMMARY", &strict)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("schema_version 2"));
    assert!(!strict.exists(), "nothing written on bad input");
    sf_summary()
        .arg(tmp.path().join("missing"))
        .assert()
        .code(2);
    sf_summary().assert().code(2);
}

#[test]
fn check_run_is_posted_after_a_secondary_rate_limit_and_a_server_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = eighteen_cell_run(tmp.path());
    let gh = FakeGitHub::start(|s| {
        s.rate_limit_first = 1;
        s.bad_gateway = 1;
    });
    let output = tmp.path().join("output");
    let out = sf_summary()
        .arg(&dir)
        .args(["--github-backoff", "10ms"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", &gh.url)
        .env("GITHUB_REPOSITORY", format!("{OWNER}/{REPO}"))
        .env("GITHUB_SHA", SHA)
        .env("GITHUB_OUTPUT", &output)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains(&format!("::add-mask::{TOKEN}")),
        "token masked first: {stderr}"
    );
    assert_eq!(
        stderr.matches(TOKEN).count(),
        1,
        "the token appears only in the mask command"
    );
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).contains(TOKEN));
    assert_eq!(gh.violations(), Vec::<String>::new());
    let reqs = gh.requests();
    assert_eq!(reqs.len(), 3, "403 rate limit, 502, then 201");
    assert!(reqs
        .iter()
        .all(|r| r.method == "POST" && r.target == format!("/repos/{OWNER}/{REPO}/check-runs")));
    let body = reqs[2].json();
    assert_eq!(body["head_sha"], SHA);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["conclusion"], "failure");
    assert_eq!(body["output"]["title"], "14 succeeded, 2 failed, 2 skipped");
    assert!(body["output"]["summary"]
        .as_str()
        .unwrap()
        .contains("### Pipeline `tarball`"));
    let outputs = parse_file_commands(&std::fs::read_to_string(&output).unwrap());
    assert!(outputs["check-run-url"]
        .starts_with("https://github.com/vantagecompute/slurm-factory/runs/"));
}

#[test]
fn a_token_without_rights_is_a_warning_unless_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = eighteen_cell_run(tmp.path());
    let gh = FakeGitHub::start(|s| s.no_rights = true);
    let run = |strict: bool| {
        let mut c = sf_summary();
        c.arg(&dir)
            .env("GITHUB_TOKEN", TOKEN)
            .env("GITHUB_API_URL", &gh.url)
            .env("GITHUB_REPOSITORY", format!("{OWNER}/{REPO}"))
            .env("GITHUB_SHA", SHA);
        if strict {
            c.arg("--strict");
        }
        c.assert()
    };
    let ok = run(false).success();
    assert!(String::from_utf8_lossy(&ok.get_output().stderr)
        .contains("Resource not accessible by integration"));
    let failed = run(true).code(2);
    let err = String::from_utf8_lossy(&failed.get_output().stderr).to_string();
    assert!(err.contains("checks: write"), "{err}");
    assert!(!err.contains(TOKEN));
}

/// A file:// bucket with two tarball folders and a real Spack mirror.
fn bucket(root: &Path) -> PathBuf {
    use sha2::Digest;
    let b = root.join("bucket");
    for (folder, name, signed) in [
        (
            "builds/25.11/noble",
            "slurm-25.11-noble-software.tar.gz",
            true,
        ),
        (
            "builds/25.11/noble/arm64-gpu",
            "slurm-25.11-noble-arm64-gpu-software.tar.gz",
            false,
        ),
        (
            "builds/24.11/jammy",
            "slurm-24.11-jammy-software.tar.gz",
            true,
        ),
    ] {
        let d = b.join(folder);
        std::fs::create_dir_all(&d).unwrap();
        let data = format!("tarball {name}").into_bytes();
        std::fs::write(d.join(name), &data).unwrap();
        std::fs::write(
            d.join("SHA256SUMS"),
            format!("{}  {name}\n", hex::encode(sha2::Sha256::digest(&data))),
        )
        .unwrap();
        if signed {
            std::fs::write(
                d.join(format!("{name}.asc")),
                "-----BEGIN PGP SIGNATURE-----\n",
            )
            .unwrap();
            std::fs::write(d.join("SHA256SUMS.asc"), "-----BEGIN PGP SIGNATURE-----\n").unwrap();
        }
    }
    let mirror = b.join("noble/slurm/25.11");
    std::fs::create_dir_all(&mirror).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(sf_testkit::fixture("spack-v3-signed").join("."))
        .arg(&mirror)
        .status()
        .unwrap();
    assert!(status.success());
    b
}

#[test]
fn catalog_lists_tarballs_and_mirrors_of_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bucket(tmp.path());
    let dest = format!("file://{}", b.display());
    let out = sf_summary()
        .args(["catalog", &dest, "--format", "json"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let t = v["tarballs"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["slurm_version"], "25.11");
    let gpu = t.iter().find(|t| t["variant"] == "arm64-gpu").unwrap();
    assert_eq!(
        (&gpu["arch"], &gpu["build"]),
        (&"arm64".into(), &"gpu".into())
    );
    assert_eq!(gpu["signed"], false);
    assert_eq!(gpu["sha256"].as_str().unwrap().len(), 64);
    let noble = t
        .iter()
        .find(|t| t["key"] == "builds/25.11/noble/slurm-25.11-noble-software.tar.gz")
        .unwrap();
    assert_eq!(noble["signed"], true);
    assert_eq!(noble["sums_signed"], true);
    assert_eq!(
        (&noble["arch"], &noble["build"]),
        (&"amd64".into(), &"cpu".into())
    );
    // Each file's own modification time, as RFC 3339 UTC.
    let modified = |key: &str| {
        sf_core::record::rfc3339(std::fs::metadata(b.join(key)).unwrap().modified().unwrap())
    };
    for t in t {
        assert_eq!(
            t["modified"].as_str(),
            Some(modified(t["key"].as_str().unwrap()).as_str()),
            "{t}"
        );
    }
    let today = &modified("builds/25.11/noble/slurm-25.11-noble-software.tar.gz")[..10];
    assert_eq!(noble["cdn_url"], "https://slurm-factory-spack-binary-cache.vantagecompute.ai/builds/25.11/noble/slurm-25.11-noble-software.tar.gz");
    let m = &v["mirrors"][0];
    assert_eq!(m["key"], "noble/slurm/25.11");
    assert_eq!(m["toolchain"], "noble");
    assert_eq!(m["specs"], 3);
    assert_eq!(m["keys"], true);

    let md = sf_summary().args(["catalog", &dest]).assert().success();
    let md = String::from_utf8(md.get_output().stdout.clone()).unwrap();
    assert!(
        md.contains(
            "| 25.11 | noble | arm64 | gpu | [slurm-25.11-noble-arm64-gpu-software.tar.gz]("
        ),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| 25.11 | noble | amd64 | cpu | [slurm-25.11-noble-software.tar.gz](https://slurm-factory-spack-binary-cache.vantagecompute.ai/builds/25.11/noble/slurm-25.11-noble-software.tar.gz) | 41 B | {today} |"
        )),
        "{md}"
    );
    assert!(
        md.contains("| `noble/slurm/25.11` | noble | 25.11 | 3 | ✅ |"),
        "{md}"
    );
    assert!(v.get("signing_key").is_none(), "no key published yet: {v}");

    // The key the bucket publishes (sf-publish tarball puts it in keys/) is listed.
    let fpr = "0123456789ABCDEF0123456789ABCDEF01234567";
    std::fs::create_dir_all(b.join("keys")).unwrap();
    std::fs::write(
        b.join("keys/signing-key.asc"),
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
    )
    .unwrap();
    std::fs::write(b.join("keys/signing-key.fingerprint"), format!("{fpr}\n")).unwrap();
    let out = sf_summary()
        .args(["catalog", &dest, "--format", "json"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["signing_key"]["fingerprint"], fpr);
    assert_eq!(
        v["signing_key"]["cdn_url"],
        "https://slurm-factory-spack-binary-cache.vantagecompute.ai/keys/signing-key.asc"
    );
    let md = sf_summary().args(["catalog", &dest]).assert().success();
    let md = String::from_utf8(md.get_output().stdout.clone()).unwrap();
    assert!(md.contains(&format!("Signed by `{fpr}`")), "{md}");

    sf_summary()
        .args(["catalog", "file:///no/such/dir"])
        .assert()
        .code(2);
    sf_summary().args(["catalog", "gs://x"]).assert().code(2);
}

#[test]
fn release_is_created_then_updated_with_its_sums_as_assets() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bucket(tmp.path());
    let dest = format!("file://{}", b.display());
    let gh = FakeGitHub::start(|s| s.rate_limit_first = 1);
    let run = || catalog_release(&dest, &gh).assert().success();
    run();
    assert_eq!(gh.violations(), Vec::<String>::new());
    {
        let st = gh.state.lock().unwrap();
        assert_eq!(st.releases.len(), 1);
        let r = &st.releases[0];
        assert!(r["body"]
            .as_str()
            .unwrap()
            .contains("## Slurm Factory catalog"));
        let mut names: Vec<&str> = r["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "builds-24.11-jammy-SHA256SUMS",
                "builds-24.11-jammy-SHA256SUMS.asc",
                "builds-25.11-noble-SHA256SUMS",
                "builds-25.11-noble-SHA256SUMS.asc",
                "builds-25.11-noble-arm64-gpu-SHA256SUMS",
            ]
        );
        let sums = std::fs::read(b.join("builds/25.11/noble/SHA256SUMS")).unwrap();
        assert!(
            st.assets.values().any(|a| *a == sums),
            "uploaded bytes are the file's"
        );
    }
    let first_calls: Vec<String> = gh
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        first_calls[0], first_calls[1],
        "the rate-limited call is repeated"
    );
    assert!(first_calls[2].starts_with("POST /repos/vantagecompute/slurm-factory/releases"));

    // Again: the release notes are updated; the assets, the same bytes, are left alone.
    let assets_before = release_assets(&gh);
    let before = gh.requests().len();
    run();
    assert_eq!(gh.violations(), Vec::<String>::new());
    let calls: Vec<String> = gh.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.target.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /repos/vantagecompute/slurm-factory/releases/tags/cache-2026.11".to_string(),
            format!(
                "PATCH /repos/vantagecompute/slurm-factory/releases/{}",
                gh.state.lock().unwrap().releases[0]["id"]
            ),
        ],
        "no asset uploaded or deleted"
    );
    assert_eq!(release_assets(&gh), assets_before);
    let st = gh.state.lock().unwrap();
    assert_eq!(st.releases.len(), 1);
    assert_eq!(st.releases[0]["assets"].as_array().unwrap().len(), 5);
}

/// `sf-summary catalog DEST --release cache-2026.11 --strict` against the local GitHub.
fn catalog_release(dest: &str, gh: &FakeGitHub) -> Command {
    let mut c = sf_summary();
    c.args(["catalog", dest, "--release", "cache-2026.11", "--strict"])
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", &gh.url)
        .env("GITHUB_REPOSITORY", format!("{OWNER}/{REPO}"));
    c
}

/// The first release's assets: name -> (id, state, the bytes the server holds).
fn release_assets(
    gh: &FakeGitHub,
) -> std::collections::BTreeMap<String, (u64, String, Option<Vec<u8>>)> {
    let st = gh.state.lock().unwrap();
    st.releases[0]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let id = a["id"].as_u64().unwrap();
            (
                a["name"].as_str().unwrap().to_string(),
                (
                    id,
                    a["state"].as_str().unwrap().to_string(),
                    st.assets.get(&id).cloned(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_changed_asset_is_replaced_only_once_its_new_bytes_are_uploaded() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bucket(tmp.path());
    let dest = format!("file://{}", b.display());
    let gh = FakeGitHub::start(|_| {});
    let run = || {
        catalog_release(&dest, &gh)
            .args(["--github-attempts", "2", "--github-backoff", "10ms"])
            .assert()
    };
    run().success();
    let first = release_assets(&gh);
    assert_eq!(first.len(), 5);

    let name = "builds-25.11-noble-SHA256SUMS.asc";
    let temp = format!("{name}.sf-summary-upload");
    let file = b.join("builds/25.11/noble/SHA256SUMS.asc");
    let old_bytes = std::fs::read(&file).unwrap();
    let new_bytes = b"-----BEGIN PGP SIGNATURE-----\nsigned again\n".to_vec();
    std::fs::write(&file, &new_bytes).unwrap();

    // The upload fails (a 502 that leaves a half-made asset, then `already_exists` on the
    // retry): the release keeps every asset it had, the changed one with its old bytes.
    gh.state.lock().unwrap().failing_uploads = true;
    let before = gh.requests().len();
    let out = run().code(1);
    let after_failure = release_assets(&gh);
    for (n, a) in &first {
        assert_eq!(after_failure.get(n), Some(a), "{n} is untouched");
    }
    assert_eq!(after_failure[name].2.as_deref(), Some(&old_bytes[..]));
    assert_eq!(after_failure.len(), 6, "{after_failure:?}");
    assert_eq!(after_failure[&temp].1, "starter");
    assert!(!gh.requests()[before..].iter().any(|r| r.method == "DELETE"));
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains(&format!("uploading the new {name}"))
            && err.contains("the old asset is still in place"),
        "{err}"
    );

    // Uploads work again: the half-made asset is cleared, the new bytes go up under the
    // temporary name, the old asset is deleted and the new one renamed; nothing else moves.
    gh.state.lock().unwrap().failing_uploads = false;
    let before = gh.requests().len();
    run().success();
    assert_eq!(gh.violations(), Vec::<String>::new());
    let done = release_assets(&gh);
    assert_eq!(
        done.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>()
    );
    for (n, a) in &first {
        if n != name {
            assert_eq!(done.get(n), Some(a), "{n} is untouched");
        }
    }
    let (new_id, state, bytes) = &done[name];
    assert_eq!(
        (state.as_str(), bytes.as_deref()),
        ("uploaded", Some(&new_bytes[..]))
    );
    assert_ne!(*new_id, first[name].0);
    let calls: Vec<String> = gh.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET" && !r.target.contains("/releases/tags/"))
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    let repo = format!("/repos/{OWNER}/{REPO}");
    let rid = gh.state.lock().unwrap().releases[0]["id"].clone();
    assert_eq!(
        calls,
        [
            format!("PATCH {repo}/releases/{rid}"),
            format!("DELETE {repo}/releases/assets/{}", after_failure[&temp].0),
            format!("POST /api/uploads{repo}/releases/{rid}/assets?name={temp}"),
            format!("DELETE {repo}/releases/assets/{}", first[name].0),
            format!("PATCH {repo}/releases/assets/{new_id}"),
        ]
    );
    let rename = gh.requests()[before..]
        .iter()
        .find(|r| r.target.ends_with(&format!("/releases/assets/{new_id}")))
        .unwrap()
        .json();
    assert_eq!(rename, serde_json::json!({ "name": name }));
}

#[test]
fn without_digests_assets_are_uploaded_again_and_end_under_their_own_names() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bucket(tmp.path());
    let dest = format!("file://{}", b.display());
    let gh = FakeGitHub::start(|s| s.no_digests = true);
    let run = || catalog_release(&dest, &gh).assert().success();
    run();
    let first = release_assets(&gh);
    run();
    assert_eq!(gh.violations(), Vec::<String>::new());
    let second = release_assets(&gh);
    assert_eq!(
        second.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>()
    );
    for (n, (id, state, bytes)) in &second {
        assert_ne!(*id, first[n].0, "{n} was uploaded again");
        assert_eq!((state, bytes), (&first[n].1, &first[n].2), "{n}");
    }
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(root, &p, out);
        } else {
            let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((key, std::fs::read(&p).unwrap()));
        }
    }
}

#[test]
fn catalog_reads_an_s3_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bucket(tmp.path());
    // The server's LastModified falls between these (whole seconds, as S3 gives them).
    let now = std::time::SystemTime::now;
    let before = sf_core::record::rfc3339(now() - std::time::Duration::from_secs(1));
    let name = format!("sf-summary-catalog-{}", std::process::id());
    let moto = sf_testkit::moto_url();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let creds =
                aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "test");
            let conf = aws_sdk_s3::config::Builder::new()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .endpoint_url(&moto)
                .credentials_provider(creds)
                .force_path_style(true)
                .build();
            let c = aws_sdk_s3::Client::from_conf(conf);
            c.create_bucket().bucket(&name).send().await.unwrap();
            let mut files = Vec::new();
            files_under(&b, &b, &mut files);
            for (key, bytes) in files {
                c.put_object()
                    .bucket(&name)
                    .key(format!("prod/{key}"))
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap();
            }
        });
    let out = sf_summary()
        .args([
            "catalog",
            &format!("s3://{name}/prod"),
            "--format",
            "json",
            "--endpoint-url",
            &moto,
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["destination"], format!("s3://{name}/prod"));
    assert_eq!(v["tarballs"].as_array().unwrap().len(), 3);
    assert!(v["tarballs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["sha256"].as_str().is_some_and(|h| h.len() == 64)));
    assert_eq!(v["mirrors"][0]["key"], "noble/slurm/25.11");
    assert_eq!(v["mirrors"][0]["specs"], 3);
    // Dates come from S3's LastModified; arch and build from the variant.
    let after = sf_core::record::rfc3339(now() + std::time::Duration::from_secs(1));
    let uploaded = |d: &Value| d.as_str().is_some_and(|d| *before <= *d && *d <= *after);
    for t in v["tarballs"].as_array().unwrap() {
        assert!(uploaded(&t["modified"]), "{before} .. {after}: {t}");
    }
    assert!(uploaded(&v["mirrors"][0]["index_modified"]), "{v}");
    let gpu = v["tarballs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["variant"] == "arm64-gpu")
        .unwrap();
    assert_eq!(
        (&gpu["arch"], &gpu["build"]),
        (&"arm64".into(), &"gpu".into())
    );
}

#[test]
fn a_record_cut_short_is_named_in_a_warning_and_refused_with_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = eighteen_cell_run(tmp.path());
    // Half of a real record, as a job killed mid-write by something other than sf-core leaves it.
    let whole = std::fs::read_dir(dir.join("results-invalidate"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("sf-invalidate"))
        .unwrap()
        .path();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join("results-late/sf-publish-cut.json");
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    let out = sf_summary()
        .arg(&dir)
        .args(["--format", "json"])
        .env("GITHUB_ACTIONS", "true")
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("::warning")
            && stderr.contains("sf-publish-cut.json")
            && stderr.contains("left out of the summary"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["totals"]["cells"], 18, "the readable records still count");

    sf_summary()
        .arg(&dir)
        .arg("--strict")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("sf-publish-cut.json"));
}

#[test]
fn several_directories_give_a_table_per_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let tarballs = eighteen_cell_run(tmp.path());
    // A second artifact download: a deps run of two toolchains, one of them failed.
    let m = SupportMatrix::embedded();
    let layout = Layout::default();
    let sel = Selection {
        toolchains: ListArg::Named(vec!["noble".into(), "jammy".into()]),
        ..Default::default()
    };
    let deps: Vec<_> = sel
        .expand(&m, Pipeline::Deps)
        .unwrap()
        .iter()
        .map(|k| layout.cell(&m, k))
        .collect();
    assert_eq!(deps.len(), 2);
    let other = tmp.path().join("deps-artifacts");
    write_record(
        &other.join(format!("results-{}", deps[0].id)),
        &record("sf-build", &deps[0], Status::Success, 3, 900_000),
    )
    .unwrap();
    let mut failed = record("sf-build", &deps[1], Status::Failed, 3, 30_000);
    failed.error = Some(ErrorInfo {
        message: "spack concretize failed".into(),
        chain: vec![],
        exit_code: 1,
        logs: None,
    });
    write_record(&other.join(format!("results-{}", deps[1].id)), &failed).unwrap();

    let out = sf_summary()
        .arg(&tarballs)
        .arg(&other)
        .args(["--format", "json"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let names: Vec<&str> = v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deps", "tarball"]);
    assert_eq!(v["totals"]["cells"], 20);
    assert_eq!(v["totals"]["failed"], 3);

    let out = sf_summary().arg(&tarballs).arg(&other).assert().success();
    let md = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(md.contains("### Pipeline `deps`: 2 cells"), "{md}");
    assert!(md.contains("### Pipeline `tarball`: 18 cells"), "{md}");
    assert!(md.contains("spack concretize failed"));

    // With --strict, failed cells fail the step (exit 1, a work failure), the summary still printed.
    let out = sf_summary()
        .arg(&tarballs)
        .arg(&other)
        .arg("--strict")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("3 of 20 cells failed (--strict)"));
    let md = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(md.contains("### Pipeline `deps`: 2 cells"));
}
