//! Credentials from the GitHub Actions OIDC token, minted again before they expire.
//!
//! On a GitHub runner with `permissions: id-token: write`, the runner hands a job a URL and a
//! bearer token (`ACTIONS_ID_TOKEN_REQUEST_URL`, `ACTIONS_ID_TOKEN_REQUEST_TOKEN`) with which it
//! can ask for a short-lived ID token (a JWT) for an audience. STS `AssumeRoleWithWebIdentity`
//! trades that ID token for role credentials. Matrix jobs run for hours, longer than a role session
//! lasts, so [`OidcCredentials`] keeps the credentials it minted and mints new ones, with a NEW ID
//! token each time (the old one may have expired too), once they are within the refresh window of
//! their expiry. The SDK's own identity cache is switched off for clients using it (see
//! [`crate::AwsSettings::load`]) so that every request asks this provider and this window alone
//! decides when to refresh.
//!
//! Where a web-identity token FILE is provided instead (`AWS_WEB_IDENTITY_TOKEN_FILE` with
//! `AWS_ROLE_ARN`, as on EKS), the standard `aws-config` chain already does the same job, so that
//! case is left to it. ID tokens and credentials never reach a log line; inside Actions they are
//! masked as soon as they arrive.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::runtime_plugin::StaticRuntimePlugin;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::Layer;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use sf_core::gha::Actions;

/// The audience STS expects in a GitHub ID token.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// Role session length asked of STS unless configured; AWS allows 900 to 43200 seconds (up to the
/// role's own maximum).
pub const DEFAULT_SESSION_DURATION: Duration = Duration::from_secs(3600);
pub const MIN_SESSION_DURATION: Duration = Duration::from_secs(900);
pub const MAX_SESSION_DURATION: Duration = Duration::from_secs(43200);
/// Credentials this close to expiry are replaced before the next request uses them: longer than
/// one multipart part or one listing takes, so no request starts with credentials about to lapse.
pub const DEFAULT_REFRESH_WINDOW: Duration = Duration::from_secs(300);
/// STS allows `[\w+=,.@-]`, 2 to 64 characters, in a role session name.
pub const MAX_SESSION_NAME: usize = 64;

/// The name of a role session: shows in CloudTrail, so it says which repository, run and cell
/// acted. Only the characters STS allows, at most 64 of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionName(String);

impl SessionName {
    /// `sf-<owner>-<repo>-<run id>-<cell>`, each part present only when known (`slurm-factory`
    /// when none is); other characters become `-`. Past 64 characters the repository gives way
    /// first (its owner, then its end), so the run id and the cell, which tell runs and jobs apart
    /// in CloudTrail, stay whole.
    pub fn for_run(repository: Option<&str>, run_id: Option<&str>, cell: Option<&str>) -> Self {
        fn given(p: Option<&str>) -> Option<&str> {
            p.map(str::trim).filter(|p| !p.is_empty())
        }
        let (repository, run_id, cell) = (given(repository), given(run_id), given(cell));
        if repository.is_none() && run_id.is_none() && cell.is_none() {
            return SessionName("slurm-factory".into());
        }
        // "sf", then "-part" for each part.
        let rest: usize = [run_id, cell].iter().flatten().map(|p| p.len() + 1).sum();
        let room = MAX_SESSION_NAME.saturating_sub(2 + rest);
        let repository = repository.and_then(|r| {
            let name = r.rsplit('/').next().unwrap_or(r);
            if r.len() < room {
                Some(r)
            } else if name.len() < room {
                Some(name)
            } else if room > 1 {
                name.get(..room - 1)
            } else {
                None
            }
        });
        let mut name = String::from("sf");
        for p in [repository, run_id, cell].into_iter().flatten() {
            name.push('-');
            name.push_str(p);
        }
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_SESSION_NAME)
            .collect();
        SessionName(clean)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything the provider needs: the role, the runner's token endpoint and how long sessions
/// last. The request token is a secret: `Debug` leaves it out.
#[derive(Clone)]
pub struct OidcSettings {
    pub role_arn: String,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL`, as the runner gives it (it already carries a query).
    pub token_request_url: String,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub token_request_token: String,
    pub session_name: SessionName,
    pub session_duration: Duration,
    pub refresh_window: Duration,
    /// Where masks go (inside Actions) so tokens and credentials never show in the log.
    pub actions: Actions,
}

impl fmt::Debug for OidcSettings {
    // By hand, so the request token never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("role_arn", &self.role_arn)
            .field("token_request_url", &self.token_request_url)
            .field("session_name", &self.session_name)
            .field("session_duration", &self.session_duration)
            .field("refresh_window", &self.refresh_window)
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be minted: always a failure of the work (exit 1), since the inputs
/// were checked when the settings were made.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the GitHub OIDC token endpoint {endpoint} answered HTTP {status}; does the job have `permissions: id-token: write`?")]
    TokenStatus { endpoint: String, status: u16 },
    #[error("could not reach the GitHub OIDC token endpoint {endpoint}: {detail}")]
    TokenRequest { endpoint: String, detail: String },
    #[error("the GitHub OIDC token endpoint {endpoint} answered without a token: {detail}")]
    TokenBody { endpoint: String, detail: String },
    #[error("STS AssumeRoleWithWebIdentity for role {role_arn} failed: {detail}")]
    AssumeRole { role_arn: String, detail: String },
}

/// The token endpoint's answer: `{"value": "<jwt>"}`. Its `Debug` hides the token.
struct IdToken(String);

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken(<redacted>)")
    }
}

#[derive(serde::Deserialize)]
struct TokenBody {
    value: String,
}

/// A credentials provider for the SDK; clones share one cache, so every client of a run refreshes
/// together and a refresh happens once, not once per client.
#[derive(Clone)]
pub struct OidcCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OidcSettings,
    /// The base configuration (region, endpoint, HTTP client, retries), without credentials:
    /// `AssumeRoleWithWebIdentity` is an unsigned call. Set by the first `load`.
    base: tokio::sync::OnceCell<(aws_sdk_sts::Client, SdkConfig)>,
    /// Held across a refresh, so concurrent requests near expiry wait for one new set.
    cache: tokio::sync::Mutex<Option<Credentials>>,
    minted: AtomicU64,
}

impl fmt::Debug for OidcCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcCredentials")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl OidcCredentials {
    pub fn new(settings: OidcSettings) -> Self {
        OidcCredentials {
            inner: Arc::new(Inner {
                settings,
                base: tokio::sync::OnceCell::new(),
                cache: tokio::sync::Mutex::new(None),
                minted: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.inner.settings
    }

    /// How many times credentials were minted (one ID token and one AssumeRoleWithWebIdentity each).
    pub fn minted(&self) -> u64 {
        self.inner.minted.load(Ordering::Relaxed)
    }

    /// Give the provider the configuration its own calls use; the first one wins.
    pub(crate) fn attach(&self, base: &SdkConfig) {
        let sts = aws_sdk_sts::Client::new(base);
        let _ = self.inner.base.set((sts, base.clone()));
    }

    /// The cached credentials while they are outside the refresh window, else fresh ones.
    pub async fn credentials(&self) -> Result<Credentials, OidcError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            let fresh_until = c
                .expiry()
                .and_then(|e| e.checked_sub(self.inner.settings.refresh_window));
            if fresh_until.is_some_and(|t| SystemTime::now() < t) {
                return Ok(c.clone());
            }
        }
        let c = self.mint().await?;
        *cache = Some(c.clone());
        Ok(c)
    }

    async fn mint(&self) -> Result<Credentials, OidcError> {
        let s = &self.inner.settings;
        let (sts, base) = self.inner.base.get().ok_or_else(|| OidcError::AssumeRole {
            role_arn: s.role_arn.clone(),
            detail: "no AWS configuration was loaded before credentials were asked for".into(),
        })?;
        let token = fetch_id_token(s, base).await?;
        s.actions.mask(&token.0);
        let out = sts
            .assume_role_with_web_identity()
            .role_arn(&s.role_arn)
            .role_session_name(s.session_name.as_str())
            .web_identity_token(&token.0)
            .duration_seconds(i32::try_from(s.session_duration.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| OidcError::AssumeRole {
                role_arn: s.role_arn.clone(),
                detail: crate::sdk_error_text(&e),
            })?;
        let no_creds = || OidcError::AssumeRole {
            role_arn: s.role_arn.clone(),
            detail: "the answer held no credentials".into(),
        };
        let c = out.credentials().ok_or_else(no_creds)?;
        s.actions.mask(c.secret_access_key());
        s.actions.mask(c.session_token());
        let expiry = SystemTime::try_from(*c.expiration()).map_err(|_| no_creds())?;
        self.inner.minted.fetch_add(1, Ordering::Relaxed);
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            Some(expiry),
            "sf-github-oidc",
        ))
    }
}

impl ProvideCredentials for OidcCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

/// Split `https://host:port/path?query` into the endpoint (`https://host:port`) and the rest,
/// which is how the SDK's operation runner takes a URL.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let after_scheme = url.find("://")? + 3;
    match url[after_scheme..].find('/') {
        Some(i) => Some((&url[..after_scheme + i], &url[after_scheme + i..])),
        None => Some((url, "/")),
    }
}

/// The URL without its query, for messages: the query is the runner's, not a secret, but short
/// messages read better.
fn endpoint_for_messages(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// One GET of the runner's token endpoint for the STS audience, through the SDK's HTTP client (so
/// the same TLS stack, timeouts and retry of 5xx and dropped connections as every AWS call).
async fn fetch_id_token(s: &OidcSettings, base: &SdkConfig) -> Result<IdToken, OidcError> {
    let endpoint = endpoint_for_messages(&s.token_request_url);
    let (origin, path) =
        split_url(&s.token_request_url).ok_or_else(|| OidcError::TokenRequest {
            endpoint: endpoint.clone(),
            detail: "not an http(s) URL".into(),
        })?;
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}audience={STS_AUDIENCE}");
    let bearer = format!("Bearer {}", s.token_request_token);
    let endpoint_for_parse = endpoint.clone();
    let mut op = Operation::builder()
        .service_name("GitHubActionsOidc")
        .operation_name("GetIdToken")
        .endpoint_url(origin)
        .no_auth()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        // Keeps the answer (the token) out of the SDK's trace logging.
        .runtime_plugin(StaticRuntimePlugin::new().with_config({
            let mut layer = Layer::new("SensitiveOutput");
            layer.store_put(aws_smithy_runtime_api::client::orchestrator::SensitiveOutput);
            layer.freeze()
        }));
    if let Some(http) = base.http_client() {
        op = op.http_client(http);
    }
    if let Some(sleep) = base.sleep_impl() {
        op = op
            .sleep_impl(sleep)
            .standard_retry(&RetryConfig::standard().with_max_attempts(4))
            .retry_classifier(TransientErrorClassifier::<OidcError>::new())
            .retry_classifier(HttpStatusCodeClassifier::default());
    } else {
        op = op.no_retry();
    }
    if let Some(ts) = base.time_source() {
        op = op.time_source(ts);
    }
    let op = op
        .serializer(move |(): ()| {
            let mut req = HttpRequest::new(SdkBody::empty());
            req.set_uri(path.as_str())
                .map_err(aws_smithy_runtime_api::box_error::BoxError::from)?;
            req.headers_mut().insert("authorization", bearer.clone());
            req.headers_mut().insert("accept", "application/json");
            Ok(req)
        })
        .deserializer(move |resp: &HttpResponse| parse_token(&endpoint_for_parse, resp))
        .build();
    op.invoke(()).await.map_err(|e| match e {
        aws_smithy_runtime_api::client::result::SdkError::ServiceError(se) => se.into_err(),
        other => OidcError::TokenRequest {
            endpoint,
            detail: crate::sdk_error_text(&other),
        },
    })
}

fn parse_token(
    endpoint: &str,
    resp: &HttpResponse,
) -> Result<IdToken, OrchestratorError<OidcError>> {
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(OrchestratorError::operation(OidcError::TokenStatus {
            endpoint: endpoint.to_string(),
            status,
        }));
    }
    let body = resp.body().bytes().unwrap_or_default();
    let bad = |detail: String| {
        OrchestratorError::operation(OidcError::TokenBody {
            endpoint: endpoint.to_string(),
            detail,
        })
    };
    // The error text names serde's complaint, never the body (which may hold the token).
    let parsed: TokenBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not JSON of the form {{\"value\": \"<token>\"}} ({})",
            e.classify_text()
        ))
    })?;
    if parsed.value.trim().is_empty() {
        return Err(bad("the value is empty".into()));
    }
    Ok(IdToken(parsed.value))
}

trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "no string field `value`",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_keep_to_what_sts_allows() {
        let n = SessionName::for_run(
            Some("vantagecompute/slurm-factory"),
            Some("123"),
            Some("25.05 gcc/13 x86_64"),
        );
        assert!(n.as_str().len() <= MAX_SESSION_NAME);
        assert!(n
            .as_str()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
        assert!(n
            .as_str()
            .starts_with("sf-vantagecompute-slurm-factory-123-25.05-gcc-13-x86_64"));
        assert_eq!(
            SessionName::for_run(None, None, None).as_str(),
            "slurm-factory"
        );
        // A real run id is 11 digits: the owner gives way, the cell stays whole.
        let cell = "tarball-25.11-noble-amd64-cpu";
        let n = SessionName::for_run(
            Some("vantagecompute/slurm-factory"),
            Some("12345678901"),
            Some(cell),
        );
        assert_eq!(
            n.as_str(),
            "sf-slurm-factory-12345678901-tarball-25.11-noble-amd64-cpu"
        );
        let n = SessionName::for_run(
            Some("an-owner/a-repository-with-a-very-long-name"),
            Some("12345678901"),
            Some("version-25.11-rockylinux10-arm64-gpu"),
        );
        assert!(n.as_str().len() <= MAX_SESSION_NAME, "{}", n.as_str());
        assert!(
            n.as_str()
                .ends_with("-12345678901-version-25.11-rockylinux10-arm64-gpu"),
            "{}",
            n.as_str()
        );
    }

    #[test]
    fn urls_split_into_origin_and_path() {
        assert_eq!(
            split_url("https://x.actions.example:8443/idtoken?api-version=2.0"),
            Some(("https://x.actions.example:8443", "/idtoken?api-version=2.0"))
        );
        assert_eq!(split_url("http://h"), Some(("http://h", "/")));
        assert_eq!(split_url("h/x"), None);
    }

    #[test]
    fn debug_never_shows_the_request_token() {
        let s = OidcSettings {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            token_request_url: "http://127.0.0.1/x".into(),
            token_request_token: "SECRET-REQUEST-TOKEN".into(),
            session_name: SessionName::for_run(None, None, None),
            session_duration: DEFAULT_SESSION_DURATION,
            refresh_window: DEFAULT_REFRESH_WINDOW,
            actions: Actions::default(),
        };
        assert!(!format!("{s:?}").contains("SECRET"));
        assert!(!format!("{:?}", OidcCredentials::new(s)).contains("SECRET"));
    }
}
