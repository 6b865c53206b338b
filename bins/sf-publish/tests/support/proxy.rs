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

/// What becomes of a request a hook held ([`on_put`], [`on_request`]) once the hook has run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Send it on to the server as usual.
    Forward,
    /// Close the connection without forwarding it: the server never sees it.
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
    let faults = Arc::new(AtomicU64::new(0));
    let kinds = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let forms = Arc::new(Mutex::new(Vec::new()));
    let counter = AtomicU64::new(0);
    let (f, k, fm) = (faults.clone(), kinds.clone(), forms.clone());
    let url = listen(upstream, move |client, up| {
        let noted = Noted {
            faults: &f,
            kinds: &k,
            forms: &fm,
        };
        carry(
            client,
            up,
            faults_cfg.as_ref(),
            &noted,
            &counter,
            hook.as_ref(),
        )
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
    let Some(head) = read_head(&mut client, &mut buf) else {
        return;
    };
    let (head_end, len) = (head.end, head.body_len);
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
        read_until(&mut client, &mut buf, |b| b.len() >= head_end + len / 2);
        noted.fault(Fault::ResetMidBody);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    buf.reserve((head_end + len).saturating_sub(buf.len()));
    if !read_until(&mut client, &mut buf, |b| b.len() >= head_end + len) {
        return;
    }
    if head.is_form() {
        noted
            .forms
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&buf[head_end..]).into_owned());
    }
    let mut lose = false;
    if let Some(hook) = hook {
        match hook(&head.method, &head.target) {
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
    // Forward, relay the whole answer, close.
    let Some(resp) = forward(up, &head.text, &buf[head_end..]) else {
        return;
    };
    drop(buf);
    if lose || fault == Some(Fault::AnswerLost) {
        // Done upstream, but the client never hears of it.
        noted.fault(Fault::AnswerLost);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.write_all(&resp);
}

/// Listen on a loopback port and carry each connection on a thread of its own with `each`, given
/// the client and the upstream's `host:port`; the URL to send requests to.
pub fn listen(upstream: &str, each: impl Fn(TcpStream, &str) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up: Arc<str> = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .into();
    let each = Arc::new(each);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let (up, each) = (up.clone(), each.clone());
            std::thread::spawn(move || each(client, &up));
        }
    });
    url
}

/// A request's head, as read.
pub struct Head {
    /// Where it ends in what was read (past its blank line).
    pub end: usize,
    /// Its text, without the blank line.
    pub text: String,
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// What `content-length` says (0 without one).
    pub body_len: usize,
}

impl Head {
    /// A form-encoded request (STS calls).
    pub fn is_form(&self) -> bool {
        header_in(&self.headers, "content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    }
}

/// The value of a header (its name lower-cased) among lower-cased ones.
pub fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Read a request's head from `client` onto `buf` (what came of the body after it stays there);
/// `None` if the client went away first.
pub fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    if !read_until(client, buf, |b| end_of_head(b).is_some()) {
        return None;
    }
    let end = end_of_head(buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
    let headers: Vec<(String, String)> = text
        .split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut words = text.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    );
    let body_len = header_in(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Head {
        end,
        text,
        method,
        target,
        headers,
        body_len,
    })
}

/// Where the head of a request or an answer ends (past its blank line), once `buf` holds it.
pub fn end_of_head(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Read from `client` onto `buf` until `enough` says it holds enough; false if the client went
/// away first.
pub fn read_until(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    enough: impl Fn(&[u8]) -> bool,
) -> bool {
    let mut chunk = vec![0u8; 1 << 20];
    while !enough(buf) {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Send a request (its head without the blank line that ends it, then its body) to `up` with
/// `connection: close` in place of the client's, and read the whole answer; `None` if the server
/// could not be reached or written to.
pub fn forward(up: &str, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("connection: close");
    let mut server = TcpStream::connect(up).ok()?;
    server
        .write_all((lines.join("\r\n") + "\r\n\r\n").as_bytes())
        .and_then(|_| server.write_all(body))
        .ok()?;
    let mut resp = Vec::new();
    let _ = server.read_to_end(&mut resp);
    Some(resp)
}
