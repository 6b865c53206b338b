//! A local server that speaks GitHub's REST API wire format for the calls sf-summary makes:
//! it checks method, path, headers and JSON bodies the way GitHub documents them, answers with
//! GitHub's response shapes, and can answer the first call with a secondary rate limit.
//! Release assets carry GitHub's `digest` (`sha256:<hex>`), can be renamed, and uploads can be
//! made to fail the way GitHub's do: a 502 that leaves a half-made asset in `starter` state,
//! whose name then answers `already_exists` until it is deleted.
//! Every request it saw, and every rule a request broke, is kept for the test to assert on.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

pub const TOKEN: &str = "ghs_testtoken0123456789abcdefABCDEF";
pub const OWNER: &str = "vantagecompute";
pub const REPO: &str = "slurm-factory";

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-case names; repeated headers keep every value.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What the fake repository holds.
#[derive(Default)]
pub struct State {
    pub requests: Vec<Request>,
    pub violations: Vec<String>,
    /// Answer the first N requests with a 403 secondary rate limit.
    pub rate_limit_first: usize,
    /// Answer these many (later) requests with 502.
    pub bad_gateway: usize,
    /// Answer every request with 403 "Resource not accessible by integration".
    pub no_rights: bool,
    /// Describe assets without `digest`, as GitHub does for assets uploaded before it computed
    /// them (and older GitHub Enterprise Server).
    pub no_digests: bool,
    /// Every asset upload fails: a 502 after a `starter` asset of that name was made.
    pub failing_uploads: bool,
    pub check_runs: Vec<Value>,
    pub releases: Vec<Value>,
    pub assets: BTreeMap<u64, Vec<u8>>,
    next_id: u64,
}

pub struct FakeGitHub {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeGitHub {
    pub fn start(setup: impl FnOnce(&mut State)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut st = State {
            next_id: 1000,
            ..Default::default()
        };
        setup(&mut st);
        let state = Arc::new(Mutex::new(st));
        let (s, u) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, u) = (s.clone(), u.clone());
                std::thread::spawn(move || serve(conn, &s, &u));
            }
        });
        FakeGitHub { url, state }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
}

fn serve(conn: TcpStream, state: &Arc<Mutex<State>>, base: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    // One request per connection; the answer says `Connection: close`.
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body).unwrap();
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let req = Request {
        method,
        target,
        headers,
        body,
    };
    let (status, extra, answer) = {
        let mut st = state.lock().unwrap();
        st.requests.push(req.clone());
        respond(&mut st, &req, base)
    };
    let text = match &answer {
        Value::Null => String::new(),
        v => v.to_string(),
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        502 => "Bad Gateway",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nX-GitHub-Media-Type: github.v3; format=json\r\n");
    if status != 204 {
        out.push_str(&format!(
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
            text.len()
        ));
    }
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&text);
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

fn error(message: &str, doc: &str) -> Value {
    json!({ "message": message, "documentation_url": doc })
}

fn user() -> Value {
    json!({ "login": "github-actions[bot]", "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=", "type": "Bot", "site_admin": false })
}

type Answer = (u16, Vec<(&'static str, String)>, Value);

fn respond(st: &mut State, req: &Request, base: &str) -> Answer {
    // Headers every REST call must carry.
    let auth = req.header("authorization");
    if auth != [format!("Bearer {TOKEN}")] && auth != [format!("token {TOKEN}")] {
        st.violations.push(format!(
            "{} {}: Authorization {:?}",
            req.method, req.target, auth
        ));
        return (
            401,
            vec![],
            error("Bad credentials", "https://docs.github.com/rest"),
        );
    }
    if req.header("accept") != ["application/vnd.github+json"] {
        st.violations.push(format!(
            "{} {}: Accept {:?}",
            req.method,
            req.target,
            req.header("accept")
        ));
    }
    if req.header("x-github-api-version") != ["2022-11-28"] {
        st.violations.push(format!(
            "{} {}: X-GitHub-Api-Version {:?}",
            req.method,
            req.target,
            req.header("x-github-api-version")
        ));
    }
    let ua = req.header("user-agent");
    if ua.is_empty() || !ua.iter().any(|v| v.starts_with("sf-summary/")) {
        st.violations.push(format!(
            "{} {}: User-Agent {:?}",
            req.method, req.target, ua
        ));
        return (403, vec![], error("Request forbidden by administrative rules. Please make sure your request has a User-Agent header", "https://docs.github.com/rest"));
    }
    if st.no_rights {
        return (
            403,
            vec![],
            error(
                "Resource not accessible by integration",
                "https://docs.github.com/rest/checks/runs#create-a-check-run",
            ),
        );
    }
    if st.rate_limit_first > 0 {
        st.rate_limit_first -= 1;
        return (
            403,
            vec![("retry-after", "1".into()), ("x-ratelimit-limit", "5000".into()), ("x-ratelimit-remaining", "4990".into())],
            error(
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.",
                "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            ),
        );
    }
    if st.bad_gateway > 0 {
        st.bad_gateway -= 1;
        return (502, vec![], error("Server Error", ""));
    }
    let json_body = || -> Option<Value> {
        if req
            .header("content-type")
            .first()
            .is_none_or(|c| !c.starts_with("application/json"))
        {
            return None;
        }
        serde_json::from_slice(&req.body).ok()
    };
    let repo = format!("/repos/{OWNER}/{REPO}");
    let api_repo = format!("{base}{repo}");
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    st.next_id += 1;
    let id = st.next_id;

    if req.method == "POST" && path == format!("{repo}/check-runs") {
        let Some(b) = json_body() else {
            st.violations.push("check run body is not JSON".into());
            return (400, vec![], error("Problems parsing JSON", ""));
        };
        let mut problems = Vec::new();
        if !b["name"].is_string() {
            problems.push("name is required");
        }
        if b["head_sha"].as_str().is_none_or(|s| s.len() != 40) {
            problems.push("head_sha must be a commit sha");
        }
        let status = b["status"].as_str().unwrap_or("queued");
        if ![
            "queued",
            "in_progress",
            "completed",
            "waiting",
            "requested",
            "pending",
        ]
        .contains(&status)
        {
            problems.push("status is not valid");
        }
        let conclusions = [
            "action_required",
            "cancelled",
            "failure",
            "neutral",
            "success",
            "skipped",
            "stale",
            "timed_out",
        ];
        if status == "completed"
            && !b["conclusion"]
                .as_str()
                .is_some_and(|c| conclusions.contains(&c))
        {
            problems.push("conclusion is required when status is completed");
        }
        if let Some(o) = b.get("output") {
            if !o["title"].is_string() || !o["summary"].is_string() {
                problems.push("output needs title and summary");
            }
            if o["summary"]
                .as_str()
                .is_some_and(|s| s.chars().count() > 65535)
            {
                problems.push("output.summary is over 65535 characters");
            }
        }
        if !problems.is_empty() {
            st.violations
                .extend(problems.iter().map(|p| format!("check run: {p}")));
            return (
                422,
                vec![],
                json!({ "message": "Validation Failed", "errors": problems, "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run" }),
            );
        }
        let run = json!({
            "id": id, "head_sha": b["head_sha"], "node_id": "CR_kwDO", "external_id": "",
            "url": format!("{api_repo}/check-runs/{id}"),
            "html_url": format!("https://github.com/{OWNER}/{REPO}/runs/{id}"),
            "details_url": "", "status": status, "conclusion": b["conclusion"],
            "started_at": "2026-11-21T10:00:00Z", "completed_at": b["completed_at"],
            "output": { "title": b["output"]["title"], "summary": b["output"]["summary"], "text": null, "annotations_count": 0,
                        "annotations_url": format!("{api_repo}/check-runs/{id}/annotations") },
            "name": b["name"], "check_suite": { "id": 5 }, "app": { "id": 15368, "slug": "github-actions", "name": "GitHub Actions" },
            "pull_requests": []
        });
        st.check_runs.push(b);
        return (
            201,
            vec![("location", format!("{api_repo}/check-runs/{id}"))],
            run,
        );
    }

    let release_json = |r: &Value, assets: Vec<Value>| -> Value {
        let rid = r["id"].as_u64().unwrap();
        json!({
            "url": format!("{api_repo}/releases/{rid}"),
            "html_url": format!("https://github.com/{OWNER}/{REPO}/releases/tag/{}", r["tag_name"].as_str().unwrap()),
            "assets_url": format!("{api_repo}/releases/{rid}/assets"),
            // GitHub Enterprise Server's shape: uploads on the API host under /api/uploads.
            "upload_url": format!("{base}/api/uploads{repo}/releases/{rid}/assets{{?name,label}}"),
            "tarball_url": null, "zipball_url": null,
            "id": rid, "node_id": "RE_kwDO", "tag_name": r["tag_name"], "target_commitish": "main",
            "name": r["name"], "body": r["body"], "draft": false, "prerelease": false,
            "created_at": "2026-11-21T10:00:00Z", "published_at": "2026-11-21T10:00:00Z",
            "author": user(), "assets": assets
        })
    };
    let assets_of = |st: &State, rid: u64| -> Vec<Value> {
        st.releases
            .iter()
            .find(|r| r["id"] == rid)
            .and_then(|r| r["assets"].as_array().cloned())
            .unwrap_or_default()
    };

    if req.method == "GET" {
        if let Some(tag) = path.strip_prefix(&format!("{repo}/releases/tags/")) {
            return match st.releases.iter().find(|r| r["tag_name"] == tag).cloned() {
                Some(r) => {
                    let a = assets_of(st, r["id"].as_u64().unwrap());
                    (200, vec![], release_json(&r, a))
                }
                None => (
                    404,
                    vec![],
                    json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/releases/releases#get-a-release-by-tag-name", "status": "404"}),
                ),
            };
        }
    }
    if req.method == "POST" && path == format!("{repo}/releases") {
        let Some(b) = json_body() else {
            st.violations.push("release body is not JSON".into());
            return (400, vec![], error("Problems parsing JSON", ""));
        };
        if !b["tag_name"].is_string() {
            st.violations.push("release without tag_name".into());
            return (422, vec![], error("Validation Failed", ""));
        }
        if b["body"]
            .as_str()
            .is_some_and(|s| s.chars().count() > 125_000)
        {
            st.violations
                .push("release body over 125000 characters".into());
            return (422, vec![], error("Validation Failed", ""));
        }
        let r = json!({ "id": id, "tag_name": b["tag_name"], "name": b["name"], "body": b["body"], "assets": [] });
        st.releases.push(r.clone());
        return (201, vec![], release_json(&r, vec![]));
    }
    if req.method == "PATCH" {
        if let Some(rid) = path
            .strip_prefix(&format!("{repo}/releases/"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            let Some(b) = json_body() else {
                st.violations.push("release update body is not JSON".into());
                return (400, vec![], error("Problems parsing JSON", ""));
            };
            let Some(r) = st.releases.iter_mut().find(|r| r["id"] == rid) else {
                return (404, vec![], error("Not Found", ""));
            };
            for k in ["name", "body"] {
                if let Some(v) = b.get(k) {
                    r[k] = v.clone();
                }
            }
            let r = r.clone();
            let a = assets_of(st, rid);
            return (200, vec![], release_json(&r, a));
        }
    }
    if req.method == "PATCH" {
        // Update a release asset: name, label and state may change.
        if let Some(aid) = path
            .strip_prefix(&format!("{repo}/releases/assets/"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            let Some(b) = json_body() else {
                st.violations
                    .push("release asset update body is not JSON".into());
                return (400, vec![], error("Problems parsing JSON", ""));
            };
            let unknown: Vec<&String> = b
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| !["name", "label", "state"].contains(&k.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            if !unknown.is_empty() {
                st.violations.push(format!(
                    "release asset update with unknown fields {unknown:?}"
                ));
            }
            let Some(r) = st.releases.iter_mut().find(|r| {
                r["assets"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|a| a["id"] == aid))
            }) else {
                return (
                    404,
                    vec![],
                    error(
                        "Not Found",
                        "https://docs.github.com/rest/releases/assets#update-a-release-asset",
                    ),
                );
            };
            let tag = r["tag_name"].as_str().unwrap().to_string();
            let list = r["assets"].as_array_mut().unwrap();
            if let Some(name) = b.get("name") {
                let Some(name) = name.as_str().filter(|n| !n.is_empty()) else {
                    st.violations
                        .push("release asset renamed to a non-string".into());
                    return (422, vec![], error("Validation Failed", ""));
                };
                if list.iter().any(|a| a["name"] == name && a["id"] != aid) {
                    return (
                        422,
                        vec![],
                        json!({"message": "Validation Failed", "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}]}),
                    );
                }
            }
            let a = list.iter_mut().find(|a| a["id"] == aid).unwrap();
            for k in ["name", "label", "state"] {
                if let Some(v) = b.get(k) {
                    a[k] = v.clone();
                }
            }
            a["browser_download_url"] = format!(
                "https://github.com/{OWNER}/{REPO}/releases/download/{tag}/{}",
                a["name"].as_str().unwrap()
            )
            .into();
            a["updated_at"] = "2026-11-21T10:05:00Z".into();
            return (200, vec![], a.clone());
        }
    }
    if req.method == "DELETE" {
        if let Some(aid) = path
            .strip_prefix(&format!("{repo}/releases/assets/"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            let mut found = false;
            for r in st.releases.iter_mut() {
                if let Some(list) = r["assets"].as_array_mut() {
                    let before = list.len();
                    list.retain(|a| a["id"] != aid);
                    found |= list.len() != before;
                }
            }
            st.assets.remove(&aid);
            return if found {
                (204, vec![], Value::Null)
            } else {
                (404, vec![], error("Not Found", ""))
            };
        }
    }
    if req.method == "POST" {
        if let Some(rest) = path.strip_prefix(&format!("/api/uploads{repo}/releases/")) {
            let rid: u64 = rest.trim_end_matches("/assets").parse().unwrap_or(0);
            let name = query
                .strip_prefix("name=")
                .map(|n| n.split('&').next().unwrap().to_string());
            let Some(name) = name else {
                st.violations.push("upload without ?name=".into());
                return (422, vec![], error("Validation Failed", ""));
            };
            if req.header("content-type") != ["application/octet-stream"] {
                st.violations.push(format!(
                    "upload Content-Type {:?}",
                    req.header("content-type")
                ));
            }
            if req.body.is_empty() {
                st.violations.push("upload with an empty body".into());
            }
            let Some(r) = st.releases.iter_mut().find(|r| r["id"] == rid) else {
                return (404, vec![], error("Not Found", ""));
            };
            let tag = r["tag_name"].as_str().unwrap().to_string();
            let list = r["assets"].as_array_mut().unwrap();
            if list.iter().any(|a| a["name"] == name.as_str()) {
                return (
                    422,
                    vec![],
                    json!({"message": "Validation Failed", "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}]}),
                );
            }
            let failing = st.failing_uploads;
            let digest = if failing || st.no_digests {
                Value::Null
            } else {
                use sha2::Digest;
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(&req.body))).into()
            };
            let (state, size) = if failing {
                ("starter", 0)
            } else {
                ("uploaded", req.body.len())
            };
            let asset = json!({
                "url": format!("{api_repo}/releases/assets/{id}"),
                "browser_download_url": format!("https://github.com/{OWNER}/{REPO}/releases/download/{tag}/{name}"),
                "id": id, "node_id": "RA_kwDO", "name": name, "label": "", "state": state,
                "content_type": "application/octet-stream", "size": size, "digest": digest, "download_count": 0,
                "created_at": "2026-11-21T10:00:00Z", "updated_at": "2026-11-21T10:00:00Z", "uploader": user()
            });
            list.push(asset.clone());
            if failing {
                return (502, vec![], error("Server Error", ""));
            }
            st.assets.insert(id, req.body.clone());
            return (201, vec![], asset);
        }
    }
    st.violations
        .push(format!("unexpected call {} {}", req.method, req.target));
    (
        404,
        vec![],
        error("Not Found", "https://docs.github.com/rest"),
    )
}
