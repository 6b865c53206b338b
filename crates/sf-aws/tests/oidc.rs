//! The GitHub OIDC provider end to end on loopback: a token endpoint written here that speaks the
//! runner's wire format (bearer token in, `{"value": "<jwt>"}` out), and the local S3 server's STS
//! (which accepts any token) and S3.

#[path = "support/token_endpoint.rs"]
mod token_endpoint;

use token_endpoint::{TokenEndpoint, REQUEST_TOKEN};

use sf_aws::{AwsArgs, AwsSettings, RunnerEnv};
use sf_testkit::moto_url;

impl TokenEndpoint {
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
        aws_attempt_timeout_secs: sf_aws::DEFAULT_ATTEMPT_TIMEOUT.as_secs(),
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

/// The provider with a refresh window the flags refuse (see `AwsArgs::oidc`), built directly:
/// every use falls inside it, so each request mints anew.
fn settings_always_refreshing(runner: &RunnerEnv) -> AwsSettings {
    let a = args(900, 300);
    let mut st = a.oidc(runner).unwrap().unwrap().settings().clone();
    st.refresh_window = std::time::Duration::from_secs(3600);
    AwsSettings {
        oidc: Some(sf_aws::OidcCredentials::new(st)),
        ..settings(&a, runner)
    }
}

#[tokio::test]
async fn credentials_near_expiry_are_minted_again_with_a_new_token() {
    let ep = TokenEndpoint::start(200);
    let s = settings_always_refreshing(&ep.runner());
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
