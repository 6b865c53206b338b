//! Exit codes and the one place an error is printed.
//!
//! 0: the work succeeded. 1: the work failed. 2: bad usage or bad input (and nothing was changed).
//! Code that rejects input wraps the error in [`BadInput`]; everything else is a failure of the
//! work. The error chain is printed once, here, as `error: ...` then `  caused by: ...` lines.

use std::fmt;
use std::io;
use std::process::ExitCode;

/// Marks an error as the caller's fault (exit 2): unknown values, malformed files, wrong keys.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Build a bad-input error from a message.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// Extension to mark any error (with context) as bad input.
pub trait ResultExt<T> {
    /// Turn an error into a bad-input error, keeping `msg` as its headline and the cause below.
    fn bad_input(self, msg: impl Into<String>) -> anyhow::Result<T>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn bad_input(self, msg: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| {
            let cause: anyhow::Error = e.into();
            let text = format!("{}: {cause:#}", msg.into());
            anyhow::Error::new(BadInput(text))
        })
    }
}

/// Marks an error as a failure of the work though bad input caused it: something was already
/// changed, so exit 2's promise that nothing was no longer holds. Its text says what was changed.
#[derive(Debug)]
pub struct AfterChanges(pub String);

impl fmt::Display for AfterChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `err` with what was changed before it as its headline, exiting 1 whatever caused it.
pub fn after_changes(err: anyhow::Error, changed: impl Into<String>) -> anyhow::Error {
    err.context(AfterChanges(changed.into()))
}

/// The process exit code for an error.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<AfterChanges>().is_some() {
        1
    } else if err
        .chain()
        .any(|e| e.is::<BadInput>() || e.is::<clap::Error>())
    {
        2
    } else {
        1
    }
}

/// True when the error is stdout having been closed under us (`sf-matrix | head`).
///
/// `serde_json::to_writer` wraps the write's io error in its own error type, which does not
/// expose it as a source, so that type is asked for the io error's kind directly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

/// Render the error chain the way it is printed: `error: top` and one `  caused by:` per cause.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {}", capped(err.to_string()));
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {}", capped(cause.to_string())));
    }
    out
}

/// One message of an error chain with each huge line cut in the middle (a 100 KB value echoed
/// back by whichever check refused it): its start and end stay, and how much was left out. A
/// message listing many problems, a line each, stays whole.
fn capped(msg: String) -> String {
    if msg.lines().all(|l| l.len() <= LINE_MAX) {
        return msg;
    }
    msg.split('\n')
        .map(|l| capped_line(l.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest line of an error message shown whole.
const LINE_MAX: usize = 1_000;

fn capped_line(msg: String) -> String {
    const HEAD: usize = 700;
    const TAIL: usize = 200;
    if msg.len() <= LINE_MAX {
        return msg;
    }
    let mut head = HEAD;
    while !msg.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = msg.len() - TAIL;
    while !msg.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}[... {} bytes left out ...]{}",
        &msg[..head],
        tail - head,
        &msg[tail..]
    )
}

/// Print a failed run's error chain, once: inside Actions as one `::error::` annotation holding
/// the whole chain (the runner shows it in the log and on the run's page), elsewhere as the
/// `error:` / `caused by:` lines.
pub fn report(gha: &crate::gha::Actions, err: &anyhow::Error) {
    if gha.enabled {
        gha.error_annotation(err);
    } else {
        gha.log(&render(err));
    }
}

/// Run a binary's body and turn its outcome into an exit code. Every `main` is this one call.
pub fn main_with(run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            report(&crate::gha::Actions::from_env(), &err);
            ExitCode::from(code_for(&err))
        }
    }
}

/// A value from the user, quoted for an error message: whole when short, otherwise its start and
/// its length (a 100 KB value echoed back helps nobody).
pub fn quoted(value: &str) -> String {
    const SHOWN: usize = 60;
    if value.len() <= SHOWN {
        return format!("{value:?}");
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
}

/// The environment variables the binaries read: their own, the signing key's, AWS's, GitHub's.
const OUR_ENV_PREFIXES: [&str; 4] = ["SF_", "GPG_", "AWS_", "GITHUB_"];

/// Parse a clap CLI, mapping usage errors to exit 2 and `--help`/`--version` to exit 0.
///
/// An empty `SF_*` variable counts as unset: workflows pass `${{ vars.X }}` through `env:`, which
/// is an empty string where the repository sets no such variable, and that must mean "the default",
/// not an empty value. A variable of ours that is not UTF-8 is refused by name (exit 2).
pub fn parse_cli<C: clap::Parser>() -> Result<C, ExitCode> {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| k.to_str().is_some_and(|k| k.starts_with("SF_")) && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        // Still single-threaded: this runs first thing in main, before any thread exists.
        std::env::remove_var(k);
    }
    // clap (and std::env::var) would only say "invalid UTF-8" (or "not set"): name the variable.
    let bad: Vec<String> = std::env::vars_os()
        .filter(|(_, v)| v.to_str().is_none())
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| OUR_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect();
    if !bad.is_empty() {
        eprintln!(
            "error: the environment variable {} is not valid UTF-8; set it to text (or unset it)",
            bad.join(", ")
        );
        return Err(ExitCode::from(2));
    }
    match C::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            Err(ExitCode::from(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_huge_message_is_cut_in_the_middle() {
        let value = "x".repeat(131_000);
        let err = bad_input(format!("unknown toolchain {value:?}; valid: noble, jammy"));
        let text = render(&err);
        assert!(text.len() < 1_200, "{}", text.len());
        assert!(text.starts_with("error: unknown toolchain \"xxx"), "{text}");
        assert!(text.ends_with("; valid: noble, jammy"), "{text}");
        assert!(text.contains("bytes left out"), "{text}");
        let short = bad_input("unknown toolchain \"x\"");
        assert_eq!(render(&short), "error: unknown toolchain \"x\"");
        // Many problems, a line each: every one stays.
        let list: Vec<String> = (0..20)
            .map(|i| format!("problem {i}: {}", "y".repeat(300)))
            .collect();
        let text = render(&bad_input(list.join("\n")));
        for line in &list {
            assert!(text.contains(line.as_str()), "{line} was cut");
        }
    }

    #[test]
    fn bad_input_is_exit_2_even_under_context() {
        let err = Err::<(), _>(bad_input("unknown toolchain 'x'"))
            .context("reading the matrix")
            .unwrap_err();
        assert_eq!(code_for(&err), 2);
        assert_eq!(
            render(&err),
            "error: reading the matrix\n  caused by: unknown toolchain 'x'"
        );
    }

    #[test]
    fn bad_input_after_changes_is_exit_1_and_says_what_was_changed() {
        let err = Err::<(), _>(bad_input("paths refused"))
            .context("creating batch 2")
            .unwrap_err();
        let err = after_changes(err, "stopped after invalidation I1 was made");
        assert_eq!(code_for(&err), 1);
        assert_eq!(
            render(&err),
            "error: stopped after invalidation I1 was made\n  caused by: creating batch 2\n  caused by: paths refused"
        );
        // More context on top keeps it a failure of the work.
        let err = err.context("sf-invalidate");
        assert_eq!(code_for(&err), 1);
    }

    #[test]
    fn the_chain_is_reported_once_in_or_out_of_actions() {
        use crate::gha::{Actions, CommandSink};
        use std::sync::{Arc, Mutex};
        let err = Err::<(), _>(bad_input("unknown toolchain 'x'"))
            .context("reading the matrix")
            .unwrap_err();
        for (enabled, want) in [
            (
                false,
                "error: reading the matrix\n  caused by: unknown toolchain 'x'\n",
            ),
            (
                true,
                "::error::reading the matrix%0A  caused by: unknown toolchain 'x'\n",
            ),
        ] {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let gha = Actions {
                enabled,
                sink: CommandSink::Buffer(buf.clone()),
                ..Default::default()
            };
            report(&gha, &err);
            assert_eq!(
                String::from_utf8(buf.lock().unwrap().clone()).unwrap(),
                want
            );
        }
    }

    #[test]
    fn other_errors_are_exit_1() {
        let err = anyhow::anyhow!("upload failed");
        assert_eq!(code_for(&err), 1);
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let io = io::Error::new(io::ErrorKind::BrokenPipe, "closed");
        let err = anyhow::Error::new(io).context("writing stdout");
        assert!(is_broken_pipe(&err));
    }

    #[test]
    fn broken_pipe_is_recognised_inside_a_serde_json_error() {
        struct Closed;
        impl io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = serde_json::to_writer(Closed, &[1, 2, 3]).unwrap_err();
        assert!(is_broken_pipe(&anyhow::Error::new(err)));
        let other = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!is_broken_pipe(&anyhow::Error::new(other)));
    }
}
