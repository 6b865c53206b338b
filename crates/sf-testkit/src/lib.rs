//! What the tests share: the project's fixtures, the local servers `scripts/test.sh` starts, and a
//! parser for the runner's file commands written the way GitHub's runner reads them.
//!
//! Configuration comes from variables the test command exports; nothing here changes the
//! process environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// A fixture folder under `tests/fixtures/` (real Spack-written caches).
pub fn fixture(name: &str) -> PathBuf {
    let p = repo_root().join("tests/fixtures").join(name);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// The moto server (S3, STS, CloudFront) started by `scripts/test.sh`.
pub fn moto_url() -> String {
    std::env::var("SF_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!("SF_TEST_MOTO_URL is not set: run the suite with `scripts/test.sh`, which starts a moto server on 127.0.0.1")
    })
}

/// The Docker engine (`DOCKER_HOST` value) started by `scripts/test.sh`.
pub fn docker_host() -> String {
    std::env::var("SF_TEST_DOCKER_HOST").unwrap_or_else(|_| {
        panic!("SF_TEST_DOCKER_HOST is not set: run the suite with `scripts/test.sh`, which starts dockerd with vfs storage")
    })
}

/// Whether a command is on PATH (for a clear failure message, never to skip a test).
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: `scripts/test.sh` installs it (scripts/deps/)")
        })
}

/// Run a command whose stdout is a pipe nobody reads any more: the read end is closed before the
/// process starts, so its first write fails (EPIPE), as in `sf-matrix | head` once head has left.
/// Returns the exit status and what it wrote to stderr.
pub fn run_with_closed_stdout(
    cmd: &mut std::process::Command,
) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = cmd
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the command");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parse `GITHUB_OUTPUT`/`GITHUB_ENV` content the way the runner does: `name=value` lines and
/// `name<<DELIM` ... `DELIM` blocks. Panics on anything the runner would reject.
pub fn parse_file_commands(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let (k, v) = line.split_at(e);
                assert!(!k.is_empty(), "empty name in {line:?}");
                out.insert(k.to_string(), v[1..].to_string());
            }
            (_, Some(h)) => {
                let name = &line[..h];
                let delim = &line[h + 2..];
                assert!(
                    !name.is_empty() && !delim.is_empty(),
                    "bad heredoc header {line:?}"
                );
                let mut value = Vec::new();
                loop {
                    let l = lines
                        .next()
                        .unwrap_or_else(|| panic!("delimiter {delim} for {name} never closes"));
                    let l = l.strip_suffix('\r').unwrap_or(l);
                    if l == delim {
                        break;
                    }
                    value.push(l);
                }
                out.insert(name.to_string(), value.join("\n"));
            }
            _ => panic!("invalid file-command line {line:?}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let m = parse_file_commands("a=1\nb<<EOF\nx\ny=z\nEOF\nc=\n");
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x\ny=z");
        assert_eq!(m["c"], "");
    }

    #[test]
    #[should_panic(expected = "never closes")]
    fn unclosed_heredoc_is_rejected() {
        parse_file_commands("b<<EOF\nx\n");
    }
}
