//! GitHub Actions I/O: step outputs, exported environment, the job summary, masks, log groups and
//! annotations.
//!
//! Workflow commands (`::add-mask::`, `::group::`, `::error ...::`) go to stderr, which the runner
//! reads as well as stdout, so stdout stays pure data. Outside Actions (`GITHUB_ACTIONS` is not
//! `true`) the commands degrade to plain stderr logging. The file writes (`GITHUB_OUTPUT`,
//! `GITHUB_ENV`, `GITHUB_STEP_SUMMARY`) follow their own variables instead: each file is written
//! whenever its variable names one, inside Actions or not (that is how tests and local runs read
//! the outputs), and skipped when it is unset or empty.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::env;

/// GitHub's limit for one step's job summary (1 MiB).
pub const SUMMARY_LIMIT: u64 = 1024 * 1024;
/// GitHub's limit for one output value (1 MB).
pub const OUTPUT_LIMIT: usize = 1_000_000;

/// Where workflow commands are written.
#[derive(Clone, Debug, Default)]
pub enum CommandSink {
    #[default]
    Stderr,
    /// Captured, for tests.
    Buffer(Arc<Mutex<Vec<u8>>>),
}

impl CommandSink {
    fn line(&self, line: &str) {
        match self {
            CommandSink::Stderr => {
                let mut err = io::stderr().lock();
                let _ = writeln!(err, "{line}");
            }
            CommandSink::Buffer(buf) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(line.as_bytes());
                b.push(b'\n');
            }
        }
    }
}

/// A source location for an annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: Option<u32>,
    pub col: Option<u32>,
    pub title: Option<String>,
}

/// The runner's files and whether we are inside Actions at all.
#[derive(Clone, Debug, Default)]
pub struct Actions {
    pub enabled: bool,
    pub output_file: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub summary_file: Option<PathBuf>,
    pub sink: CommandSink,
}

impl Actions {
    /// Read `GITHUB_ACTIONS`, `GITHUB_OUTPUT`, `GITHUB_ENV`, `GITHUB_STEP_SUMMARY`.
    pub fn from_env() -> Self {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Actions {
            enabled: std::env::var(env::GITHUB_ACTIONS).is_ok_and(|v| v == "true"),
            output_file: path(env::GITHUB_OUTPUT),
            env_file: path(env::GITHUB_ENV),
            summary_file: path(env::GITHUB_STEP_SUMMARY),
            sink: CommandSink::Stderr,
        }
    }

    /// Write step outputs, all in one append, so a failure part-way leaves none of them.
    ///
    /// Errors if a value exceeds GitHub's 1 MB limit for one output (nothing is written then).
    pub fn set_outputs(&self, outputs: &[(&str, &str)]) -> io::Result<()> {
        let Some(file) = &self.output_file else {
            return Ok(());
        };
        if let Some((name, value)) = outputs.iter().find(|(_, v)| v.len() > OUTPUT_LIMIT) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "output {name} is {} bytes, over GitHub's 1 MB limit",
                    value.len()
                ),
            ));
        }
        append(file, format_file_commands(outputs)?.as_bytes())
    }

    /// One step output.
    pub fn set_output(&self, name: &str, value: &str) -> io::Result<()> {
        self.set_outputs(&[(name, value)])
    }

    /// Export variables to later steps of the job (`GITHUB_ENV`).
    pub fn export_env(&self, vars: &[(&str, &str)]) -> io::Result<()> {
        let Some(file) = &self.env_file else {
            return Ok(());
        };
        append(file, format_file_commands(vars)?.as_bytes())
    }

    /// Append Markdown to the job summary, refusing (and writing nothing) when the step's summary
    /// would pass GitHub's 1 MiB; the caller shortens and tries again.
    pub fn append_summary(&self, markdown: &str) -> io::Result<()> {
        let Some(file) = &self.summary_file else {
            return Ok(());
        };
        let current = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if current + markdown.len() as u64 > SUMMARY_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the job summary would be {} bytes, over GitHub's {SUMMARY_LIMIT}-byte limit",
                    current + markdown.len() as u64
                ),
            ));
        }
        append(file, markdown.as_bytes())
    }

    /// Ask the runner to mask a secret in every later log line. Each line is masked on its own,
    /// because the runner matches masks line by line.
    pub fn mask(&self, secret: &str) {
        if !self.enabled {
            return;
        }
        for line in secret.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.sink
                .line(&format!("::add-mask::{}", escape_data(line)));
        }
    }

    /// Start a collapsible log group; it ends when the guard drops.
    pub fn group(&self, title: &str) -> Group {
        if self.enabled {
            self.sink.line(&format!("::group::{}", escape_data(title)));
        } else {
            self.sink.line(&format!("== {title}"));
        }
        Group {
            sink: self.sink.clone(),
            enabled: self.enabled,
        }
    }

    /// A one-line log message for people (stderr).
    pub fn log(&self, msg: &str) {
        self.sink.line(msg);
    }

    /// A warning: an annotation inside Actions, `warning: ...` outside.
    pub fn warning(&self, msg: &str, at: Option<&Location>) {
        self.annotate("warning", msg, at);
    }

    /// The error annotation for a failed step, holding the whole chain as
    /// [`crate::exit::render`] lays it out (only inside Actions; outside, [`crate::exit::report`]
    /// prints the chain as plain lines instead).
    pub fn error_annotation(&self, err: &anyhow::Error) {
        if self.enabled {
            let chain = crate::exit::render(err);
            self.annotate(
                "error",
                chain.strip_prefix("error: ").unwrap_or(&chain),
                None,
            );
        }
    }

    /// An error annotation pointing at a file and line.
    pub fn error_at(&self, msg: &str, at: &Location) {
        self.annotate("error", msg, Some(at));
    }

    fn annotate(&self, level: &str, msg: &str, at: Option<&Location>) {
        if !self.enabled {
            match at {
                Some(l) => self.sink.line(&format!(
                    "{level}: {}{}: {msg}",
                    l.file,
                    l.line.map(|n| format!(":{n}")).unwrap_or_default()
                )),
                None => self.sink.line(&format!("{level}: {msg}")),
            }
            return;
        }
        self.sink.line(&annotation(level, msg, at));
    }
}

/// Ends a log group when dropped.
#[derive(Debug)]
pub struct Group {
    sink: CommandSink,
    enabled: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.enabled {
            self.sink.line("::endgroup::");
        }
    }
}

/// Format an annotation command line: `::error file=a,line=3::message`.
pub fn annotation(level: &str, msg: &str, at: Option<&Location>) -> String {
    let mut props = Vec::new();
    if let Some(l) = at {
        if let Some(t) = &l.title {
            props.push(format!("title={}", escape_property(t)));
        }
        props.push(format!("file={}", escape_property(&l.file)));
        if let Some(n) = l.line {
            props.push(format!("line={n}"));
        }
        if let Some(c) = l.col {
            props.push(format!("col={c}"));
        }
    }
    let props = if props.is_empty() {
        String::new()
    } else {
        format!(" {}", props.join(","))
    };
    format!("::{level}{props}::{}", escape_data(msg))
}

/// Escape a command's message the way the runner unescapes it.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a command property value (also `:` and `,`, which delimit properties).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Format `name=value` lines, or `name<<DELIM` blocks for values with line breaks, for
/// `GITHUB_OUTPUT` / `GITHUB_ENV`.
pub fn format_file_commands(entries: &[(&str, &str)]) -> io::Result<String> {
    let mut out = String::new();
    for (name, value) in entries {
        if name.is_empty() || name.contains(['=', '\n', '\r']) || name.contains("<<") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid output name {name:?}: it must be non-empty without '=', '<<' or line breaks"),
            ));
        }
        if value.contains(['\n', '\r']) {
            let delim = delimiter_for(value)?;
            let _ = write!(out, "{name}<<{delim}\n{value}\n{delim}\n");
        } else {
            let _ = writeln!(out, "{name}={value}");
        }
    }
    Ok(out)
}

/// A random heredoc delimiter that does not occur in the value.
fn delimiter_for(value: &str) -> io::Result<String> {
    loop {
        let delim = format!("ghadelimiter_{}", crate::fsutil::random_hex(16)?);
        if !value.contains(&delim) {
            return Ok(delim);
        }
    }
}

fn append(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(bytes)?;
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_values_use_equals() {
        let text = format_file_commands(&[("count", "18")]).unwrap();
        assert_eq!(text, "count=18\n");
    }

    #[test]
    fn multi_line_values_use_a_fresh_delimiter() {
        let text = format_file_commands(&[("m", "a\nb")]).unwrap();
        let mut lines = text.lines();
        let head = lines.next().unwrap();
        let delim = head.strip_prefix("m<<").unwrap();
        assert!(delim.starts_with("ghadelimiter_") && delim.len() > 20);
        assert_eq!(lines.collect::<Vec<_>>(), vec!["a", "b", delim]);
    }

    #[test]
    fn names_with_separators_are_refused() {
        assert!(format_file_commands(&[("a=b", "x")]).is_err());
        assert!(format_file_commands(&[("a\nb", "x")]).is_err());
        assert!(format_file_commands(&[("", "x")]).is_err());
    }

    #[test]
    fn annotations_escape_percent_cr_lf_and_property_separators() {
        let at = Location {
            file: "a,b:c.yml".into(),
            line: Some(3),
            col: None,
            title: None,
        };
        assert_eq!(
            annotation("error", "50% done\r\nnext", Some(&at)),
            "::error file=a%2Cb%3Ac.yml,line=3::50%25 done%0D%0Anext"
        );
    }

    #[test]
    fn mask_emits_one_command_per_line_only_inside_actions() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut gha = Actions {
            sink: CommandSink::Buffer(buf.clone()),
            ..Default::default()
        };
        gha.mask("s3cret");
        assert!(buf.lock().unwrap().is_empty());
        gha.enabled = true;
        gha.mask("line1\nline2\n");
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "::add-mask::line1\n::add-mask::line2\n");
    }

    #[test]
    fn groups_close_on_drop() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let gha = Actions {
            enabled: true,
            sink: CommandSink::Buffer(buf.clone()),
            ..Default::default()
        };
        {
            let _g = gha.group("build");
            gha.log("inside");
        }
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "::group::build\ninside\n::endgroup::\n");
    }

    fn buffered(enabled: bool) -> (Actions, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let gha = Actions {
            enabled,
            sink: CommandSink::Buffer(buf.clone()),
            ..Default::default()
        };
        (gha, buf)
    }

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn outside_actions_warnings_and_errors_are_plain_lines() {
        let (gha, buf) = buffered(false);
        let at = Location {
            file: "data/matrix.yaml".into(),
            line: Some(12),
            col: Some(3),
            title: Some("t".into()),
        };
        gha.warning("50% split", None);
        gha.warning("check this", Some(&at));
        gha.error_at("bad value", &at);
        gha.error_at(
            "no line",
            &Location {
                file: "f".into(),
                ..Default::default()
            },
        );
        gha.error_annotation(&anyhow::anyhow!("failed"));
        assert_eq!(
            text(&buf),
            "warning: 50% split\n\
             warning: data/matrix.yaml:12: check this\n\
             error: data/matrix.yaml:12: bad value\n\
             error: f: no line\n"
        );
    }

    #[test]
    fn inside_actions_warnings_and_errors_are_annotations() {
        let (gha, buf) = buffered(true);
        let at = Location {
            file: "m.yaml".into(),
            line: Some(2),
            col: None,
            title: None,
        };
        gha.warning("a\nb", None);
        gha.error_at("bad", &at);
        assert_eq!(
            text(&buf),
            "::warning::a%0Ab\n::error file=m.yaml,line=2::bad\n"
        );
    }

    #[test]
    fn export_env_appends_and_is_skipped_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "EARLIER=1\n").unwrap();
        let gha = Actions {
            env_file: Some(file.clone()),
            ..Default::default()
        };
        gha.export_env(&[("SF_A", "x=y"), ("SF_B", "one\ntwo")])
            .unwrap();
        let written = std::fs::read_to_string(&file).unwrap();
        let mut lines = written.lines();
        assert_eq!(lines.next(), Some("EARLIER=1"));
        assert_eq!(lines.next(), Some("SF_A=x=y"));
        let head = lines.next().unwrap();
        let delim = head.strip_prefix("SF_B<<").unwrap();
        assert_eq!(lines.collect::<Vec<_>>(), vec!["one", "two", delim]);
        assert!(gha.export_env(&[("bad=name", "v")]).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), written);

        // No GITHUB_ENV: nothing to write, and no error.
        let none = Actions::default();
        none.export_env(&[("SF_A", "x")]).unwrap();
    }

    #[test]
    fn summary_refuses_to_pass_the_limit_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("summary.md");
        let gha = Actions {
            summary_file: Some(file.clone()),
            ..Default::default()
        };
        gha.append_summary("# ok\n").unwrap();
        let big = "x".repeat(SUMMARY_LIMIT as usize);
        assert!(gha.append_summary(&big).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "# ok\n");
    }
}
