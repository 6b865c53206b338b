//! A loopback HTTP proxy in front of the local S3 server (and its STS), written for the tests, to
//! see and shape single requests on the wire: it records every request's head (and form bodies),
//! lets a rule answer a request itself instead of forwarding it, and lets a hook see and change the
//! server's answer body. One request per connection: it forwards with `connection: close`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request as it went by.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body of a form-encoded request (STS calls), else empty.
    pub form: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// What the proxy does with a request: carry it, or answer it itself (status line reason, body).
pub enum Answer {
    Forward,
    Respond(u16, &'static str, String),
}

pub type Rule = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;
/// Sees each forwarded request and the server's answer body, returns the body to hand on.
pub type Rewrite = Arc<dyn Fn(&Seen, Vec<u8>) -> Vec<u8> + Send + Sync>;

pub struct Wire {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Wire {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn start(upstream: &str, rule: Rule, rewrite: Option<Rewrite>) -> Wire {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let (up, s, rule, rewrite) = (up.clone(), s.clone(), rule.clone(), rewrite.clone());
            std::thread::spawn(move || carry(client, &up, &s, &rule, rewrite.as_ref()));
        }
    });
    Wire { url, seen }
}

/// Carry everything as it is, recording it.
pub fn recording(upstream: &str) -> Wire {
    start(upstream, Arc::new(|_| Answer::Forward), None)
}

fn split_head(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn headers_of(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

fn carry(
    mut client: TcpStream,
    up: &str,
    seen: &Mutex<Vec<Seen>>,
    rule: &Rule,
    rewrite: Option<&Rewrite>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let head_end = loop {
        if let Some(p) = split_head(&buf) {
            break p;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let headers = headers_of(&head);
    let first = head.lines().next().unwrap_or_default().to_string();
    let mut words = first.split(' ');
    let (method, target) = (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    );
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let form = if headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/x-www-form-urlencoded"))
    {
        String::from_utf8_lossy(&buf[head_end..]).into_owned()
    } else {
        String::new()
    };
    let req = Seen {
        method,
        target,
        headers,
        form,
    };
    seen.lock().unwrap().push(req.clone());
    if let Answer::Respond(code, reason, body) = rule(&req) {
        let _ = write!(
            client,
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("connection: close");
    let Ok(mut server) = TcpStream::connect(up) else {
        return;
    };
    if server
        .write_all((lines.join("\r\n") + "\r\n\r\n").as_bytes())
        .and_then(|_| server.write_all(&buf[head_end..]))
        .is_err()
    {
        return;
    }
    let mut resp = Vec::new();
    let _ = server.read_to_end(&mut resp);
    let Some(rewrite) = rewrite else {
        let _ = client.write_all(&resp);
        return;
    };
    // The answer's body handed to the hook; a changed body gets its length set again. (The local
    // server answers STS calls, the ones changed here, with a content-length, not chunked.)
    let Some(end) = split_head(&resp) else {
        let _ = client.write_all(&resp);
        return;
    };
    let rhead = String::from_utf8_lossy(&resp[..end - 4]).into_owned();
    let body = rewrite(&req, resp[end..].to_vec());
    if body == resp[end..] {
        // Untouched: relayed byte for byte (some answers are chunked).
        let _ = client.write_all(&resp);
        return;
    }
    let mut out: Vec<String> = rhead
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(str::to_string)
        .collect();
    out.push(format!("content-length: {}", body.len()));
    let _ = client.write_all((out.join("\r\n") + "\r\n\r\n").as_bytes());
    let _ = client.write_all(&body);
}
