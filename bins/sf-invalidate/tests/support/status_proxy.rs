//! A loopback HTTP proxy in front of moto's CloudFront, written for the tests. Moto completes
//! every invalidation at once; CloudFront takes minutes. The proxy rewrites the `<Status>` of an
//! invalidation to `InProgress` in its first N GetInvalidation / ListInvalidations answers (and in
//! the CreateInvalidation answer while N > 0), so waiting for completion and for room under the
//! in-flight limits can be tested. It counts the calls it carries, and can answer a call kind
//! with CloudFront's AccessDenied error instead of forwarding it, from its first call or after
//! some went through, and answer CreateInvalidation calls with TooManyInvalidationsInProgress, as
//! CloudFront does when other jobs' invalidations filled the distribution's in-flight limits
//! (moto has no limits). Errors are CloudFront's wire format: the status code and an
//! `ErrorResponse` XML body.
//!
//! It also keeps CloudFront's caller references, which moto does not: a CreateInvalidation whose
//! caller reference an invalidation of the distribution already has is answered with that
//! invalidation (same paths) or InvalidationBatchAlreadyExists (other paths), instead of
//! creating another. One request per connection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    /// InProgress answers left per invalidation id.
    hold: HashMap<String, u64>,
    /// Held answers for ids the proxy has not seen before.
    default_hold: u64,
    /// GetInvalidation calls per id.
    gets: HashMap<String, u64>,
    lists: u64,
    creates: u64,
    /// Call kinds ("list", "get", "create") answered with AccessDenied, each after how many
    /// calls of that kind went through.
    denied: Vec<(&'static str, u64)>,
    /// CreateInvalidation calls still to answer with TooManyInvalidationsInProgress.
    too_many: u64,
}

pub struct StatusProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl StatusProxy {
    /// Forward to `upstream`, holding every newly seen invalidation for `default_hold` answers.
    pub fn start(upstream: &str, default_hold: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let state = Arc::new(Mutex::new(State {
            default_hold,
            ..State::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let (up, st) = (up.clone(), st.clone());
                std::thread::spawn(move || carry(client, &up, &st));
            }
        });
        StatusProxy { url, state }
    }

    /// Report `id` as InProgress in its next `n` answers.
    pub fn hold(&self, id: &str, n: u64) {
        self.state.lock().unwrap().hold.insert(id.to_string(), n);
    }

    /// Answer a call kind ("list", "get", "create") with AccessDenied.
    pub fn deny(&self, kind: &'static str) {
        self.deny_after(kind, 0);
    }

    /// Let the first `n` calls of a kind through, then answer it with AccessDenied.
    pub fn deny_after(&self, kind: &'static str, n: u64) {
        self.state.lock().unwrap().denied.push((kind, n));
    }

    /// Answer the next `n` CreateInvalidation calls with TooManyInvalidationsInProgress.
    pub fn too_many(&self, n: u64) {
        self.state.lock().unwrap().too_many = n;
    }

    /// GetInvalidation calls for `id`.
    pub fn gets(&self, id: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .gets
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub fn all_gets(&self) -> u64 {
        self.state.lock().unwrap().gets.values().sum()
    }

    pub fn lists(&self) -> u64 {
        self.state.lock().unwrap().lists
    }

    pub fn creates(&self) -> u64 {
        self.state.lock().unwrap().creates
    }
}

fn read_message(s: &mut TcpStream, until_eof: bool) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let mut body = buf[head_end..].to_vec();
    if until_eof {
        let _ = s.read_to_end(&mut body);
        if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            body = dechunk(&body);
        }
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body.len() < len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    }
    Some((head, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..p]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + size]);
        b = &b[p + 2 + size + 2..];
    }
    out
}

/// Head lines other than the ones the proxy sets itself.
fn head_lines(head: &str) -> Vec<&str> {
    head.trim_end()
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !(l.starts_with("connection:")
                || l.starts_with("content-length:")
                || l.starts_with("transfer-encoding:"))
        })
        .collect()
}

fn carry(mut client: TcpStream, up: &str, st: &Mutex<State>) {
    let Some((head, body)) = read_message(&mut client, false) else {
        return;
    };
    let first = head.lines().next().unwrap_or_default().to_string();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let on_invalidations =
        segs.len() >= 4 && segs[1] == "distribution" && segs[3] == "invalidation";
    let kind = match (method.as_str(), segs.len()) {
        _ if !on_invalidations => "other",
        ("GET", 4) => "list",
        ("GET", 5) => "get",
        ("POST", 4) => "create",
        _ => "other",
    };
    {
        let mut s = st.lock().unwrap();
        let seen = match kind {
            "list" => {
                s.lists += 1;
                s.lists
            }
            "get" => {
                *s.gets.entry(segs[4].to_string()).or_default() += 1;
                s.gets.values().sum()
            }
            "create" => {
                s.creates += 1;
                s.creates
            }
            _ => 0,
        };
        if s.denied.iter().any(|&(k, n)| k == kind && seen > n) {
            error_answer(
                &mut client,
                "403 Forbidden",
                "AccessDenied",
                "User is not authorized to perform this action",
            );
            return;
        }
        if kind == "create" && s.too_many > 0 {
            s.too_many -= 1;
            error_answer(
                &mut client,
                "400 Bad Request",
                "TooManyInvalidationsInProgress",
                "You have exceeded the maximum number of allowable InProgress invalidation batch requests, or invalidation objects.",
            );
            return;
        }
    }
    if kind == "create" {
        if let Some(existing) = same_reference(up, &head, segs[2], &body) {
            let answer = match existing {
                Existing::Same(get_body) => {
                    let xml = rewrite(&String::from_utf8_lossy(&get_body), kind, st);
                    format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{xml}",
                        xml.len()
                    )
                }
                Existing::Other => {
                    error_answer(
                        &mut client,
                        "409 Conflict",
                        "InvalidationBatchAlreadyExists",
                        "The caller reference you attempted to create the invalidation with is already in use by another invalidation batch.",
                    );
                    return;
                }
            };
            let _ = client.write_all(answer.as_bytes());
            return;
        }
    }
    let mut lines = head_lines(&head);
    let len = format!("content-length: {}", body.len());
    lines.push(&len);
    lines.push("connection: close");
    let Ok(mut server) = TcpStream::connect(up) else {
        return;
    };
    if server
        .write_all((lines.join("\r\n") + "\r\n\r\n").as_bytes())
        .and_then(|_| server.write_all(&body))
        .is_err()
    {
        return;
    }
    let Some((rhead, rbody)) = read_message(&mut server, true) else {
        return;
    };
    let rbody = if kind == "other" {
        rbody
    } else {
        rewrite(&String::from_utf8_lossy(&rbody), kind, st).into_bytes()
    };
    let mut lines = head_lines(&rhead);
    let len = format!("content-length: {}", rbody.len());
    lines.push(&len);
    lines.push("connection: close");
    let _ = client.write_all((lines.join("\r\n") + "\r\n\r\n").as_bytes());
    let _ = client.write_all(&rbody);
}

/// A caller reference the distribution already has.
enum Existing {
    /// With the same paths: moto's GetInvalidation answer for it.
    Same(Vec<u8>),
    /// With other paths.
    Other,
}

/// One call to moto with the head of the client's request (its credentials), another method and
/// path, and no body. Moto does not check signatures.
fn moto_call(up: &str, client_head: &str, method: &str, path: &str) -> Option<Vec<u8>> {
    let request_line = format!("{method} {path} HTTP/1.1");
    let mut lines = vec![request_line.as_str()];
    lines.extend(
        head_lines(client_head)
            .into_iter()
            .skip(1)
            .filter(|l| !l.to_ascii_lowercase().starts_with("content-type:")),
    );
    lines.push("content-length: 0");
    lines.push("connection: close");
    let mut server = TcpStream::connect(up).ok()?;
    server
        .write_all((lines.join("\r\n") + "\r\n\r\n").as_bytes())
        .ok()?;
    let (head, body) = read_message(&mut server, true)?;
    head.starts_with("HTTP/1.1 200").then_some(body)
}

/// The texts of every `<tag>` element, entities decoded.
fn texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(
            rest[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &rest[j + close.len()..];
    }
    out
}

/// What CloudFront does with a create whose caller reference the distribution already has.
fn same_reference(up: &str, head: &str, dist: &str, body: &[u8]) -> Option<Existing> {
    let body = String::from_utf8_lossy(body);
    let reference = texts(&body, "CallerReference").pop()?;
    let mut paths = texts(&body, "Path");
    paths.sort();
    let base = format!("/2020-05-31/distribution/{dist}/invalidation");
    let list = moto_call(up, head, "GET", &base)?;
    for id in texts(&String::from_utf8_lossy(&list), "Id") {
        let Some(got) = moto_call(up, head, "GET", &format!("{base}/{id}")) else {
            continue;
        };
        let xml = String::from_utf8_lossy(&got);
        if texts(&xml, "CallerReference").pop().as_deref() != Some(reference.as_str()) {
            continue;
        }
        let mut theirs = texts(&xml, "Path");
        theirs.sort();
        return Some(if theirs == paths {
            Existing::Same(got)
        } else {
            Existing::Other
        });
    }
    None
}

/// A CloudFront error answer.
fn error_answer(client: &mut TcpStream, status: &str, code: &str, message: &str) {
    let body = format!("<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy</RequestId></ErrorResponse>");
    let _ = client.write_all(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// Each `<Id>` is followed (before the next `<Id>`) by its invalidation's `<Status>`.
fn rewrite(xml: &str, kind: &str, st: &Mutex<State>) -> String {
    let mut s = st.lock().unwrap();
    let default = s.default_hold;
    let mut out = String::with_capacity(xml.len() + 64);
    let mut rest = xml;
    while let Some(i) = rest.find("<Id>") {
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        let Some(j) = rest.find("</Id>") else { break };
        let id = rest[..j].to_string();
        let next_id = rest[j..].find("<Id>").map_or(rest.len(), |k| j + k);
        let left = *s.hold.entry(id.clone()).or_insert(default);
        if left > 0 {
            if let Some(a) = rest[..next_id].find("<Status>") {
                if let Some(b) = rest[a..next_id].find("</Status>") {
                    out.push_str(&rest[..a]);
                    out.push_str("<Status>InProgress</Status>");
                    rest = &rest[a + b + "</Status>".len()..];
                    if kind != "create" {
                        *s.hold.get_mut(&id).expect("inserted above") -= 1;
                    }
                    continue;
                }
            }
        }
    }
    out.push_str(rest);
    out
}
