//! A loopback HTTP proxy in front of the local S3 server, written for the tests: it notes the
//! form-encoded requests it carries (STS calls, with their role session names) and, when asked,
//! fails one request in every `every`, each time in the next of these ways: answered `503
//! SlowDown` or `500 InternalError` (with S3's XML error body) without being forwarded, cut off
//! unanswered, reset halfway through its body, carried out by the server with its answer lost,
//! and (with a stall) held unanswered past the client's attempt timeout. Faults are spread out, so
//! a retry usually meets a request that goes through. One request per connection, so each one can
//! be hit. It can also hold a chosen request (a PUT by its number among PUTs, counted from 1,
//! and its path; any request by its method and target): the test's hook runs while that request
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

/// Runs on every request with its method and its target (path and query); `None` lets it pass.
pub type RequestHook = Arc<dyn Fn(&str, &str) -> Option<Then> + Send + Sync>;

/// The ways `faulty` fails a request, in the order it takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    SlowDown,
    InternalError,
    Dropped,
    ResetMidBody,
    AnswerLost,
    Stalled,
}

pub struct Proxy {
    pub url: String,
    /// Requests failed on purpose.
    pub faults: Arc<AtomicU64>,
    /// Requests failed on purpose, by how.
    pub kinds: Arc<Mutex<std::collections::BTreeMap<Fault, u64>>>,
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

    /// How many requests were failed each way.
    pub fn fault_kinds(&self) -> std::collections::BTreeMap<Fault, u64> {
        self.kinds.lock().unwrap().clone()
    }
}

/// Carry every request to `upstream` faithfully.
pub fn recording(upstream: &str) -> Proxy {
    start(upstream, None, None)
}

/// Carry every request, running `hook` on each PUT before it is forwarded.
pub fn on_put(upstream: &str, hook: PutHook) -> Proxy {
    let puts = AtomicU64::new(0);
    on_request(
        upstream,
        Arc::new(move |method: &str, target: &str| {
            if method != "PUT" {
                return None;
            }
            let path = target.split('?').next().unwrap_or_default();
            hook(puts.fetch_add(1, Ordering::SeqCst) + 1, path)
        }),
    )
}

/// Carry every request, running `hook` on each before it is forwarded.
pub fn on_request(upstream: &str, hook: RequestHook) -> Proxy {
    start(upstream, None, Some(hook))
}

/// Carry every request, but lose the answer to each `method` request whose target (path and
/// query) contains `target_part`: the server carries them out, the client hears of none.
pub fn lose_answers(upstream: &str, method: &str, target_part: &str) -> Proxy {
    let (method, part) = (method.to_string(), target_part.to_string());
    on_request(
        upstream,
        Arc::new(move |m: &str, target: &str| {
            (m == method && target.contains(&part)).then_some(Then::Lose)
        }),
    )
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

/// Fail one request in every `every` (see the module notes), never stalling.
pub fn faulty(upstream: &str, every: u64) -> Proxy {
    faulty_with_stall(upstream, every, None)
}

/// Fail one request in every `every`, one way after another; with `stall`, one of the ways is
/// holding the request that long without an answer.
pub fn faulty_with_stall(upstream: &str, every: u64, stall: Option<std::time::Duration>) -> Proxy {
    assert!(every >= 2, "leave room for requests that go through");
    let mut ways = vec![
        Fault::SlowDown,
        Fault::Dropped,
        Fault::InternalError,
        Fault::ResetMidBody,
        Fault::AnswerLost,
    ];
    if stall.is_some() {
        ways.push(Fault::Stalled);
    }
    start(
        upstream,
        Some(Faults {
            every,
            ways,
            stall: stall.unwrap_or_default(),
            reset_due: Arc::default(),
        }),
        None,
    )
}

/// What `faulty` does.
#[derive(Clone, Debug)]
struct Faults {
    every: u64,
    ways: Vec<Fault>,
    stall: std::time::Duration,
    /// A reset's turn came on a request without a body: the next one with a body gets it.
    reset_due: Arc<std::sync::atomic::AtomicBool>,
}

const SLOW_DOWN: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
const INTERNAL_ERROR: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>";

fn start(upstream: &str, faults_cfg: Option<Faults>, hook: Option<RequestHook>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let faults = Arc::new(AtomicU64::new(0));
    let kinds = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let forms = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let (f, k, fm) = (faults.clone(), kinds.clone(), forms.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let (up, f, k, fm, counter) = (
                up.clone(),
                f.clone(),
                k.clone(),
                fm.clone(),
                counter.clone(),
            );
            let (hook, cfg) = (hook.clone(), faults_cfg.clone());
            std::thread::spawn(move || {
                let noted = Noted {
                    faults: &f,
                    kinds: &k,
                    forms: &fm,
                };
                carry(client, &up, cfg.as_ref(), &noted, &counter, hook.as_ref())
            });
        }
    });
    Proxy {
        url,
        faults,
        kinds,
        forms,
    }
}

/// Where a connection's thread notes what it did.
struct Noted<'a> {
    faults: &'a AtomicU64,
    kinds: &'a Mutex<std::collections::BTreeMap<Fault, u64>>,
    forms: &'a Mutex<Vec<String>>,
}

impl Noted<'_> {
    fn fault(&self, how: Fault) {
        self.faults.fetch_add(1, Ordering::SeqCst);
        *self.kinds.lock().unwrap().entry(how).or_default() += 1;
    }
}

fn error_answer(status: &str, body: &[u8]) -> Vec<u8> {
    let mut a = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    a.extend_from_slice(body);
    a
}

fn carry(
    mut client: TcpStream,
    up: &str,
    cfg: Option<&Faults>,
    noted: &Noted,
    counter: &AtomicU64,
    hook: Option<&RequestHook>,
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
    let mut fault = cfg.and_then(|c| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        (n % c.every == c.every - 1).then(|| c.ways[(n / c.every) as usize % c.ways.len()])
    });
    if let Some(c) = cfg {
        if fault == Some(Fault::ResetMidBody) && len == 0 {
            c.reset_due.store(true, Ordering::SeqCst);
            fault = None;
        } else if fault.is_none() && len > 0 && c.reset_due.swap(false, Ordering::SeqCst) {
            fault = Some(Fault::ResetMidBody);
        }
    }
    if fault == Some(Fault::ResetMidBody) {
        // Take half the body, then reset: the client is cut off while it sends.
        while buf.len() < head_end + len / 2 {
            match client.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        noted.fault(Fault::ResetMidBody);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    buf.reserve((head_end + len).saturating_sub(buf.len()));
    while buf.len() < head_end + len {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if header("content-type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        noted
            .forms
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&buf[head_end..]).into_owned());
    }
    let mut lose = false;
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    if let Some(hook) = hook {
        match hook(method, target) {
            Some(Then::Drop) => {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            Some(Then::Lose) => lose = true,
            _ => {}
        }
    }
    match fault {
        Some(how @ Fault::SlowDown) => {
            noted.fault(how);
            let _ = client.write_all(&error_answer("503 Slow Down", SLOW_DOWN));
            return;
        }
        Some(how @ Fault::InternalError) => {
            noted.fault(how);
            let _ = client.write_all(&error_answer("500 Internal Server Error", INTERNAL_ERROR));
            return;
        }
        Some(how @ Fault::Dropped) => {
            noted.fault(how);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Some(how @ Fault::Stalled) => {
            noted.fault(how);
            std::thread::sleep(cfg.map(|c| c.stall).unwrap_or_default());
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        _ => {}
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
    if lose || fault == Some(Fault::AnswerLost) {
        // Done upstream, but the client never hears of it.
        noted.fault(Fault::AnswerLost);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.write_all(&resp);
}
