//! The real `sf-publish` binary authenticating with the GitHub OIDC provider of sf-aws: a token
//! endpoint written in the tests (the runner's wire format) and the local S3 server's STS and S3.

#[path = "support/proxy.rs"]
mod proxy;
#[path = "../../../crates/sf-aws/tests/support/token_endpoint.rs"]
mod token_endpoint;

use assert_cmd::Command;
use sf_aws::AwsSettings;
use sf_testkit::{fixture, moto_url};
use token_endpoint::{TokenEndpoint, REQUEST_TOKEN};

const ROLE: &str = "arn:aws:iam::123456789012:role/sf-publisher";

/// `sf-publish` with no AWS keys at all: only the role and the runner's OIDC variables.
fn sf_publish(ep: Option<&TokenEndpoint>) -> Command {
    let mut c = Command::cargo_bin("sf-publish").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_")
            || k.starts_with("GITHUB_")
            || k.starts_with("AWS_")
            || k.starts_with("ACTIONS_")
            || k == "S3_ENDPOINT_URL"
        {
            c.env_remove(k);
        }
    }
    c.env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3_ENDPOINT_URL", moto_url())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ROLE_ARN", ROLE)
        .env("GITHUB_REPOSITORY", "vantagecompute/slurm-factory")
        .env("GITHUB_RUN_ID", "77");
    if let Some(ep) = ep {
        c.env("ACTIONS_ID_TOKEN_REQUEST_URL", &ep.url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN);
    }
    c
}

fn new_bucket() -> String {
    let bucket = format!(
        "sf-publish-oidc-{}",
        sf_core::fsutil::random_hex(6).unwrap()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let aws = AwsSettings::local(&moto_url(), "test", "test");
        let sdk = aws.load().await.unwrap();
        aws.s3_client(&sdk)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
    });
    bucket
}

#[test]
fn a_publish_refreshes_role_credentials_and_never_prints_a_token() {
    let bucket = new_bucket();
    for in_actions in [false, true] {
        let ep = TokenEndpoint::start(200);
        let mut c = sf_publish(Some(&ep));
        if in_actions {
            c.env("GITHUB_ACTIONS", "true");
        }
        // A window longer than the session: every request finds its credentials near expiry.
        let out = c
            .arg("mirror")
            .arg(fixture("spack-v3-unsigned"))
            .arg(format!("s3://{bucket}/oidc-{in_actions}"))
            .args(["--allow-unsigned", "--role-session-duration", "900"])
            .args(["--credentials-refresh-window", "3600"])
            .assert()
            .success();
        let o = out.get_output();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let issued = ep.issued.lock().unwrap().clone();
        eprintln!("token requests during one publish: {}", ep.requests());
        assert!(
            issued.len() >= 5 && ep.requests() == issued.len(),
            "token requests: {} ({text})",
            ep.requests()
        );
        for secret in issued.iter().map(String::as_str).chain([REQUEST_TOKEN]) {
            for line in text.lines().filter(|l| l.contains(secret)) {
                // Inside Actions the only place a token may appear is the mask command itself.
                assert!(
                    in_actions && line.starts_with("::add-mask::"),
                    "token printed: {line}"
                );
            }
        }
        if in_actions {
            assert!(text.contains(&format!("::add-mask::{}", issued[0])));
        }
    }
}

#[test]
fn a_role_without_a_token_source_is_bad_input() {
    let out = sf_publish(None)
        .args(["reindex", "s3://no-such-bucket/x"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{err}");
    assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
}

#[test]
fn a_refused_token_request_fails_naming_the_endpoint() {
    let ep = TokenEndpoint::start(401);
    let bucket = new_bucket();
    let out = sf_publish(Some(&ep))
        .arg("mirror")
        .arg(fixture("spack-v3-unsigned"))
        .arg(format!("s3://{bucket}/refused"))
        .arg("--allow-unsigned")
        .assert()
        .code(1);
    let o = out.get_output();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains(ep.url.split('?').next().unwrap()), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(REQUEST_TOKEN), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(REQUEST_TOKEN));
}

#[test]
fn the_role_session_and_the_record_name_the_cell() {
    let bucket = new_bucket();
    let ep = TokenEndpoint::start(200);
    // What the binary sends STS, seen on its way to the local server.
    let seen = proxy::recording(&moto_url());
    let results = tempfile::tempdir().unwrap();
    // A run id of GitHub's real length, and the cell from the job's environment.
    let n = u64::from_str_radix(&sf_core::fsutil::random_hex(4).unwrap(), 16).unwrap();
    let run_id = format!("1{n:010}");
    let cell = "tarball-25.11-noble-amd64-cpu";
    sf_publish(Some(&ep))
        .env("S3_ENDPOINT_URL", &seen.url)
        .env("GITHUB_RUN_ID", &run_id)
        .env("SF_CELL_ID", cell)
        .env("SF_RESULTS_DIR", results.path())
        .arg("mirror")
        .arg(fixture("spack-v3-unsigned"))
        .arg(format!("s3://{bucket}/cell"))
        .arg("--allow-unsigned")
        .assert()
        .success();
    let session = format!("sf-slurm-factory-{run_id}-{cell}");
    let assumed: Vec<String> = seen
        .forms()
        .into_iter()
        .filter(|f| f.contains("Action=AssumeRoleWithWebIdentity"))
        .collect();
    assert!(!assumed.is_empty(), "no AssumeRoleWithWebIdentity call");
    for form in &assumed {
        assert!(
            form.split('&')
                .any(|kv| kv == format!("RoleSessionName={session}")),
            "the session name names the run and the cell: {form}"
        );
    }
    // The record is named for its step and cell (the change list lies beside it).
    let record = std::fs::read_dir(results.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("sf-publish-mirror-{cell}-"))
        })
        .expect("a result record named for the cell");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(rec["cell"], cell);
    assert_eq!(rec["step"], "sf-publish mirror");
}

#[test]
fn a_cell_id_that_is_not_one_is_bad_input() {
    let out = sf_publish(None)
        .env("AWS_ROLE_ARN", "")
        .args(["--cell-id", "../etc", "reindex", "s3://no-such-bucket/x"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains("--cell-id") && err.contains("SF_CELL_ID"),
        "{err}"
    );
}
