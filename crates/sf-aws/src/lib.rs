//! How every Slurm Factory step reaches AWS: one place that turns flags and the environment into an
//! `SdkConfig` and service clients.
//!
//! Region, credentials and retries come from the standard AWS chain (environment, profile,
//! web-identity token file, instance metadata) via `aws-config`, with our defaults on top: the
//! published bucket's region when none is configured, the standard retry mode with more attempts
//! and jittered exponential backoff (self-hosted runners see throttling and reset connections), and
//! connect/read timeouts so a dead peer fails a request instead of hanging a job. An endpoint
//! override (`S3_ENDPOINT_URL`) points the clients at an S3-compatible server (moto, s3s-fs, MinIO)
//! and switches S3 to path-style addressing, which such servers need. `sf-publish` and
//! `sf-invalidate` both build their clients here, so they authenticate and retry the same way.
//!
//! With a role ARN (`--role-arn` / `AWS_ROLE_ARN`) on a GitHub runner that offers OIDC tokens
//! (`ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, i.e. the job has
//! `permissions: id-token: write`), credentials come from the built-in provider in [`oidc`], which
//! assumes the role and mints fresh credentials before they expire. With a role ARN and
//! `AWS_WEB_IDENTITY_TOKEN_FILE` instead, the standard chain assumes the role itself (it reads
//! `AWS_ROLE_ARN` from the environment). Without a role ARN the chain is used as it is.

pub mod oidc;

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::ProvideCredentials;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use clap::Args;

pub use aws_sdk_s3;
pub use aws_sdk_s3::config::Credentials;

use sf_core::env;
use sf_core::exit::bad_input;

pub use oidc::{OidcCredentials, OidcSettings, SessionName};

/// Set by the runner for every job: the workflow run's number, part of the role session name.
pub const GITHUB_RUN_ID: &str = "GITHUB_RUN_ID";
/// A file holding a web-identity token (EKS, some runners); the standard chain reads it.
pub const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";

/// Defaults of the retry policy: S3 asks clients to back off on 503 SlowDown, and long matrix runs
/// on shared runners hit it; five attempts ride out a few seconds of throttling.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(20);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per attempt: long enough for one multipart part on a slow link, short enough to notice a stall.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The settings that shape every AWS client of one run.
#[derive(Clone, Default)]
pub struct AwsSettings {
    /// Region; `None` takes the chain's (`AWS_REGION`, profile), then [`sf_core::layout::DEFAULT_REGION`].
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server; when set, S3 uses path-style addressing.
    pub endpoint_url: Option<String>,
    /// Force path-style addressing even without an endpoint override.
    pub force_path_style: bool,
    /// Total attempts per request (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    /// Credentials to use instead of the chain (tests, rehearsals). Never logged.
    pub credentials: Option<Credentials>,
    /// The GitHub OIDC provider, used instead of the chain when set (and `credentials` is not).
    pub oidc: Option<OidcCredentials>,
}

impl fmt::Debug for AwsSettings {
    // By hand, so credentials never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("force_path_style", &self.force_path_style)
            .field("max_attempts", &self.max_attempts)
            .field("credentials", &self.credentials.as_ref().map(|_| "<set>"))
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

impl AwsSettings {
    /// The defaults above, nothing overridden.
    pub fn new() -> Self {
        AwsSettings {
            region: None,
            endpoint_url: None,
            force_path_style: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            credentials: None,
            oidc: None,
        }
    }

    /// Settings for a local S3-compatible server with fixed credentials (tests, rehearsals).
    pub fn local(endpoint_url: &str, access_key: &str, secret_key: &str) -> Self {
        AwsSettings {
            region: Some(sf_core::layout::DEFAULT_REGION.into()),
            endpoint_url: Some(endpoint_url.into()),
            credentials: Some(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "sf-aws-static",
            )),
            ..AwsSettings::new()
        }
    }

    /// Check what can be checked without the network: the endpoint is an http(s) URL.
    pub fn validate(&self) -> Result<()> {
        if let Some(ep) = &self.endpoint_url {
            if !(ep.starts_with("http://") || ep.starts_with("https://"))
                || ep.contains(char::is_whitespace)
            {
                return Err(bad_input(format!(
                    "endpoint URL {ep:?} ({}) must be an http:// or https:// URL, e.g. http://127.0.0.1:5000",
                    env::S3_ENDPOINT_URL
                )));
            }
        }
        if self.max_attempts == 0 {
            return Err(bad_input("--aws-max-attempts must be at least 1"));
        }
        if self.attempt_timeout.is_zero() {
            return Err(bad_input("--aws-attempt-timeout-secs must be at least 1"));
        }
        if let Some(r) = &self.region {
            if r.is_empty()
                || !r
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(bad_input(format!(
                    "region {r:?} is not an AWS region name such as us-east-1"
                )));
            }
        }
        Ok(())
    }

    /// Whether S3 requests use `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub fn path_style(&self) -> bool {
        self.force_path_style || self.endpoint_url.is_some()
    }

    /// The retry policy: standard mode (exponential backoff with full jitter, a retry token
    /// bucket), our attempt count and backoff bounds.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build()
    }

    /// Load the shared configuration: the chain, with these settings on top.
    pub async fn load(&self) -> Result<SdkConfig> {
        self.validate()?;
        let mut loader = self.loader();
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(c.clone());
        } else if let Some(oidc) = &self.oidc {
            // The provider's own calls (token endpoint, unsigned STS) use this configuration
            // without credentials; the clients get the provider, and no SDK identity cache in front
            // of it, so its refresh window alone decides when credentials are minted again.
            oidc.attach(&self.loader().no_credentials().load().await);
            loader = loader
                .credentials_provider(oidc.clone())
                .identity_cache(aws_config::identity::IdentityCache::no_cache());
        }
        Ok(loader.load().await)
    }

    /// The chain's loader with region, retries, timeouts and endpoint from these settings.
    fn loader(&self) -> aws_config::ConfigLoader {
        let region = RegionProviderChain::first_try(self.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new(sf_core::layout::DEFAULT_REGION));
        let loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(self.retry_config())
            .timeout_config(self.timeout_config());
        match &self.endpoint_url {
            Some(ep) => loader.endpoint_url(ep.trim_end_matches('/')),
            None => loader,
        }
    }

    /// An S3 client for this configuration.
    pub fn s3_client(&self, sdk: &SdkConfig) -> aws_sdk_s3::Client {
        // Responses are checked against the sha256 we store, by sf-store; the SDK's own check of
        // response checksums trips on S3-compatible servers that report multipart checksums
        // differently, so it runs only where an operation requires it.
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(self.path_style())
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// The AWS flags every publishing binary shares.
#[derive(Args, Clone, Debug, Default)]
pub struct AwsArgs {
    /// AWS region [default: from AWS_REGION or the profile, else us-east-1]
    #[arg(long, value_name = "REGION", global = true)]
    pub region: Option<String>,
    /// S3-compatible endpoint (local servers); switches to path-style addressing.
    #[arg(long, env = env::S3_ENDPOINT_URL, value_name = "URL", global = true)]
    pub endpoint_url: Option<String>,
    /// Attempts per AWS request, retries included.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS, value_name = "N", global = true, hide_short_help = true)]
    pub aws_max_attempts: u32,
    /// Seconds one attempt of an AWS request may take before it is abandoned and retried (a
    /// stalled connection); long enough for one multipart part on the slowest link.
    #[arg(long, default_value_t = DEFAULT_ATTEMPT_TIMEOUT.as_secs(), value_name = "SECS", global = true, hide_short_help = true)]
    pub aws_attempt_timeout_secs: u64,
    /// IAM role to assume with the GitHub OIDC token (needs `permissions: id-token: write`), or
    /// with AWS_WEB_IDENTITY_TOKEN_FILE through the standard chain.
    #[arg(long, env = env::AWS_ROLE_ARN, value_name = "ARN", global = true)]
    pub role_arn: Option<String>,
    /// Role session length asked of STS, in seconds (900 to 43200, within the role's maximum).
    #[arg(long, default_value_t = oidc::DEFAULT_SESSION_DURATION.as_secs(), value_name = "SECS", global = true, hide_short_help = true)]
    pub role_session_duration: u64,
    /// Mint new role credentials when the current ones expire within this many seconds.
    #[arg(long, default_value_t = oidc::DEFAULT_REFRESH_WINDOW.as_secs(), value_name = "SECS", global = true, hide_short_help = true)]
    pub credentials_refresh_window: u64,
}

impl AwsArgs {
    /// The settings these flags and the process environment ask for (the runner's OIDC variables
    /// and run identity are read here).
    pub fn settings(&self) -> Result<AwsSettings> {
        self.settings_for_cell(None)
    }

    /// As [`AwsArgs::settings`], naming the matrix cell in the role session name.
    pub fn settings_for_cell(&self, cell: Option<&str>) -> Result<AwsSettings> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let s = AwsSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone().filter(|e| !e.trim().is_empty()),
            max_attempts: self.aws_max_attempts,
            attempt_timeout: Duration::from_secs(self.aws_attempt_timeout_secs),
            oidc: self.oidc(&RunnerEnv {
                token_request_url: var(env::ACTIONS_ID_TOKEN_REQUEST_URL),
                token_request_token: var(env::ACTIONS_ID_TOKEN_REQUEST_TOKEN),
                web_identity_token_file: var(AWS_WEB_IDENTITY_TOKEN_FILE),
                repository: var(env::GITHUB_REPOSITORY),
                run_id: var(GITHUB_RUN_ID),
                cell: cell.map(str::to_string),
                actions: sf_core::gha::Actions::from_env(),
            })?,
            ..AwsSettings::new()
        };
        s.validate()?;
        Ok(s)
    }

    /// The OIDC provider when a role ARN and the runner's token variables are both there; `None`
    /// when there is no role or the standard chain handles it (a token file); bad input when a
    /// role is asked for with no token to assume it with.
    pub fn oidc(&self, runner: &RunnerEnv) -> Result<Option<OidcCredentials>> {
        let Some(role_arn) = self
            .role_arn
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        else {
            return Ok(None);
        };
        if !role_arn.starts_with("arn:") || role_arn.contains(char::is_whitespace) {
            return Err(bad_input(format!(
                "role ARN {role_arn:?} (--role-arn / {}) is not an ARN such as arn:aws:iam::123456789012:role/publisher",
                env::AWS_ROLE_ARN
            )));
        }
        let duration = Duration::from_secs(self.role_session_duration);
        if !(oidc::MIN_SESSION_DURATION..=oidc::MAX_SESSION_DURATION).contains(&duration) {
            return Err(bad_input(format!(
                "--role-session-duration {} is outside what STS allows: {} to {} seconds",
                self.role_session_duration,
                oidc::MIN_SESSION_DURATION.as_secs(),
                oidc::MAX_SESSION_DURATION.as_secs()
            )));
        }
        // A window as long as the session would mint new credentials for every request; half of
        // it already means minting twice per session length.
        if self.credentials_refresh_window.saturating_mul(2) >= self.role_session_duration {
            return Err(bad_input(format!(
                "--credentials-refresh-window {} is not less than half of --role-session-duration {}: \
                 credentials would be minted again on nearly every request; give a window under {} seconds",
                self.credentials_refresh_window,
                self.role_session_duration,
                self.role_session_duration.div_ceil(2)
            )));
        }
        match (&runner.token_request_url, &runner.token_request_token) {
            (Some(url), Some(token)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad_input(format!(
                        "{} {url:?} is not an http(s) URL",
                        env::ACTIONS_ID_TOKEN_REQUEST_URL
                    )));
                }
                runner.actions.mask(token);
                Ok(Some(OidcCredentials::new(OidcSettings {
                    role_arn: role_arn.to_string(),
                    token_request_url: url.clone(),
                    token_request_token: token.clone(),
                    session_name: SessionName::for_run(
                        runner.repository.as_deref(),
                        runner.run_id.as_deref(),
                        runner.cell.as_deref(),
                    ),
                    session_duration: duration,
                    refresh_window: Duration::from_secs(self.credentials_refresh_window),
                    actions: runner.actions.clone(),
                })))
            }
            _ if runner.web_identity_token_file.is_some() => Ok(None),
            _ => Err(bad_input(format!(
                "role {role_arn} was given (--role-arn / {}) but there is no token to assume it with: \
                 on GitHub Actions give the job `permissions: id-token: write` so the runner sets {} and {}; \
                 elsewhere set {} (with {})",
                env::AWS_ROLE_ARN,
                env::ACTIONS_ID_TOKEN_REQUEST_URL,
                env::ACTIONS_ID_TOKEN_REQUEST_TOKEN,
                AWS_WEB_IDENTITY_TOKEN_FILE,
                env::AWS_ROLE_ARN
            ))),
        }
    }
}

/// What the runner's environment says about OIDC and the run, passed in rather than read inside
/// so it can be given explicitly.
#[derive(Clone, Default)]
pub struct RunnerEnv {
    pub token_request_url: Option<String>,
    pub token_request_token: Option<String>,
    pub web_identity_token_file: Option<String>,
    pub repository: Option<String>,
    pub run_id: Option<String>,
    pub cell: Option<String>,
    pub actions: sf_core::gha::Actions,
}

impl fmt::Debug for RunnerEnv {
    // By hand: the request token is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerEnv")
            .field("token_request_url", &self.token_request_url)
            .field("web_identity_token_file", &self.web_identity_token_file)
            .field("repository", &self.repository)
            .field("run_id", &self.run_id)
            .field("cell", &self.cell)
            .finish_non_exhaustive()
    }
}

/// Whether the chain found any credentials; a clear error when not, before any request fails with
/// a less helpful one.
pub async fn require_credentials(sdk: &SdkConfig) -> Result<()> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(bad_input(no_credentials_text()));
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        // The role and token source were given and checked; minting failed: the work failed.
        Err(e) if error_chain_has::<oidc::OidcError>(&e) => {
            Err(anyhow::anyhow!("{}", error_text(&e)))
        }
        Err(e) => Err(bad_input(format!(
            "{}: {}",
            no_credentials_text(),
            error_text(&e)
        ))),
    }
}

fn no_credentials_text() -> String {
    format!(
        "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a web-identity token \
         (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or {} on a GitHub runner), or run on an instance with a role",
        env::AWS_ROLE_ARN
    )
}

fn error_chain_has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.is::<T>() {
            return true;
        }
        cur = x.source();
    }
    false
}

/// [`error_text`] of a failed AWS call, with the HTTP status when the server answered with an
/// error: a HEAD (and many a proxy or 5xx answer) has no body, so the status is all that says
/// what went wrong. A redirect to the bucket's own region names the region, since that is the fix.
pub fn sdk_error_text<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + 'static,
{
    let mut text = error_text(e);
    if let Some(raw) = e.raw_response() {
        let status = raw.status();
        if !status.is_success() {
            text.push_str(&format!(" (HTTP {}", status.as_u16()));
            if let Some(region) = raw.headers().get("x-amz-bucket-region") {
                text.push_str(&format!(", the bucket is in region {region}"));
            }
            text.push(')');
        }
    }
    text
}

/// The message of an SDK error with its sources, on one line: SDK errors print only their kind
/// ("service error"), and the SDK's own `DisplayErrorContext` appends a debug dump of the whole
/// response, headers and body included, which buries the one line that says what went wrong.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_without_a_body_still_says_its_status_and_region() {
        use aws_sdk_s3::operation::head_object::HeadObjectError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        let answer = |status: u16, region: Option<&str>| {
            let mut raw =
                HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
            if let Some(r) = region {
                raw.headers_mut()
                    .insert("x-amz-bucket-region", r.to_string());
            }
            let e = HeadObjectError::generic(ErrorMetadata::builder().build());
            sdk_error_text(&SdkError::service_error(e, raw))
        };
        let moved = answer(301, Some("eu-west-1"));
        assert!(
            moved.ends_with("(HTTP 301, the bucket is in region eu-west-1)"),
            "{moved}"
        );
        let busy = answer(503, None);
        assert!(busy.ends_with("(HTTP 503)"), "{busy}");
        assert!(!busy.contains('\n'), "{busy}");
        // No answer at all: nothing to add.
        let e: SdkError<HeadObjectError, HttpResponse> =
            SdkError::timeout_error("no answer in time");
        assert!(
            !sdk_error_text(&e).contains("HTTP"),
            "{}",
            sdk_error_text(&e)
        );
    }

    #[test]
    fn an_endpoint_means_path_style() {
        let s = AwsSettings::local("http://127.0.0.1:5000", "a", "b");
        assert!(s.path_style());
        assert!(!AwsSettings::new().path_style());
        assert!(format!("{s:?}").contains("<set>") && !format!("{s:?}").contains("\"b\""));
    }

    #[test]
    fn bad_settings_are_bad_input() {
        let mut s = AwsSettings::new();
        s.endpoint_url = Some("127.0.0.1:5000".into());
        assert_eq!(sf_core::exit::code_for(&s.validate().unwrap_err()), 2);
        let mut s = AwsSettings::new();
        s.region = Some("US East".into());
        assert_eq!(sf_core::exit::code_for(&s.validate().unwrap_err()), 2);
        let mut s = AwsSettings::new();
        s.attempt_timeout = Duration::ZERO;
        assert_eq!(sf_core::exit::code_for(&s.validate().unwrap_err()), 2);
    }

    #[test]
    fn a_refresh_window_of_half_the_session_is_bad_input() {
        let runner = RunnerEnv {
            token_request_url: Some("http://127.0.0.1:1/token".into()),
            token_request_token: Some("t".into()),
            ..RunnerEnv::default()
        };
        let args = |window: u64| AwsArgs {
            role_arn: Some("arn:aws:iam::123456789012:role/r".into()),
            role_session_duration: 900,
            credentials_refresh_window: window,
            ..AwsArgs::default()
        };
        for window in [450, 900, 3600] {
            let e = args(window).oidc(&runner).unwrap_err();
            assert_eq!(sf_core::exit::code_for(&e), 2);
            let text = e.to_string();
            assert!(
                text.contains(&format!("--credentials-refresh-window {window}"))
                    && text.contains("--role-session-duration 900"),
                "{text}"
            );
        }
        assert!(args(449).oidc(&runner).unwrap().is_some());
    }

    #[tokio::test]
    async fn clients_reach_a_local_server() {
        let s = AwsSettings::local(&sf_testkit::moto_url(), "test", "test");
        let sdk = s.load().await.unwrap();
        assert_eq!(sdk.region().unwrap().as_ref(), "us-east-1");
        require_credentials(&sdk).await.unwrap();
        let s3 = s.s3_client(&sdk);
        let bucket = "sf-aws-reach-test";
        let _ = s3.create_bucket().bucket(bucket).send().await;
        s3.put_object()
            .bucket(bucket)
            .key("k")
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object()
            .bucket(bucket)
            .key("k")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            b"x"
        );
    }
}
