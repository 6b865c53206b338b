//! The runner's OIDC token endpoint, written for the tests: it speaks the wire format of
//! `ACTIONS_ID_TOKEN_REQUEST_URL` (a GET with `Authorization: Bearer <request token>` and
//! `&audience=...`, answered with `{"value": "<jwt>"}`). Shared by sf-aws's tests and the tests of
//! the binaries that use sf-aws.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const REQUEST_TOKEN: &str = "request-token-for-the-test";

/// The runner's token endpoint: checks the bearer token and the audience, counts requests and
/// hands out a new JWT-shaped token each time (all of them kept, to look for them in logs).
pub struct TokenEndpoint {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    pub issued: Arc<Mutex<Vec<String>>>,
}

impl TokenEndpoint {
    /// `status` is what every request gets when the bearer token and audience are right.
    pub fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/_apis/distributedtask/idtoken?api-version=2.0",
            listener.local_addr().unwrap()
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let (r, i) = (requests.clone(), issued.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = v.trim().to_string();
                        }
                    }
                }
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                let authorised = auth == format!("Bearer {REQUEST_TOKEN}")
                    && line.starts_with("GET ")
                    && target.starts_with("/_apis/distributedtask/idtoken?api-version=2.0&")
                    && target.ends_with("&audience=sts.amazonaws.com");
                let (code, body) = if !authorised {
                    (400, r#"{"message":"bad request"}"#.to_string())
                } else if status != 200 {
                    (status, r#"{"message":"denied"}"#.to_string())
                } else {
                    let token = format!(
                        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyZXBvOnNsdXJtIiwibiI6{n}fQ.c2lnbmF0dXJl{n:04}"
                    );
                    i.lock().unwrap().push(token.clone());
                    (200, format!(r#"{{"count":1,"value":"{token}"}}"#))
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenEndpoint {
            url,
            requests,
            issued,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
