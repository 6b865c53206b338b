//! A loopback HTTP proxy in front of the local S3 server, written for the tests: it notes the
//! form-encoded requests it carries (STS calls, with their role session names) and, when asked,
//! fails a share of requests: of every `every`, one is answered 503 Slow Down without being
//! forwarded, one is cut off unanswered, and one is carried out by the server but its answer is
//! lost. One request per connection, so each one can be hit. It can also hold a chosen PUT (by
//! its number among PUTs, counted from 1, and its path): the test's hook runs while that request
//! waits (to kill the publisher there, or to let another writer in first) and decides whether it
//! goes on to the server, and whether its answer comes back.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What becomes of a held PUT once the hook has run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    Forward,
    Drop,
    /// Forward it, let the server carry it out, then cut the answer off (a lost answer).
    Lose,
}

/// Runs on every PUT with its number (from 1) and its path; `None` lets it pass.
pub type PutHook = Arc<dyn Fn(u64, &str) -> Option<Then> + Send + Sync>;

pub struct Proxy {
    pub url: String,
    /// Requests failed on purpose.
    pub faults: Arc<AtomicU64>,
    /// Bodies of the form-encoded requests carried (`Action=AssumeRoleWithWebIdentity&...`).
    pub forms: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }

    pub fn forms(&self) -> Vec<String> {
        self.forms.lock().unwrap().clone()
    }
}

/// Carry every request to `upstream` faithfully.
pub fn recording(upstream: &str) -> Proxy {
    start(upstream, None, None)
}

/// Carry every request, running `hook` on each PUT before it is forwarded.
pub fn on_put(upstream: &str, hook: PutHook) -> Proxy {
    start(upstream, None, Some(hook))
}

/// Carry every request, but lose the answer to the `nth` PUT (from 1) whose path contains
/// `path_part`: the server carries it out, the client never hears of it.
pub fn lose_answer(upstream: &str, nth: u64, path_part: &str) -> Proxy {
    let (seen, part) = (Arc::new(AtomicU64::new(0)), path_part.to_string());
    on_put(
        upstream,
        Arc::new(move |_, target: &str| {
            (target.contains(&part) && seen.fetch_add(1, Ordering::SeqCst) + 1 == nth)
                .then_some(Then::Lose)
        }),
    )
}

/// Fail a share of requests (see the module notes).
pub fn faulty(upstream: &str, every: u64) -> Proxy {
    assert!(every >= 4, "leave room for requests that go through");
    start(upstream, Some(every), None)
}

fn start(upstream: &str, every: Option<u64>, hook: Option<PutHook>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let faults = Arc::new(AtomicU64::new(0));
    let forms = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let puts = Arc::new(AtomicU64::new(0));
    let (f, fm) = (faults.clone(), forms.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let (up, f, fm, counter) = (up.clone(), f.clone(), fm.clone(), counter.clone());
            let (hook, puts) = (hook.clone(), puts.clone());
            std::thread::spawn(move || {
                carry(client, &up, every, &f, &fm, &counter, hook.as_ref(), &puts)
            });
        }
    });
    Proxy { url, faults, forms }
}

#[allow(clippy::too_many_arguments)]
fn carry(
    mut client: TcpStream,
    up: &str,
    every: Option<u64>,
    faults: &AtomicU64,
    forms: &Mutex<Vec<String>>,
    counter: &AtomicU64,
    hook: Option<&PutHook>,
    puts: &AtomicU64,
) {
    // Read the request head and body.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    buf.reserve((head_end + len).saturating_sub(buf.len()));
    while buf.len() < head_end + len {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if header("content-type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        forms
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&buf[head_end..]).into_owned());
    }
    let mut lose = false;
    if let (Some(hook), Some(target)) = (hook, head.strip_prefix("PUT ")) {
        let n = puts.fetch_add(1, Ordering::SeqCst) + 1;
        let target = target.split([' ', '?']).next().unwrap_or_default();
        match hook(n, target) {
            Some(Then::Drop) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Then::Lose) => lose = true,
            _ => {}
        }
    }
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let slot = every.map(|e| (n % e, e));
    if let Some((s, e)) = slot {
        if s == e - 1 {
            faults.fetch_add(1, Ordering::SeqCst);
            let _ = client.write_all(
                b"HTTP/1.1 503 Slow Down\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        if s == e - 2 {
            faults.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
    // Forward with `connection: close`, relay the whole answer, close.
    let mut lines: Vec<&str> = head[..head.len() - 4]
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
    drop(buf);
    let mut resp = Vec::new();
    let _ = server.read_to_end(&mut resp);
    if lose {
        faults.fetch_add(1, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    if let Some((s, e)) = slot {
        if s == e - 3 {
            // Done upstream, but the client never hears of it.
            faults.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = client.write_all(&resp);
}
