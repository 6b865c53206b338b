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

/// `len` pseudo-random bytes (xorshift64; the same `seed` gives the same bytes): nothing gzip can
/// shrink, and no two stretches alike, so a misplaced part or a splice shows.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    // An all-zero state would stay zero.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tar stream of `files` (path, bytes; plain files, mode 0644, in order) written into `w`,
/// which is handed back so the caller can finish it (a gzip writer, say).
pub fn tar_into<W: std::io::Write>(w: W, files: &[(&str, &[u8])]) -> W {
    let mut tar = tar::Builder::new(w);
    for (path, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, *bytes)
            .expect("append to the tar");
    }
    tar.into_inner().expect("finish the tar")
}

/// Parse `GITHUB_OUTPUT`/`GITHUB_ENV` content the way GitHub's runner does on Linux
/// (actions/runner, `FileCommandManager`): lines end at `\n` only (a `\r` stays part of the
/// line); `name=value` where `=` comes before any `<<`; otherwise `name<<DELIM`, whose value is the
/// text between the header line and the first line exactly equal to `DELIM`, without the line
/// break before that line. Later entries replace earlier ones. Panics on anything the runner
/// would reject.
pub fn parse_file_commands(text: &str) -> BTreeMap<String, String> {
    // One line from `at`: (line, index after its `\n`, whether a `\n` ended it).
    fn read_line(text: &str, at: usize) -> Option<(&str, usize, bool)> {
        if at >= text.len() {
            return None;
        }
        Some(match text[at..].find('\n') {
            Some(n) => (&text[at..at + n], at + n + 1, true),
            None => (&text[at..], text.len(), false),
        })
    }
    let mut out = BTreeMap::new();
    let mut at = 0;
    while let Some((line, next, _)) = read_line(text, at) {
        at = next;
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
            (_, Some(_)) => {
                let parts: Vec<&str> = line.split("<<").collect();
                assert!(
                    parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty(),
                    "bad heredoc header {line:?}"
                );
                let (name, delim) = (parts[0], parts[1]);
                let start = at;
                let mut end = at;
                loop {
                    let (l, next, ended) = read_line(text, at)
                        .unwrap_or_else(|| panic!("delimiter {delim} for {name} never closes"));
                    at = next;
                    if l == delim {
                        break;
                    }
                    assert!(ended, "the value of {name} ends without a line break");
                    end = at - 1;
                }
                out.insert(name.to_string(), text[start..end.max(start)].to_string());
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
    fn heredoc_values_keep_carriage_returns_and_blank_lines() {
        let m = parse_file_commands("b<<EOF\nx\r\n\nEOF\nc<<E\nEOF\r\nE\n");
        assert_eq!(m["b"], "x\r\n");
        assert_eq!(m["c"], "EOF\r");
    }

    #[test]
    fn noise_is_repeatable_and_differs_by_seed() {
        let a = noise(4096, 7);
        assert_eq!(a, noise(4096, 7));
        assert_ne!(a, noise(4096, 9));
        assert_eq!(noise(10, 0), noise(10, 1), "seed 0 is taken as 1");
        // Every byte value turns up: not a short cycle.
        let seen: std::collections::BTreeSet<u8> = a.iter().copied().collect();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    #[should_panic(expected = "never closes")]
    fn a_crlf_header_line_keeps_its_cr_in_the_delimiter() {
        // On Linux the runner reads "b<<EOF\r" as the header: its delimiter "EOF\r" never comes.
        parse_file_commands("b<<EOF\r\nx\nEOF\n");
    }

    #[test]
    #[should_panic(expected = "bad heredoc header")]
    fn a_header_with_two_heredoc_markers_is_rejected() {
        parse_file_commands("b<<E<<F\nx\nE<<F\n");
    }

    #[test]
    #[should_panic(expected = "never closes")]
    fn unclosed_heredoc_is_rejected() {
        parse_file_commands("b<<EOF\nx\n");
    }
}
