//! The real `sf-invalidate` binary against moto's CloudFront: a distribution made in the test,
//! invalidations created, found again on a retry, batched past the limits, and bad input refused.

use assert_cmd::Command;
use aws_sdk_cloudfront::types::{
    CookiePreference, DefaultCacheBehavior, DistributionConfig, ForwardedValues, ItemSelection,
    Origin, Origins, S3OriginConfig, TrustedSigners, ViewerProtocolPolicy,
};
use serde_json::Value;
use sf_core::layout::spack;
use sf_testkit::{moto_url, parse_file_commands};

fn sf_invalidate() -> Command {
    let mut c = Command::cargo_bin("sf-invalidate").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_")
            || k.starts_with("GITHUB_")
            || k.starts_with("AWS_")
            || k == "S3_ENDPOINT_URL"
        {
            c.env_remove(k);
        }
    }
    c
}

/// Credentials moto accepts, and nothing from the machine's own AWS set-up.
fn with_moto(c: &mut Command) -> &mut Command {
    with_endpoint(c, &moto_url())
}

/// [`with_moto`], through another endpoint (a proxy in front of moto).
fn with_endpoint<'a>(c: &'a mut Command, url: &str) -> &'a mut Command {
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--endpoint-url", url, "--poll-interval", "200ms"])
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client() -> aws_sdk_cloudfront::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto_url())
        .credentials_provider(aws_sdk_cloudfront::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_cloudfront::Client::new(&conf)
}

/// A distribution in front of a bucket, as the published cache has. (Legacy cache settings, which
/// moto's CloudFront requires, are deprecated in the SDK.)
#[allow(deprecated)]
fn distribution(name: &str) -> String {
    rt().block_on(async {
        let origin = Origin::builder()
            .id("bucket")
            .domain_name("slurm-factory-spack-buildcache-4b670.s3.amazonaws.com")
            .s3_origin_config(S3OriginConfig::builder().origin_access_identity("").build())
            .build()
            .unwrap();
        let behavior = DefaultCacheBehavior::builder()
            .target_origin_id("bucket")
            .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
            .forwarded_values(
                ForwardedValues::builder()
                    .query_string(false)
                    .cookies(
                        CookiePreference::builder()
                            .forward(ItemSelection::None)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .trusted_signers(
                TrustedSigners::builder()
                    .enabled(false)
                    .quantity(0)
                    .build()
                    .unwrap(),
            )
            .min_ttl(0)
            .build()
            .unwrap();
        let config = DistributionConfig::builder()
            .caller_reference(format!("{name}-{}", std::process::id()))
            .origins(
                Origins::builder()
                    .quantity(1)
                    .items(origin)
                    .build()
                    .unwrap(),
            )
            .default_cache_behavior(behavior)
            .comment(name)
            .enabled(true)
            .build()
            .unwrap();
        let d = client()
            .await
            .create_distribution()
            .distribution_config(config)
            .send()
            .await
            .unwrap();
        d.distribution().unwrap().id().to_string()
    })
}

/// (id, caller reference, paths) of every invalidation of a distribution.
fn invalidations(dist: &str) -> Vec<(String, String, Vec<String>)> {
    rt().block_on(async {
        let c = client().await;
        let list = c
            .list_invalidations()
            .distribution_id(dist)
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for s in list
            .invalidation_list()
            .map(|l| l.items().to_vec())
            .unwrap_or_default()
        {
            let g = c
                .get_invalidation()
                .distribution_id(dist)
                .id(s.id())
                .send()
                .await
                .unwrap();
            let inv = g.invalidation().unwrap();
            let b = inv.invalidation_batch().unwrap();
            out.push((
                inv.id().to_string(),
                b.caller_reference().to_string(),
                b.paths().unwrap().items().to_vec(),
            ));
        }
        out
    })
}

/// What one publish of a version mirror plus a tarball folder changes.
fn change_list() -> Vec<String> {
    let root = "noble/slurm/25.11";
    let mut keys = Vec::new();
    for i in 0..40 {
        keys.push(format!(
            "{root}/{}",
            spack::blob("sha256", &format!("{:064x}", i + 1))
        ));
        keys.push(format!(
            "{root}/{}",
            spack::spec_manifest("slurm", "25-11-0-1", &format!("{i:032}"))
        ));
    }
    keys.push(format!("{root}/{}", spack::INDEX_MANIFEST));
    keys.push("builds/25.11/noble/slurm-25.11-noble-software.tar.gz".into());
    keys
}

#[test]
fn dry_run_prints_the_plan_without_aws() {
    let keys = change_list().join(",");
    let out = sf_invalidate()
        .args(["--dry-run", "--paths", &keys])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["plan"]["blobs_skipped"], 40);
    assert_eq!(
        v["plan"]["paths"],
        serde_json::json!([
            "/noble/slurm/25.11/v3/manifests/*",
            "/builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
        ])
    );
    assert_eq!(v["invalidations"], serde_json::json!([]));
}

#[test]
fn invalidates_once_and_a_retry_finds_the_same_invalidation() {
    let dist = distribution("once");
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys.txt");
    std::fs::write(&keys, change_list().join("\n")).unwrap();
    let output = tmp.path().join("output");
    // CloudFront, as far as moto lacks it: caller references are kept.
    let run = |proxy: &status_proxy::StatusProxy| {
        let mut c = sf_invalidate();
        with_endpoint(&mut c, &proxy.url)
            .args([
                "--paths-file",
                keys.to_str().unwrap(),
                "--wait",
                "--timeout",
                "30s",
            ])
            .env("SF_CLOUDFRONT_DISTRIBUTION_ID", &dist)
            .env("GITHUB_ACTIONS", "true")
            // Bare keys: the run and attempt say which publish they belong to.
            .env("GITHUB_RUN_ID", "7001")
            .env("GITHUB_RUN_ATTEMPT", "1")
            .env("GITHUB_OUTPUT", &output)
            .env("SF_RESULTS_DIR", tmp.path().join("results"))
            .assert()
            .success()
    };
    let first = run(&status_proxy::StatusProxy::start(&moto_url(), 0));
    let v: Value = serde_json::from_slice(&first.get_output().stdout).unwrap();
    let inv = &v["invalidations"][0];
    assert_eq!(inv["reused"], false);
    let id = inv["id"].as_str().unwrap().to_string();
    let made = invalidations(&dist);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].0, id);
    assert!(made[0].1.starts_with("sf-invalidate-"));
    assert_eq!(
        made[0].2,
        [
            "/noble/slurm/25.11/v3/manifests/*",
            "/builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
        ]
    );
    let outputs = parse_file_commands(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["invalidation-ids"], id);
    assert_eq!(outputs["status"], "Completed");
    assert_eq!(outputs["path-count"], "2");

    // The step is retried with the same change list: no second invalidation. The finished one
    // is not searched for: CloudFront answers the same caller reference with it.
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
    let again = run(&proxy);
    let v: Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!(v["invalidations"][0]["id"], id.as_str());
    assert_eq!(v["invalidations"][0]["reused"], true);
    assert_eq!(invalidations(&dist).len(), 1);
    assert!(String::from_utf8_lossy(&again.get_output().stderr)
        .contains("already exists for this change list"));
    assert_eq!((proxy.all_gets(), proxy.creates()), (0, 1));

    let records: Vec<_> = std::fs::read_dir(tmp.path().join("results"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(records.len(), 2);
    let rec: Value = serde_json::from_slice(&std::fs::read(records[0].path()).unwrap()).unwrap();
    assert_eq!(rec["step"], "sf-invalidate");
    assert_eq!(rec["metrics"]["blobs_skipped"], 40);
}

#[test]
fn past_the_limits_it_batches_and_says_so() {
    let dist = distribution("batches");
    let tmp = tempfile::tempdir().unwrap();
    // Files at a mirror root cannot collapse (the root holds blobs): 7,000 exact paths.
    let keys: Vec<String> = (0..7000)
        .map(|i| format!("rockylinux9/slurm/deps/file-{i}.json"))
        .collect();
    let file = tmp.path().join("keys.txt");
    std::fs::write(&file, keys.join("\n")).unwrap();
    let mut c = sf_invalidate();
    let out = with_moto(&mut c)
        .args([
            "--paths-file",
            file.to_str().unwrap(),
            "--distribution-id",
            &dist,
        ])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("need 3 invalidations within CloudFront's limits"),
        "{stderr}"
    );
    let made = invalidations(&dist);
    let mut sizes: Vec<usize> = made.iter().map(|m| m.2.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [1000, 3000, 3000]);
    let refs: std::collections::BTreeSet<_> = made.iter().map(|m| m.1.clone()).collect();
    assert_eq!(refs.len(), 3);
}

#[test]
fn nothing_to_invalidate_makes_no_call() {
    let blob = format!(
        "noble/slurm/deps/{}",
        spack::blob("sha256", &"a".repeat(64))
    );
    // No credentials and no endpoint: it must not need them.
    let out = sf_invalidate()
        .args(["--distribution-id", "E2QWRUHAPOMQZL", "--paths", &blob])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["plan"]["paths"], serde_json::json!([]));
}

#[test]
fn bad_input_is_exit_2() {
    let mut c = sf_invalidate();
    with_moto(&mut c)
        .args(["--distribution-id", "ENOSUCHDIST", "--paths", "builds/x"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("does not exist"));
    sf_invalidate()
        .args(["--paths", "builds/x"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("SF_CLOUDFRONT_DISTRIBUTION_ID"));
    sf_invalidate()
        .args(["--distribution-id", "not-an-id", "--paths", "builds/x"])
        .assert()
        .code(2);
    sf_invalidate()
        .args(["--dry-run", "--paths", "builds/*"])
        .assert()
        .code(2);
    sf_invalidate()
        .args(["--dry-run", "--path-map", "nope", "--paths", "a"])
        .assert()
        .code(2);
    // No credentials anywhere.
    sf_invalidate()
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "--distribution-id",
            "E2QWRUHAPOMQZL",
            "--paths",
            "builds/x",
            "--endpoint-url",
            &moto_url(),
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no AWS credentials"));
}

/// The change list of [`change_list`] as sf-publish writes it (its own type, serialised).
fn change_list_file(dir: &std::path::Path, schema_version: u32) -> std::path::PathBuf {
    change_list_with(dir, schema_version, &"0".repeat(64))
}

/// [`change_list_file`] with every object's content digest `sha256`.
fn change_list_with(
    dir: &std::path::Path,
    schema_version: u32,
    sha256: &str,
) -> std::path::PathBuf {
    use sf_core::changes::{Action, Change, ChangeList, ObjectKind};
    let mut list = ChangeList::new("s3://slurm-factory-spack-buildcache-4b670");
    list.schema_version = schema_version;
    for key in change_list() {
        let kind = if spack::is_blob_anywhere(&key) {
            ObjectKind::Blob
        } else if key.ends_with(".spec.manifest.json") {
            ObjectKind::SpecManifest
        } else if key.ends_with("index.manifest.json") {
            ObjectKind::IndexManifest
        } else {
            ObjectKind::Tarball
        };
        list.changes.push(Change {
            url: format!("s3://slurm-factory-spack-buildcache-4b670/{key}"),
            object_key: key.clone(),
            immutable: kind == ObjectKind::Blob,
            kind,
            action: Action::Created,
            size: 1,
            sha256: sha256.to_string(),
            key,
        });
    }
    let path = dir.join(format!("changes-v{schema_version}-{}.json", &sha256[..8]));
    list.write(&path).unwrap();
    path
}

#[test]
fn reads_the_change_list_sf_publish_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = change_list_file(tmp.path(), sf_core::changes::CHANGE_LIST_VERSION);
    let out = sf_invalidate()
        .args(["--dry-run", "--change-list", file.to_str().unwrap()])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        v["plan"]["paths"],
        serde_json::json!([
            "/noble/slurm/25.11/v3/manifests/*",
            "/builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
        ])
    );
    assert_eq!(
        v["plan"]["keys"], 42,
        "immutable blobs are left out before planning"
    );

    let other = change_list_file(tmp.path(), 99);
    sf_invalidate()
        .args(["--dry-run", "--change-list", other.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "not a change list of schema version",
        ));
    std::fs::write(tmp.path().join("matrix.json"), r#"{"include":[]}"#).unwrap();
    sf_invalidate()
        .args([
            "--dry-run",
            "--change-list",
            tmp.path().join("matrix.json").to_str().unwrap(),
        ])
        .assert()
        .code(2);
}

#[path = "../../sf-publish/tests/support/proxy.rs"]
mod proxy;
#[path = "../../../crates/sf-aws/tests/support/token_endpoint.rs"]
mod token_endpoint;

#[test]
fn with_a_role_the_session_and_the_record_name_the_cell() {
    let dist = distribution("cell");
    let ep = token_endpoint::TokenEndpoint::start(200);
    // What the binary sends STS, seen on its way to the local server.
    let seen = proxy::recording(&moto_url());
    let tmp = tempfile::tempdir().unwrap();
    let cell = "version-25.11-noble-amd64-cpu";
    let n = u64::from_str_radix(&sf_core::fsutil::random_hex(4).unwrap(), 16).unwrap();
    let run_id = format!("2{n:010}");
    // No AWS keys: only the role and the runner's OIDC variables, as on a GitHub runner.
    sf_invalidate()
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/sf-invalidator",
        )
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &ep.url)
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            token_endpoint::REQUEST_TOKEN,
        )
        .env("GITHUB_REPOSITORY", "vantagecompute/slurm-factory")
        .env("GITHUB_RUN_ID", &run_id)
        .env("SF_CELL_ID", cell)
        .env("SF_RESULTS_DIR", tmp.path())
        .env("SF_CLOUDFRONT_DISTRIBUTION_ID", &dist)
        .args(["--endpoint-url", &seen.url])
        .args(["--paths", "builds/25.11/noble/SHA256SUMS"])
        .assert()
        .success();
    assert_eq!(invalidations(&dist).len(), 1);
    // Credentials came from the runner's token, nothing else.
    assert!(ep.requests() >= 1 && ep.issued.lock().unwrap().len() == ep.requests());
    let session = format!("RoleSessionName=sf-slurm-factory-{run_id}-{cell}");
    let assumed: Vec<String> = seen
        .forms()
        .into_iter()
        .filter(|f| f.contains("Action=AssumeRoleWithWebIdentity"))
        .collect();
    assert!(!assumed.is_empty(), "no AssumeRoleWithWebIdentity call");
    for form in &assumed {
        assert!(form.split('&').any(|kv| kv == session), "{form}");
    }
    let record = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("sf-invalidate-{cell}-"))
        })
        .expect("a result record named for the cell");
    let rec: Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(rec["cell"], cell);
}

#[test]
fn a_republish_with_new_content_is_invalidated_again() {
    let dist = distribution("republish");
    let tmp = tempfile::tempdir().unwrap();
    let v = sf_core::changes::CHANGE_LIST_VERSION;
    let a = change_list_with(tmp.path(), v, &"a".repeat(64));
    let b = change_list_with(tmp.path(), v, &"b".repeat(64));
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
    let run = |list: &std::path::Path| -> Value {
        let mut c = sf_invalidate();
        let out = with_endpoint(&mut c, &proxy.url)
            .args(["--distribution-id", &dist, "--change-list"])
            .arg(list)
            .assert()
            .success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    };
    let first = run(&a);
    assert_eq!(first["invalidations"][0]["reused"], false);
    assert_eq!(invalidations(&dist).len(), 1);
    // The same keys published again with new content: a second invalidation.
    let second = run(&b);
    assert_eq!(second["invalidations"][0]["reused"], false);
    assert_ne!(
        first["invalidations"][0]["caller_reference"],
        second["invalidations"][0]["caller_reference"]
    );
    let made = invalidations(&dist);
    assert_eq!(made.len(), 2);
    assert_eq!(made[0].2, made[1].2, "the same paths both times");
    // The first change list retried: found again, nothing new.
    let again = run(&a);
    assert_eq!(again["invalidations"][0]["reused"], true);
    assert_eq!(
        again["invalidations"][0]["id"],
        first["invalidations"][0]["id"]
    );
    assert_eq!(invalidations(&dist).len(), 2);
}

#[path = "support/status_proxy.rs"]
mod status_proxy;

fn record_in(dir: &std::path::Path) -> Value {
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one record");
    serde_json::from_slice(&std::fs::read(files[0].path()).unwrap()).unwrap()
}

/// A workflow step's own files: its GITHUB_OUTPUT and the folder of its result record.
struct Step {
    _tmp: tempfile::TempDir,
    output: std::path::PathBuf,
    results: std::path::PathBuf,
}

impl Step {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Step {
            output: tmp.path().join("output"),
            results: tmp.path().join("results"),
            _tmp: tmp,
        }
    }

    /// sf-invalidate through `url` as this step: in Actions, writing outputs and a record.
    fn command(&self, url: &str) -> Command {
        let mut c = sf_invalidate();
        with_endpoint(&mut c, url)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &self.output)
            .env("SF_RESULTS_DIR", &self.results);
        c
    }

    fn outputs(&self) -> std::collections::BTreeMap<String, String> {
        parse_file_commands(&std::fs::read_to_string(&self.output).unwrap())
    }

    fn record(&self) -> Value {
        record_in(&self.results)
    }
}

/// One path invalidated through `proxy` as a workflow step that waits up to `timeout` for it,
/// and must end with exit `code`.
fn wait_for_one_path(
    proxy: &status_proxy::StatusProxy,
    dist: &str,
    timeout: &str,
    code: i32,
) -> (assert_cmd::assert::Assert, Step) {
    let step = Step::new();
    let out = step
        .command(&proxy.url)
        .args(["--distribution-id", dist, "--wait", "--timeout", timeout])
        .args(["--paths", "builds/25.11/noble/SHA256SUMS"])
        .assert()
        .code(code);
    (out, step)
}

fn stderr_of(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).to_string()
}

#[test]
fn wait_polls_until_completed_and_records_it() {
    let dist = distribution("wait");
    // Every new invalidation reads InProgress in its first 3 answers.
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 3);
    let (out, step) = wait_for_one_path(&proxy, &dist, "30s", 0);
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let id = v["invalidations"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(v["invalidations"][0]["status"], "COMPLETED");
    // Three InProgress answers, then the Completed one: four polls of this id.
    assert_eq!(proxy.gets(&id), 4);
    let outputs = step.outputs();
    assert_eq!(outputs["invalidation-ids"], id);
    assert_eq!(outputs["status"], "Completed");
    assert_eq!(outputs["paths"], "/builds/25.11/noble/SHA256SUMS");
    assert_eq!(outputs["path-count"], "1");
    let rec = step.record();
    assert_eq!(rec["status"], "success");
    assert_eq!(rec["outputs"]["invalidation_ids"], serde_json::json!([id]));
    assert_eq!(rec["outputs"]["status"], "Completed");
    assert_eq!(
        rec["outputs"]["paths"],
        serde_json::json!(["/builds/25.11/noble/SHA256SUMS"])
    );
}

#[test]
fn a_timeout_fails_but_names_the_invalidation_made() {
    let dist = distribution("timeout");
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 1_000_000);
    let (out, step) = wait_for_one_path(&proxy, &dist, "1s", 1);
    let stderr = stderr_of(&out);
    assert!(stderr.contains("at the timeout"), "{stderr}");
    let made = invalidations(&dist);
    assert_eq!(made.len(), 1);
    let id = &made[0].0;
    let outputs = step.outputs();
    assert_eq!(&outputs["invalidation-ids"], id);
    assert_eq!(outputs["status"], "InProgress");
    assert_eq!(outputs["paths"], "/builds/25.11/noble/SHA256SUMS");
    let rec = step.record();
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["error"]["exit_code"], 1);
    assert_eq!(rec["outputs"]["invalidation_ids"], serde_json::json!([id]));
    assert_eq!(rec["outputs"]["status"], "InProgress");
}

/// Create an invalidation straight in moto (not through the binary).
fn create_invalidation(dist: &str, paths: Vec<String>, reference: &str) -> String {
    use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
    rt().block_on(async {
        let batch = InvalidationBatch::builder()
            .caller_reference(reference)
            .paths(
                Paths::builder()
                    .quantity(paths.len() as i32)
                    .set_items(Some(paths))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let made = client()
            .await
            .create_invalidation()
            .distribution_id(dist)
            .invalidation_batch(batch)
            .send()
            .await
            .unwrap();
        made.invalidation().unwrap().id().to_string()
    })
}

#[test]
fn a_batch_waits_for_room_under_the_wildcard_limit() {
    let dist = distribution("room");
    // Someone else's 14 wildcards in flight, and a few finished invalidations.
    let busy = create_invalidation(
        &dist,
        (0..14).map(|i| format!("/other/{i}/*")).collect(),
        "elsewhere-busy",
    );
    let done: Vec<String> = (0..5)
        .map(|i| create_invalidation(&dist, vec![format!("/done/{i}")], &format!("done-{i}")))
        .collect();
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
    // In flight for the first 3 answers that name it.
    proxy.hold(&busy, 3);
    // Two folders of two files each: two wildcards, which do not fit beside 14.
    let keys = [
        "builds/25.11/noble/SHA256SUMS",
        "builds/25.11/noble/SHA256SUMS.asc",
        "builds/24.11/jammy/SHA256SUMS",
        "builds/24.11/jammy/SHA256SUMS.asc",
    ]
    .join(",");
    let mut c = sf_invalidate();
    let out = with_endpoint(&mut c, &proxy.url)
        .args(["--distribution-id", &dist, "--timeout", "30s"])
        .args(["--paths", &keys])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("waiting, 14 paths and 14 wildcards already in flight")
            && stderr.contains("this batch's 2 paths (2 wildcards)"),
        "{stderr}"
    );
    let made = invalidations(&dist);
    assert_eq!(made.len(), 7);
    let ours = made
        .iter()
        .find(|m| m.1.starts_with("sf-invalidate-"))
        .unwrap();
    assert_eq!(ours.2, ["/builds/24.11/jammy/*", "/builds/25.11/noble/*"]);
    // The 3 held answers: the first list, the one read of its details, the second list. So it
    // waited twice, and the third list found room.
    assert_eq!(stderr.matches("waiting, 14 paths").count(), 2, "{stderr}");
    assert_eq!(proxy.lists(), 3);
    assert_eq!(proxy.creates(), 1);
    // The one in flight was read once, however often it was listed; the finished ones never.
    assert_eq!(proxy.gets(&busy), 1);
    for d in &done {
        assert_eq!(proxy.gets(d), 0);
    }
}

#[test]
fn credentials_without_rights_are_exit_2_before_anything_is_made() {
    let dist = distribution("denied");
    for kind in ["list", "create"] {
        let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
        proxy.deny(kind);
        let mut c = sf_invalidate();
        with_endpoint(&mut c, &proxy.url)
            .args(["--distribution-id", &dist, "--paths", "builds/x"])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("the AWS credentials may not"));
    }
}

#[test]
fn a_denied_read_is_exit_2_before_creating_and_exit_1_while_waiting() {
    // Reading an invalidation in flight, to count it and find ours among them: a set-up
    // problem, nothing made yet.
    let dist = distribution("denied-get");
    let busy = create_invalidation(&dist, vec!["/busy/0".into()], "busy-0");
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
    proxy.hold(&busy, 1);
    proxy.deny("get");
    let mut c = sf_invalidate();
    with_endpoint(&mut c, &proxy.url)
        .args(["--distribution-id", &dist, "--paths", "builds/x"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "the AWS credentials may not read invalidations",
        ));
    assert_eq!(proxy.creates(), 0);

    // Polling the invalidation this run made: it goes on in CloudFront and the outputs name it,
    // so a denial here is a failed wait, exit 1, which still says what rights to give.
    let dist = distribution("denied-wait");
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 1);
    proxy.deny("get");
    let (out, step) = wait_for_one_path(&proxy, &dist, "30s", 1);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("reading invalidation")
            && stderr.contains("AccessDenied")
            && stderr.contains("the AWS credentials may not read invalidations")
            && stderr.contains("give the role cloudfront:ListInvalidations"),
        "{stderr}"
    );
    let made = invalidations(&dist);
    assert_eq!(made.len(), 1);
    assert_eq!(proxy.gets(&made[0].0), 1);
    let outputs = step.outputs();
    assert_eq!(outputs["invalidation-ids"], made[0].0);
    assert_eq!(outputs["status"], "InProgress");
    let rec = step.record();
    assert_eq!(rec["error"]["exit_code"], 1);
}

#[test]
fn a_later_batch_denied_is_exit_1_and_names_the_invalidation_made() {
    // 3,001 exact paths: two batches, the first of 3,000.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keys.txt");
    let keys: Vec<String> = (0..3001)
        .map(|i| format!("rockylinux9/slurm/deps/file-{i}.json"))
        .collect();
    std::fs::write(&file, keys.join("\n")).unwrap();
    // Batch 1's list and create calls go through, batch 2's are refused.
    for kind in ["list", "create"] {
        let dist = distribution(&format!("denied-later-{kind}"));
        let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
        proxy.deny_after(kind, 1);
        let step = Step::new();
        let out = step
            .command(&proxy.url)
            .args(["--distribution-id", &dist, "--paths-file"])
            .arg(&file)
            .assert()
            .code(1);
        let made = invalidations(&dist);
        assert_eq!(made.len(), 1, "{kind}: only batch 1 was made");
        assert_eq!(made[0].2.len(), 3000);
        let id = &made[0].0;
        let stderr = stderr_of(&out);
        assert!(
            stderr.contains(&format!("stopped after this run made invalidation {id}"))
                && stderr.contains("the AWS credentials may not"),
            "{kind}: {stderr}"
        );
        let outputs = step.outputs();
        assert_eq!(&outputs["invalidation-ids"], id, "{kind}");
        assert_eq!(outputs["path-count"], "3001");
        let rec = step.record();
        assert_eq!(rec["status"], "failed");
        assert_eq!(rec["error"]["exit_code"], 1, "{kind}");
        assert!(rec["error"]["message"]
            .as_str()
            .unwrap()
            .contains(id.as_str()));
        assert_eq!(rec["outputs"]["invalidation_ids"], serde_json::json!([id]));
    }
}

#[test]
fn path_map_serves_keys_under_the_origin_path() {
    let out = sf_invalidate()
        .args(["--dry-run", "--path-map", "prod=/cache"])
        .args([
            "--paths",
            "prod/builds/25.11/noble/SHA256SUMS,staging/builds/x",
        ])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(
        v["plan"]["paths"],
        serde_json::json!(["/cache/builds/25.11/noble/SHA256SUMS"])
    );
    assert_eq!(
        v["plan"]["unmapped"],
        serde_json::json!(["staging/builds/x"])
    );
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("outside --path-map's key prefix") && stderr.contains("staging/builds/x"),
        "{stderr}"
    );
}

#[test]
fn a_destination_prefix_never_makes_a_wildcard_over_mirror_blobs() {
    let plan = |args: &[&str]| -> Value {
        let out = sf_invalidate()
            .arg("--dry-run")
            .args(args)
            .assert()
            .success();
        serde_json::from_slice::<Value>(&out.get_output().stdout).unwrap()["plan"]["paths"].clone()
    };
    // Two mirror roots' layout.json under `prod`: `prod/noble/slurm` holds both mirrors' blobs.
    assert_eq!(
        plan(&[
            "--destination",
            "s3://bkt/prod",
            "--paths",
            "prod/noble/slurm/deps/v3/layout.json,prod/noble/slurm/25.11/v3/layout.json",
        ]),
        serde_json::json!([
            "/prod/noble/slurm/25.11/v3/layout.json",
            "/prod/noble/slurm/deps/v3/layout.json"
        ])
    );
    // The destination `prod/x` served at the root: its root is never one wildcard, and the
    // paths are the distribution's.
    let keys = [
        "builds/25.11/noble/SHA256SUMS",
        "builds/25.11/noble/SHA256SUMS.asc",
        "noble/slurm/deps/v3/manifests/index/index.manifest.json",
        "noble/slurm/deps/v3/layout.json",
    ]
    .map(|k| format!("prod/x/{k}"))
    .join(",");
    assert_eq!(
        plan(&[
            "--destination",
            "s3://bkt/prod/x",
            "--path-map",
            "prod/x=/",
            "--paths",
            &keys
        ]),
        serde_json::json!(["/builds/25.11/noble/*", "/noble/slurm/deps/v3/*"])
    );
}

#[test]
fn bad_input_before_the_plan_still_writes_a_failed_record() {
    let tmp = tempfile::tempdir().unwrap();
    let not_ours = tmp.path().join("not-ours.json");
    std::fs::write(&not_ours, r#"{"x":1}"#).unwrap();
    let other_version = change_list_file(tmp.path(), 99);
    let missing = tmp.path().join("missing.txt");
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "not a change list",
            vec![
                "--dry-run".into(),
                "--change-list".into(),
                not_ours.display().to_string(),
            ],
        ),
        (
            "another schema version",
            vec![
                "--dry-run".into(),
                "--change-list".into(),
                other_version.display().to_string(),
            ],
        ),
        (
            "a wildcard key",
            vec!["--dry-run".into(), "--paths".into(), "builds/*".into()],
        ),
        (
            "an unreadable --paths-file",
            vec![
                "--dry-run".into(),
                "--paths-file".into(),
                missing.display().to_string(),
            ],
        ),
        (
            "a bad --path-map",
            vec![
                "--dry-run".into(),
                "--path-map".into(),
                "nope".into(),
                "--paths".into(),
                "a".into(),
            ],
        ),
        (
            "no distribution id",
            vec!["--paths".into(), "builds/x".into()],
        ),
        (
            "a bad cell id",
            vec![
                "--dry-run".into(),
                "--cell-id".into(),
                "../x".into(),
                "--paths".into(),
                "a".into(),
            ],
        ),
        (
            "a bad destination",
            vec![
                "--dry-run".into(),
                "--destination".into(),
                "ftp://x".into(),
                "--paths".into(),
                "a".into(),
            ],
        ),
    ];
    for (what, args) in cases {
        let res = tempfile::tempdir().unwrap();
        let out = sf_invalidate()
            .args(&args)
            .arg("--results-dir")
            .arg(res.path())
            .assert()
            .code(2);
        let stderr = stderr_of(&out);
        let rec = record_in(res.path());
        assert_eq!(rec["step"], "sf-invalidate", "{what}");
        assert_eq!(rec["status"], "failed", "{what}");
        assert_eq!(rec["error"]["exit_code"], 2, "{what}");
        let message = rec["error"]["message"].as_str().unwrap();
        assert!(
            !message.is_empty() && stderr.contains(message),
            "{what}: {message} / {stderr}"
        );
        assert!(out.get_output().stdout.is_empty(), "{what}");
    }
}

#[test]
fn too_many_in_progress_from_a_parallel_job_is_waited_out() {
    // Another job took the room between this run's count and its create call: CloudFront
    // refuses the create twice, then has room again.
    let dist = distribution("too-many");
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
    proxy.too_many(2);
    let (out, step) = wait_for_one_path(&proxy, &dist, "30s", 0);
    let stderr = stderr_of(&out);
    assert_eq!(
        stderr
            .matches("waiting, CloudFront has too many invalidations in progress")
            .count(),
        2,
        "{stderr}"
    );
    // Counted again before each new try, and no retry hidden in the SDK.
    assert_eq!((proxy.creates(), proxy.lists()), (3, 3));
    let made = invalidations(&dist);
    assert_eq!(made.len(), 1);
    assert_eq!(step.outputs()["invalidation-ids"], made[0].0);
    assert_eq!(step.record()["status"], "success");

    // Still refused at the timeout: a failure of the work, exit 1, nothing made.
    let dist = distribution("too-many-timeout");
    let proxy = status_proxy::StatusProxy::start(&moto_url(), 0);
    proxy.too_many(u64::MAX);
    let (out, step) = wait_for_one_path(&proxy, &dist, "1s", 1);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("still refuses it at the timeout")
            && stderr.contains("TooManyInvalidationsInProgress"),
        "{stderr}"
    );
    assert!(invalidations(&dist).is_empty());
    let rec = step.record();
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["error"]["exit_code"], 1);
}
