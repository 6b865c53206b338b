//! GitHub's REST API, through octocrab: a check run on the commit, and a release whose notes are
//! the catalog and whose assets are the `SHA256SUMS` files and their signatures.
//!
//! Every call goes through [`GitHub::call`], which sends GitHub's documented headers (`Accept:
//! application/vnd.github+json`, `X-GitHub-Api-Version`), and retries server errors with backoff
//! and rate limits (403/429 with `retry-after` or `x-ratelimit-*`, or GitHub's "secondary rate
//! limit" message) after the wait GitHub asks for. octocrab's own retry layer is off: it retries at
//! once and does not read those headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use http::header::{HeaderName, ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Method, StatusCode};
use octocrab::service::middleware::retry::RetryConfig;
use octocrab::Octocrab;
use serde::Serialize;
use serde_json::{json, Value};
use sf_core::bad_input;

/// The REST API version this client speaks.
pub const API_VERSION: &str = "2022-11-28";
/// GitHub's media type for JSON.
pub const MEDIA_TYPE: &str = "application/vnd.github+json";
/// The public API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Longest text GitHub takes in a check run's `output.summary`.
pub const CHECK_RUN_TEXT_LIMIT: usize = 65_535;
/// Longest release body GitHub takes.
pub const RELEASE_BODY_LIMIT: usize = 125_000;

/// `owner/name`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSlug {
    pub owner: String,
    pub name: String,
}

impl RepoSlug {
    pub fn parse(s: &str) -> Result<Self> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match s.trim().split_once('/') {
            Some((o, n)) if ok(o) && ok(n) => Ok(RepoSlug {
                owner: o.into(),
                name: n.into(),
            }),
            _ => Err(bad_input(format!(
                "repository {s:?} is not of the form owner/name"
            ))),
        }
    }
}

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries per call, the first included.
    pub attempts: u32,
    /// First backoff after a server error; doubles each time.
    pub backoff: Duration,
    /// Longest wait GitHub may ask for before the call gives up instead.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// A non-success answer from GitHub.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub method: String,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GitHub answered {} to {} {}: {}",
            self.status, self.method, self.path, self.message
        )?;
        if matches!(self.status, 401 | 403 | 404) {
            write!(
                f,
                " (the token may lack rights: check runs need `checks: write`, releases `contents: write`, on this repository)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A token without rights, or a repository it cannot see, is the caller's to fix (exit 2); other
/// errors stay failures of the work.
pub fn classify(err: anyhow::Error) -> anyhow::Error {
    let refused = err
        .chain()
        .find_map(|c| c.downcast_ref::<ApiError>())
        .is_some_and(|a| matches!(a.status, 401 | 403 | 404));
    if refused {
        sf_core::bad_input(format!("{err:#}"))
    } else {
        err
    }
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    Json(Value),
    Bytes { content_type: String, data: Vec<u8> },
}

/// How long to wait before trying a failed call again, or `None` to give up.
pub fn retry_wait(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
    attempt: u32,
    policy: &RetryPolicy,
    now: SystemTime,
) -> Option<Duration> {
    if status.is_server_error() {
        return Some(policy.backoff.saturating_mul(1 << attempt.min(10)));
    }
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
            let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
        }
    }
    let m = message.to_ascii_lowercase();
    if status == StatusCode::TOO_MANY_REQUESTS
        || m.contains("secondary rate limit")
        || m.contains("abuse detection")
    {
        // GitHub's advice without a header: wait at least a minute.
        return Some(Duration::from_secs(60).max(policy.backoff));
    }
    None
}

/// A GitHub API client for one repository.
pub struct GitHub {
    octo: Octocrab,
    api_url: String,
    pub repo: RepoSlug,
    policy: RetryPolicy,
    /// Calls retried, for the result record.
    pub retries: std::sync::atomic::AtomicU64,
}

/// What the check run call left.
#[derive(Clone, Debug, Serialize)]
pub struct CheckRun {
    pub id: u64,
    pub html_url: String,
}

/// What the release call left.
#[derive(Clone, Debug, Serialize)]
pub struct Release {
    pub id: u64,
    pub html_url: String,
    pub created: bool,
    /// Assets uploaded (new, or replacing different bytes).
    pub assets: Vec<String>,
    /// Assets the release already held with the same bytes, left alone.
    pub unchanged: Vec<String>,
}

/// Suffix of the name a replacement asset is uploaded under before the old asset goes: the
/// release keeps its old asset until the new one is fully there.
pub const UPLOAD_SUFFIX: &str = ".sf-summary-upload";

/// Whether a release asset GitHub describes holds exactly `data`: fully uploaded, same size and
/// same sha256. GitHub gives `digest` (`sha256:<hex>`) for assets uploaded since mid-2025; an
/// asset without one cannot be compared and counts as different (it is replaced, safely).
pub fn asset_holds(asset: &Value, data: &[u8]) -> bool {
    use sha2::Digest;
    let uploaded = asset["state"].as_str().is_none_or(|s| s == "uploaded");
    let size = asset["size"].as_u64() == Some(data.len() as u64);
    let digest = asset["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .is_some_and(|hex| hex.eq_ignore_ascii_case(&hex::encode(sha2::Sha256::digest(data))));
    uploaded && size && digest
}

impl GitHub {
    /// A client; call inside a tokio runtime. The token is sent only to the API's host.
    pub fn new(api_url: &str, token: &str, repo: RepoSlug, policy: RetryPolicy) -> Result<Self> {
        let api_url = api_url.trim().trim_end_matches('/').to_string();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(bad_input(format!(
                "GitHub API URL {api_url:?} must be an http(s) URL"
            )));
        }
        let octo = Octocrab::builder()
            .add_retry_config(RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(15)))
            .set_read_timeout(Some(Duration::from_secs(120)))
            .personal_token(token.to_string())
            .base_uri(api_url.as_str())
            .map_err(|e| bad_input(format!("GitHub API URL {api_url:?}: {e}")))?
            .build()
            .context("building the GitHub client")?;
        Ok(GitHub {
            octo,
            api_url,
            repo,
            policy,
            retries: Default::default(),
        })
    }

    fn repo_url(&self, rest: &str) -> String {
        format!(
            "{}/repos/{}/{}/{rest}",
            self.api_url, self.repo.owner, self.repo.name
        )
    }

    /// Send one call with retries; the JSON answer (null when empty) of a 2xx, else [`ApiError`].
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: &Body,
    ) -> Result<(StatusCode, Value)> {
        let path = url
            .split_once("://")
            .map(|(_, r)| r.find('/').map(|i| &r[i..]).unwrap_or("/"))
            .unwrap_or(url)
            .to_string();
        let mut attempt = 0u32;
        loop {
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .header(ACCEPT, MEDIA_TYPE)
                .header(HeaderName::from_static("x-github-api-version"), API_VERSION)
                .header(
                    USER_AGENT,
                    concat!("sf-summary/", env!("CARGO_PKG_VERSION")),
                );
            let payload: Vec<u8> = match body {
                Body::None => Vec::new(),
                Body::Json(v) => {
                    req = req.header(CONTENT_TYPE, "application/json");
                    serde_json::to_vec(v)?
                }
                Body::Bytes { content_type, data } => {
                    req = req.header(CONTENT_TYPE, content_type.as_str());
                    data.clone()
                }
            };
            let req = req
                .header(http::header::CONTENT_LENGTH, payload.len())
                .body(payload)
                .context("building a GitHub request")?;
            attempt += 1;
            let sent = self.octo.execute(req).await;
            let (status, headers, text) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let text = self.octo.body_to_string(resp).await.unwrap_or_default();
                    (status, headers, text)
                }
                Err(e) if attempt < self.policy.attempts => {
                    let wait = self.policy.backoff.saturating_mul(1 << attempt.min(10));
                    eprintln!(
                        "GitHub {method} {path}: {e}; retrying in {}",
                        humantime::format_duration(wait)
                    );
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => {
                    return Err(anyhow!(e).context(format!(
                        "GitHub {method} {path} failed after {attempt} tries"
                    )))
                }
            };
            let value: Value = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
            };
            if status.is_success() {
                return Ok((status, value));
            }
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(300).collect());
            if attempt < self.policy.attempts {
                if let Some(wait) = retry_wait(
                    status,
                    &headers,
                    &message,
                    attempt - 1,
                    &self.policy,
                    SystemTime::now(),
                ) {
                    if wait <= self.policy.max_wait {
                        eprintln!(
                            "GitHub {method} {path}: {status} ({message}); retrying in {}",
                            humantime::format_duration(wait)
                        );
                        self.retries
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            return Err(anyhow::Error::new(ApiError {
                status: status.as_u16(),
                method: method.to_string(),
                path,
                message,
            }));
        }
    }

    /// Post a completed check run on `sha`.
    pub async fn create_check_run(
        &self,
        name: &str,
        sha: &str,
        conclusion: &str,
        title: &str,
        summary: &str,
    ) -> Result<CheckRun> {
        let body = json!({
            "name": name,
            "head_sha": sha,
            "status": "completed",
            "conclusion": conclusion,
            "completed_at": sf_core::record::rfc3339(SystemTime::now()),
            "output": { "title": title, "summary": summary },
        });
        let (_, v) = self
            .call(
                Method::POST,
                &self.repo_url("check-runs"),
                &Body::Json(body),
            )
            .await
            .context("creating the check run")?;
        Ok(CheckRun {
            id: v["id"]
                .as_u64()
                .ok_or_else(|| anyhow!("GitHub's check run answer has no id"))?,
            html_url: v["html_url"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Create the release for `tag`, or update its notes; give it these assets.
    ///
    /// An asset the release already holds with the same bytes is left alone. A different one is
    /// replaced without a moment where a failure leaves the release without it: the new bytes
    /// go up under a temporary name, then the old asset is deleted and the new one renamed. A
    /// failed upload leaves the old asset in place.
    pub async fn upsert_release(
        &self,
        tag: &str,
        name: &str,
        notes: &str,
        target: Option<&str>,
        assets: &[(String, Vec<u8>)],
    ) -> Result<Release> {
        let by_tag = self.repo_url(&format!("releases/tags/{}", encode_segment(tag)));
        let existing = match self.call(Method::GET, &by_tag, &Body::None).await {
            Ok((_, v)) => Some(v),
            Err(e)
                if e.downcast_ref::<ApiError>()
                    .is_some_and(|a| a.status == 404) =>
            {
                None
            }
            Err(e) => return Err(e.context(format!("looking up the release {tag}"))),
        };
        let created = existing.is_none();
        let release = match existing {
            Some(v) => {
                let id = v["id"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("GitHub's release answer has no id"))?;
                let (_, updated) = self
                    .call(
                        Method::PATCH,
                        &self.repo_url(&format!("releases/{id}")),
                        &Body::Json(json!({ "name": name, "body": notes })),
                    )
                    .await
                    .with_context(|| format!("updating the release {tag}"))?;
                updated
            }
            None => {
                let mut body = json!({ "tag_name": tag, "name": name, "body": notes, "draft": false, "prerelease": false });
                if let Some(t) = target {
                    body["target_commitish"] = t.into();
                }
                let (_, v) = self
                    .call(Method::POST, &self.repo_url("releases"), &Body::Json(body))
                    .await
                    .with_context(|| format!("creating the release {tag}"))?;
                v
            }
        };
        let id = release["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("GitHub's release answer has no id"))?;
        let upload_url = release["upload_url"]
            .as_str()
            .ok_or_else(|| anyhow!("GitHub's release answer has no upload_url"))?;
        // `https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}`: a URI template.
        let upload_base = upload_url
            .split('{')
            .next()
            .unwrap_or(upload_url)
            .to_string();
        let present: Vec<Value> = release["assets"].as_array().cloned().unwrap_or_default();
        let find = |n: &str| {
            present
                .iter()
                .find(|a| a["name"].as_str() == Some(n))
                .and_then(|a| Some((a["id"].as_u64()?, a)))
        };
        let mut uploaded = Vec::new();
        let mut unchanged = Vec::new();
        for (asset_name, data) in assets {
            let old = find(asset_name);
            if old.is_some_and(|(_, a)| asset_holds(a, data)) {
                unchanged.push(asset_name.clone());
                continue;
            }
            let temp = format!("{asset_name}{UPLOAD_SUFFIX}");
            if let Some((left_id, _)) = find(&temp) {
                self.delete_asset(left_id).await.with_context(|| {
                    format!("removing {temp}, left on the release by an upload that did not finish")
                })?;
            }
            match old {
                None => {
                    self.upload_asset(&upload_base, asset_name, data)
                        .await
                        .with_context(|| format!("uploading the release asset {asset_name}"))?;
                }
                Some((old_id, _)) => {
                    let new = self
                        .upload_asset(&upload_base, &temp, data)
                        .await
                        .with_context(|| {
                            format!(
                                "uploading the new {asset_name} (as {temp}; the old asset is still in place)"
                            )
                        })?;
                    let new_id = new["id"]
                        .as_u64()
                        .ok_or_else(|| anyhow!("GitHub's upload answer for {temp} has no id"))?;
                    self.delete_asset(old_id).await.with_context(|| {
                        format!("removing the old {asset_name} (the new one is uploaded as {temp})")
                    })?;
                    self.call(
                        Method::PATCH,
                        &self.repo_url(&format!("releases/assets/{new_id}")),
                        &Body::Json(json!({ "name": asset_name })),
                    )
                    .await
                    .with_context(|| {
                        format!("renaming the release asset {temp} to {asset_name}")
                    })?;
                }
            }
            uploaded.push(asset_name.clone());
        }
        Ok(Release {
            id,
            html_url: release["html_url"].as_str().unwrap_or_default().to_string(),
            created,
            assets: uploaded,
            unchanged,
        })
    }

    /// Upload one release asset; GitHub's description of it.
    async fn upload_asset(&self, upload_base: &str, name: &str, data: &[u8]) -> Result<Value> {
        let url = format!("{upload_base}?name={}", encode_segment(name));
        let body = Body::Bytes {
            content_type: "application/octet-stream".into(),
            data: data.to_vec(),
        };
        Ok(self.call(Method::POST, &url, &body).await?.1)
    }

    /// Delete one release asset; one already gone is fine.
    async fn delete_asset(&self, asset_id: u64) -> Result<()> {
        let url = self.repo_url(&format!("releases/assets/{asset_id}"));
        match self.call(Method::DELETE, &url, &Body::None).await {
            Ok(_) => Ok(()),
            Err(e)
                if e.downcast_ref::<ApiError>()
                    .is_some_and(|a| a.status == 404) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Percent-encode one path segment or query value (RFC 3986 unreserved characters stay).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn waits_follow_what_github_asks() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_wait: Duration::from_secs(600),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            retry_wait(StatusCode::BAD_GATEWAY, &HeaderMap::new(), "", 2, &p, now),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            retry_wait(
                StatusCode::FORBIDDEN,
                &headers(&[("retry-after", "7")]),
                "",
                0,
                &p,
                now
            ),
            Some(Duration::from_secs(7))
        );
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1030"),
        ]);
        assert_eq!(
            retry_wait(StatusCode::FORBIDDEN, &h, "", 0, &p, now),
            Some(Duration::from_secs(31))
        );
        let m = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
        assert_eq!(
            retry_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), m, 0, &p, now),
            Some(Duration::from_secs(60))
        );
        // A plain 403 is a token without rights: no retry.
        assert_eq!(
            retry_wait(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "Resource not accessible by integration",
                0,
                &p,
                now
            ),
            None
        );
        assert_eq!(
            retry_wait(
                StatusCode::UNPROCESSABLE_ENTITY,
                &HeaderMap::new(),
                "",
                0,
                &p,
                now
            ),
            None
        );
    }

    #[test]
    fn an_asset_holds_bytes_only_with_the_same_size_and_digest_fully_uploaded() {
        let data = b"abc";
        let digest = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let asset = |state: &str, size: u64, digest: Value| json!({ "state": state, "size": size, "digest": digest });
        assert!(asset_holds(&asset("uploaded", 3, digest.into()), data));
        assert!(asset_holds(
            &asset(
                "uploaded",
                3,
                digest
                    .to_ascii_uppercase()
                    .replace("SHA256", "sha256")
                    .into()
            ),
            data
        ));
        assert!(!asset_holds(&asset("uploaded", 3, digest.into()), b"abd"));
        assert!(!asset_holds(&asset("uploaded", 4, digest.into()), data));
        assert!(!asset_holds(&asset("starter", 3, digest.into()), data));
        // No digest (an asset from before GitHub computed them): cannot tell, so replace it.
        assert!(!asset_holds(&asset("uploaded", 3, Value::Null), data));
    }

    #[test]
    fn slugs_and_segments() {
        assert_eq!(
            RepoSlug::parse("vantagecompute/slurm-factory")
                .unwrap()
                .name,
            "slurm-factory"
        );
        assert!(RepoSlug::parse("nope").is_err());
        assert!(RepoSlug::parse("a/b/c").is_err());
        assert_eq!(encode_segment("v1.0/rc 1"), "v1.0%2Frc%201");
    }
}
