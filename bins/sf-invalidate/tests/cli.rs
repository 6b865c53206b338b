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
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--endpoint-url", &moto_url(), "--poll-interval", "200ms"])
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
    let run = || {
        let mut c = sf_invalidate();
        with_moto(&mut c)
            .args([
                "--paths-file",
                keys.to_str().unwrap(),
                "--wait",
                "--timeout",
                "30s",
            ])
            .env("SF_CLOUDFRONT_DISTRIBUTION_ID", &dist)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("SF_RESULTS_DIR", tmp.path().join("results"))
            .assert()
            .success()
    };
    let first = run();
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

    // The step is retried with the same change list: no second invalidation.
    let again = run();
    let v: Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!(v["invalidations"][0]["id"], id.as_str());
    assert_eq!(v["invalidations"][0]["reused"], true);
    assert_eq!(invalidations(&dist).len(), 1);
    assert!(String::from_utf8_lossy(&again.get_output().stderr)
        .contains("already exists for this change list"));

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
            sha256: "0".repeat(64),
            key,
        });
    }
    let path = dir.join(format!("changes-v{schema_version}.json"));
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
