//! The real `sf-publish` binary authenticating with the GitHub OIDC provider of sf-aws: a token
//! endpoint written in the tests (the runner's wire format) and the local S3 server's STS and S3.

#[path = "support/common.rs"]
mod common;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "../../../crates/sf-aws/tests/support/token_endpoint.rs"]
mod token_endpoint;
#[path = "support/wire.rs"]
mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use common::{fails, new_bucket, new_key, signed_tarball, Key};
use sf_aws::aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use sf_testkit::{fixture, moto_url};
use token_endpoint::{TokenEndpoint, REQUEST_TOKEN};

const ROLE: &str = "arn:aws:iam::123456789012:role/sf-publisher";

/// `sf-publish` with no AWS keys at all: only the role and the runner's OIDC variables.
fn sf_publish(ep: Option<&TokenEndpoint>) -> Command {
    let mut c = common::sf_publish();
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_ROLE_ARN", ROLE)
        .env("GITHUB_REPOSITORY", "vantagecompute/slurm-factory")
        .env("GITHUB_RUN_ID", "77");
    if let Some(ep) = ep {
        c.env("ACTIONS_ID_TOKEN_REQUEST_URL", &ep.url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN);
    }
    c
}

/// Short-lived role credentials: STS's answers, seen on their way from the local server, get an
/// expiry just at the refresh window's edge (so each request mints anew) and their credentials are
/// kept, to look for them in what the run leaves behind.
struct ShortLived {
    wire: wire::Wire,
    secrets: Arc<Mutex<Vec<String>>>,
}

const WINDOW_SECS: u64 = 60;

fn short_lived_sts() -> ShortLived {
    let secrets = Arc::new(Mutex::new(Vec::new()));
    let kept = secrets.clone();
    let wire = wire::start(
        &moto_url(),
        Arc::new(|_: &wire::Seen| wire::Answer::Forward),
        Some(Arc::new(move |req: &wire::Seen, body: Vec<u8>| {
            if !req.form.contains("Action=AssumeRoleWithWebIdentity") {
                return body;
            }
            let text = String::from_utf8(body).unwrap();
            let field = |name: &str| {
                let open = format!("<{name}>");
                let from = text.find(&open)? + open.len();
                let to = from + text[from..].find(&format!("</{name}>"))?;
                Some((from, to, text[from..to].to_string()))
            };
            for name in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
                let (_, _, v) = field(name).unwrap_or_else(|| panic!("no {name} in {text}"));
                kept.lock().unwrap().push(v);
            }
            let (from, to, _) = field("Expiration").expect("an expiration");
            let at = SystemTime::now() + Duration::from_secs(WINDOW_SECS);
            let at = DateTime::from(at).fmt(DateTimeFormat::DateTime).unwrap();
            format!("{}{at}{}", &text[..from], &text[to..]).into_bytes()
        })),
    );
    ShortLived { wire, secrets }
}

#[test]
fn a_publish_refreshes_role_credentials_and_never_prints_a_token() {
    let bucket = new_bucket("sf-publish-oidc");
    let key = new_key();
    // A signed tarball folder (tarball, SHA256SUMS, their signatures) of 12 MiB of noise.
    let bytes = common::cell_tarball(
        &common::buildinfo_for("24.11", "jammy", "amd64", false),
        (12 << 20) + 333,
    );
    let (_tarballs, tarball) = signed_tarball(&key, "slurm-24.11-jammy-software.tar.gz", &bytes);
    for in_actions in [false, true] {
        for what in ["mirror", "tarball"] {
            let ep = TokenEndpoint::start(200);
            let sts = short_lived_sts();
            let results = tempfile::tempdir().unwrap();
            let gh_output = results.path().join("github-output");
            std::fs::write(&gh_output, "").unwrap();
            let mut c = sf_publish(Some(&ep));
            c.env("S3_ENDPOINT_URL", &sts.wire.url)
                .env("SF_RESULTS_DIR", results.path().join("records"));
            if in_actions {
                c.env("GITHUB_ACTIONS", "true")
                    .env("GITHUB_OUTPUT", &gh_output);
            }
            c.args(["--role-session-duration", "900"])
                .args(["--credentials-refresh-window", &WINDOW_SECS.to_string()]);
            if what == "mirror" {
                c.arg("mirror")
                    .arg(fixture("spack-v3-unsigned"))
                    .arg(format!("s3://{bucket}/oidc-{in_actions}"))
                    .arg("--allow-unsigned");
            } else {
                // Multipart: 3 parts of 5 MiB, credentials minted again during the upload.
                c.arg("tarball")
                    .arg(&tarball)
                    .arg(format!("s3://{bucket}/oidc-{in_actions}"))
                    .args(["--multipart-threshold-mib", "5", "--part-size-mib", "5"])
                    .args(["--part-concurrency", "2"]);
                key_fingerprint_args(&mut c, &key);
            }
            let out = c.assert().success();
            let o = out.get_output();
            let issued = ep.issued.lock().unwrap().clone();
            eprintln!(
                "{what}: token requests during one publish: {}",
                ep.requests()
            );
            if what == "tarball" {
                let parts = sts
                    .wire
                    .seen()
                    .iter()
                    .filter(|r| r.method == "PUT" && r.target.contains("partNumber="))
                    .count();
                assert!(parts >= 3, "the tarball went up in parts: {parts}");
            }
            assert!(
                issued.len() >= 5 && ep.requests() == issued.len(),
                "{what}: token requests: {}",
                ep.requests()
            );
            let secrets = sts.secrets.lock().unwrap().clone();
            assert_eq!(secrets.len(), 3 * issued.len(), "one STS answer per token");
            // What the run leaves: its output, the step outputs and the result record.
            let mut left = vec![
                ("stdout", String::from_utf8_lossy(&o.stdout).into_owned()),
                ("stderr", String::from_utf8_lossy(&o.stderr).into_owned()),
                (
                    "GITHUB_OUTPUT",
                    std::fs::read_to_string(&gh_output).unwrap(),
                ),
            ];
            for e in std::fs::read_dir(results.path().join("records")).unwrap() {
                let p = e.unwrap().path();
                left.push(("a result file", std::fs::read_to_string(&p).unwrap()));
            }
            assert!(left.len() > 3, "a result record was written");
            for secret in issued
                .iter()
                .chain(&secrets)
                .map(String::as_str)
                .chain([REQUEST_TOKEN])
            {
                for (place, text) in &left {
                    for line in text.lines().filter(|l| l.contains(secret)) {
                        // Inside Actions the only place a secret may appear is the mask command.
                        assert!(
                            in_actions
                                && (*place == "stdout" || *place == "stderr")
                                && line.starts_with("::add-mask::"),
                            "{what}: a secret in {place}: {line}"
                        );
                    }
                }
            }
            if in_actions {
                let printed = format!("{}{}", left[0].1, left[1].1);
                assert!(printed.contains(&format!("::add-mask::{}", issued[0])));
                // The session token and secret key are masked; the key id is not a secret to
                // GitHub's masking, so it must simply never be printed (checked above).
                assert!(printed.contains(&format!("::add-mask::{}", secrets[2])));
            }
        }
    }
}

fn key_fingerprint_args(c: &mut Command, key: &Key) {
    c.args(["--fingerprint", &key.fingerprint, "--cert"])
        .arg(key.cert_file.path());
}

#[test]
fn a_refresh_window_of_half_the_session_or_more_is_bad_input() {
    let ep = TokenEndpoint::start(200);
    let err = fails(
        sf_publish(Some(&ep))
            .args([
                "--role-session-duration",
                "900",
                "--credentials-refresh-window",
                "450",
            ])
            .args(["reindex", "s3://no-such-bucket/x"]),
        2,
    );
    assert!(
        err.contains("--credentials-refresh-window 450")
            && err.contains("--role-session-duration 900"),
        "{err}"
    );
    assert_eq!(ep.requests(), 0, "nothing was asked of the token endpoint");
}

#[test]
fn a_role_without_a_token_source_is_bad_input() {
    let err = fails(
        sf_publish(None).args(["reindex", "s3://no-such-bucket/x"]),
        2,
    );
    assert!(err.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{err}");
    assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
}

#[test]
fn a_refused_token_request_fails_naming_the_endpoint() {
    let ep = TokenEndpoint::start(401);
    let bucket = new_bucket("sf-publish-oidc");
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
    let bucket = new_bucket("sf-publish-oidc");
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
    let err = fails(
        sf_publish(None).env("AWS_ROLE_ARN", "").args([
            "--cell-id",
            "../etc",
            "reindex",
            "s3://no-such-bucket/x",
        ]),
        2,
    );
    assert!(
        err.contains("--cell-id") && err.contains("SF_CELL_ID"),
        "{err}"
    );
}
