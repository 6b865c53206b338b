//! The GitHub OIDC provider end to end on loopback: a token endpoint written here that speaks the
//! runner's wire format (bearer token in, `{"value": "<jwt>"}` out), and the local S3 server's STS
//! (which accepts any token) and S3.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sf_aws::{AwsArgs, AwsSettings, RunnerEnv};
use sf_testkit::moto_url;

pub const REQUEST_TOKEN: &str = "request-token-for-the-test";

/// The runner's token endpoint: checks the bearer token and the audience, counts requests and
/// hands out a new JWT-shaped token each time (all of them kept, to look for them in logs).
pub struct TokenEndpoint {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    pub issued: Arc<Mutex<Vec<String>>>,
}

impl TokenEndpoint {
    /// `status` is what every request gets when the bearer token and audience are right.
    pub fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/_apis/distributedtask/idtoken?api-version=2.0",
            listener.local_addr().unwrap()
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let (r, i) = (requests.clone(), issued.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = v.trim().to_string();
                        }
                    }
                }
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                let authorised = auth == format!("Bearer {REQUEST_TOKEN}")
                    && line.starts_with("GET ")
                    && target.starts_with("/_apis/distributedtask/idtoken?api-version=2.0&")
                    && target.ends_with("&audience=sts.amazonaws.com");
                let (code, body) = if !authorised {
                    (400, r#"{"message":"bad request"}"#.to_string())
                } else if status != 200 {
                    (status, r#"{"message":"denied"}"#.to_string())
                } else {
                    let token = format!(
                        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyZXBvOnNsdXJtIiwibiI6{n}fQ.c2lnbmF0dXJl{n:04}"
                    );
                    i.lock().unwrap().push(token.clone());
                    (200, format!(r#"{{"count":1,"value":"{token}"}}"#))
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenEndpoint {
            url,
            requests,
            issued,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn runner(&self) -> RunnerEnv {
        RunnerEnv {
            token_request_url: Some(self.url.clone()),
            token_request_token: Some(REQUEST_TOKEN.into()),
            repository: Some("vantagecompute/slurm-factory".into()),
            run_id: Some("4242".into()),
            cell: Some("25.05-gcc13-x86_64".into()),
            ..RunnerEnv::default()
        }
    }
}

fn args(duration: u64, window: u64) -> AwsArgs {
    AwsArgs {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto_url()),
        aws_max_attempts: 2,
        role_arn: Some("arn:aws:iam::123456789012:role/sf-publisher".into()),
        role_session_duration: duration,
        credentials_refresh_window: window,
    }
}

fn settings(a: &AwsArgs, runner: &RunnerEnv) -> AwsSettings {
    AwsSettings {
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
        max_attempts: a.aws_max_attempts,
        oidc: a.oidc(runner).unwrap(),
        ..AwsSettings::new()
    }
}

#[tokio::test]
async fn credentials_near_expiry_are_minted_again_with_a_new_token() {
    let ep = TokenEndpoint::start(200);
    // Every use is inside the refresh window: each request mints anew.
    let a = args(900, 3600);
    let s = settings(&a, &ep.runner());
    let oidc = s.oidc.clone().unwrap();
    assert_eq!(
        oidc.settings().session_name.as_str(),
        "sf-vantagecompute-slurm-factory-4242-25.05-gcc13-x86_64"
    );
    let sdk = s.load().await.unwrap();
    sf_aws::require_credentials(&sdk).await.unwrap();
    assert_eq!(ep.requests(), 1);
    assert_eq!(oidc.minted(), 1);

    let s3 = s.s3_client(&sdk);
    let bucket = format!("sf-aws-oidc-{}", sf_core::fsutil::random_hex(4).unwrap());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for i in 0..3 {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("k{i}"))
            .body(format!("v{i}").into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("k2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"v2"
    );
    // One mint for the check, then one per request (create, 3 puts, get).
    assert_eq!(ep.requests(), 6, "token requests");
    assert_eq!(oidc.minted(), 6, "AssumeRoleWithWebIdentity calls");
    let issued = ep.issued.lock().unwrap().clone();
    let mut distinct = issued.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), issued.len(), "a new ID token each time");

    // Two mints in a row give different session credentials from STS.
    let c1 = oidc.credentials().await.unwrap();
    let c2 = oidc.credentials().await.unwrap();
    assert_ne!(c1.access_key_id(), c2.access_key_id());
    assert!(c1.session_token().is_some() && c1.expiry().is_some());
}

#[tokio::test]
async fn credentials_outside_the_window_are_reused() {
    let ep = TokenEndpoint::start(200);
    let a = args(3600, 300);
    let s = settings(&a, &ep.runner());
    let sdk = s.load().await.unwrap();
    let s3 = s.s3_client(&sdk);
    let bucket = format!("sf-aws-oidc-{}", sf_core::fsutil::random_hex(4).unwrap());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for i in 0..4 {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("k{i}"))
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    // A second load (another client of the same run) shares the cache.
    let sdk2 = s.clone().load().await.unwrap();
    s.s3_client(&sdk2)
        .head_object()
        .bucket(&bucket)
        .key("k3")
        .send()
        .await
        .unwrap();
    assert_eq!(ep.requests(), 1);
    assert_eq!(s.oidc.unwrap().minted(), 1);
}

#[tokio::test]
async fn a_refused_token_request_fails_the_work_naming_the_endpoint() {
    let ep = TokenEndpoint::start(401);
    let a = args(900, 300);
    let s = settings(&a, &ep.runner());
    let sdk = s.load().await.unwrap();
    let err = sf_aws::require_credentials(&sdk).await.unwrap_err();
    let text = format!("{err:#}");
    assert_eq!(sf_core::exit::code_for(&err), 1, "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains(ep.url.split('?').next().unwrap()), "{text}");
    assert!(!text.contains(REQUEST_TOKEN), "{text}");
    // 401 is not retried.
    assert_eq!(ep.requests(), 1);
}

#[test]
fn a_role_without_a_token_source_is_bad_input() {
    let a = args(3600, 300);
    let err = a.oidc(&RunnerEnv::default()).unwrap_err();
    assert_eq!(sf_core::exit::code_for(&err), 2);
    let text = err.to_string();
    assert!(text.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{text}");
    assert!(text.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{text}");
    // With a token file the standard chain assumes the role.
    let file = RunnerEnv {
        web_identity_token_file: Some("/var/run/token".into()),
        ..RunnerEnv::default()
    };
    assert!(a.oidc(&file).unwrap().is_none());
    // No role: the chain as it is.
    let none = AwsArgs {
        role_arn: None,
        ..args(3600, 300)
    };
    assert!(none.oidc(&RunnerEnv::default()).unwrap().is_none());
    // Out-of-range session and malformed ARN are bad input too.
    let ep = RunnerEnv {
        token_request_url: Some("http://127.0.0.1:1/x".into()),
        token_request_token: Some("t".into()),
        ..RunnerEnv::default()
    };
    assert_eq!(
        sf_core::exit::code_for(&args(60, 300).oidc(&ep).unwrap_err()),
        2
    );
    let bad_arn = AwsArgs {
        role_arn: Some("publisher".into()),
        ..args(3600, 300)
    };
    assert_eq!(sf_core::exit::code_for(&bad_arn.oidc(&ep).unwrap_err()), 2);
}
