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

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::ProvideCredentials;
use clap::Args;

pub use aws_sdk_s3;
pub use aws_sdk_s3::config::Credentials;

use sf_core::env;
use sf_core::exit::bad_input;

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
    /// Credentials to use instead of the chain (tests, and the OIDC provider later). Never logged.
    pub credentials: Option<Credentials>,
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
        let region = RegionProviderChain::first_try(self.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new(sf_core::layout::DEFAULT_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(self.retry_config())
            .timeout_config(self.timeout_config());
        if let Some(ep) = &self.endpoint_url {
            loader = loader.endpoint_url(ep.trim_end_matches('/'));
        }
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        Ok(loader.load().await)
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
}

impl AwsArgs {
    pub fn settings(&self) -> Result<AwsSettings> {
        let s = AwsSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone().filter(|e| !e.trim().is_empty()),
            max_attempts: self.aws_max_attempts,
            ..AwsSettings::new()
        };
        s.validate()?;
        Ok(s)
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
        Err(e) => Err(bad_input(format!(
            "{}: {}",
            no_credentials_text(),
            sf_error_text(&e)
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

/// The message of an SDK error with its sources, on one line (SDK errors print only their kind).
pub fn sf_error_text(e: &(dyn std::error::Error + 'static)) -> String {
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
