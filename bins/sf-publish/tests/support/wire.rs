//! A loopback HTTP proxy in front of the local S3 server (and its STS), written for the tests, to
//! see and shape single requests on the wire: it records every request's head (and form bodies),
//! lets a rule answer a request itself instead of forwarding it, and lets a hook see and change the
//! server's answer body. One request per connection: it forwards with `connection: close`.
//! It reads and forwards requests as `support/proxy.rs` does, so a test binary that has this
//! module has that one too, as `mod proxy`.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use super::proxy::{end_of_head, forward, header_in, listen, read_head, read_until};

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
        header_in(&self.headers, name)
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
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let url = listen(upstream, move |client, up| {
        carry(client, up, &s, &rule, rewrite.as_ref())
    });
    Wire { url, seen }
}

/// Carry everything as it is, recording it.
pub fn recording(upstream: &str) -> Wire {
    start(upstream, Arc::new(|_| Answer::Forward), None)
}

fn carry(
    mut client: TcpStream,
    up: &str,
    seen: &Mutex<Vec<Seen>>,
    rule: &Rule,
    rewrite: Option<&Rewrite>,
) {
    let mut buf = Vec::new();
    let Some(head) = read_head(&mut client, &mut buf) else {
        return;
    };
    if !read_until(&mut client, &mut buf, |b| {
        b.len() >= head.end + head.body_len
    }) {
        return;
    }
    let body = &buf[head.end..];
    let form = if head.is_form() {
        String::from_utf8_lossy(body).into_owned()
    } else {
        String::new()
    };
    let req = Seen {
        method: head.method,
        target: head.target,
        headers: head.headers,
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
    let Some(resp) = forward(up, &head.text, body) else {
        return;
    };
    let Some(rewrite) = rewrite else {
        let _ = client.write_all(&resp);
        return;
    };
    // The answer's body handed to the hook; a changed body gets its length set again. (The local
    // server answers STS calls, the ones changed here, with a content-length, not chunked.)
    let Some(end) = end_of_head(&resp) else {
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
