//! The container engine (Docker or Podman) driven through its CLI.
//!
//! Every engine process gets an environment reduced to what an engine needs to find its
//! configuration, storage and registry credentials file: nothing else from the caller's
//! environment (signing keys, passphrases, AWS or GitHub credentials) can reach a build through
//! the engine, its build arguments or an image layer. Containers get only the variables passed
//! with `--env` explicitly.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use sf_core::bad_input;

/// Which engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    pub fn program(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

/// Variables an engine process may see (exact names, then prefixes). The proxy variables (both
/// spellings: Go reads either) let the engine pull images and pass them on to builds behind a
/// proxy.
const PASS_ENV: [&str; 16] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "REGISTRY_AUTH_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];
const PASS_ENV_PREFIXES: [&str; 4] = ["CONTAINERS_", "DOCKER_", "BUILDAH_", "STORAGE_"];

/// The part of an environment an engine process gets.
pub fn engine_env<I>(vars: I) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    vars.into_iter()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|name| {
                PASS_ENV.contains(&name) || PASS_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
            })
        })
        .collect()
}

/// A found, working engine and the global options every call gets (`--root`, `--runtime`, ...).
#[derive(Clone, Debug)]
pub struct Engine {
    pub kind: EngineKind,
    pub program: PathBuf,
    pub global_args: Vec<String>,
    /// Options for every image build (`--squash-all --layers=false` for Podman on vfs storage,
    /// where every layer is a full copy).
    pub build_args: Vec<String>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Engine {
    /// The engine asked for, or the first of podman, docker on PATH; checked to answer.
    pub fn find(kind: Option<EngineKind>, global_args: Vec<String>) -> Result<Engine> {
        let candidates: Vec<EngineKind> = match kind {
            Some(k) => vec![k],
            None => vec![EngineKind::Podman, EngineKind::Docker],
        };
        let Some((kind, program)) = candidates
            .iter()
            .find_map(|k| on_path(k.program()).map(|p| (*k, p)))
        else {
            let what = kind
                .map(|k| k.program().to_string())
                .unwrap_or_else(|| "podman or docker".into());
            return Err(bad_input(format!(
                "no container engine: {what} is not on PATH; install one (apt-get install podman runc) or pass --engine"
            )));
        };
        let engine = Engine {
            kind,
            program,
            global_args,
            build_args: Vec::new(),
        };
        let out = engine
            .command(["info"])
            .output()
            .with_context(|| format!("running {} info", kind.program()))?;
        if !out.status.success() {
            let hint = match kind {
                EngineKind::Docker => "start the Docker daemon (systemctl start docker) or use --engine podman",
                EngineKind::Podman => "check `podman info` (storage driver, runtime: --engine-arg=--storage-driver=vfs --engine-arg=--runtime=runc)",
            };
            return Err(anyhow::anyhow!(
                "{} is installed but not working ({}): {hint}",
                kind.program(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(engine)
    }

    /// A command for the engine with the reduced environment and the global options.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(&self.program);
        c.env_clear();
        c.envs(engine_env(std::env::vars_os()));
        c.args(&self.global_args);
        c.args(args);
        c
    }

    /// How a call is shown in messages and logs: the engine and its arguments, never the
    /// environment it runs with (that holds the engine's configuration and credentials paths).
    fn shown<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut s = self.kind.program().to_string();
        for a in args {
            s.push(' ');
            s.push_str(&a.as_ref().to_string_lossy());
        }
        s
    }

    /// Run to completion, capturing output; an error carries the engine's stderr.
    pub fn output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = self.shown(&args);
        let mut c = self.command(&args);
        let out = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {shown}"))?;
        if !out.status.success() {
            anyhow::bail!(
                "{} failed: {}",
                shown,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    pub fn image_exists(&self, image: &str) -> bool {
        self.command(["image", "inspect", image])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Build `dockerfile` with `context` as the build context, tagged `tag`, logging to `log`.
    pub fn build(
        &self,
        dockerfile: &Path,
        context: &Path,
        tags: &[String],
        labels: &[(String, String)],
        log: &Path,
    ) -> Result<()> {
        let mut args: Vec<String> = vec![
            "build".into(),
            "--file".into(),
            dockerfile.display().to_string(),
        ];
        if self.kind == EngineKind::Podman {
            // The recipes' SHELL (bash with pipefail) is a Docker-format instruction: Podman's
            // default OCI format drops it, and every pipe in a RUN would then hide failures.
            args.push("--format=docker".into());
        }
        args.extend(self.build_args.iter().cloned());
        for t in tags {
            args.push("--tag".into());
            args.push(t.clone());
        }
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.push(context.display().to_string());
        self.run_logged(&args, log)
            .with_context(|| format!("building {} (log: {})", dockerfile.display(), log.display()))
    }

    /// Run to completion with stdout and stderr appended to `log` and copied to our stderr line
    /// by line as they come (a build runs for hours: its progress must show while it runs). An
    /// error carries the last lines of the engine's stderr.
    pub fn run_logged(&self, args: &[String], log: &Path) -> Result<()> {
        let shown = self.shown(args);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening the log {}", log.display()))?;
        writeln!(f, "$ {shown}")?;
        let f = Arc::new(Mutex::new(f));
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {shown}"))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let pipes: [Box<dyn Read + Send>; 2] = [Box::new(out), Box::new(err)];
        let copiers = pipes.map(|pipe| {
            let f = f.clone();
            std::thread::spawn(move || copy_lines(pipe, &f))
        });
        let status = child.wait().with_context(|| format!("waiting for {shown}"));
        // Both copiers are waited for; the first log error wins, and stderr's last lines are
        // what a failure message carries.
        let [out, err] = copiers.map(|c| {
            c.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the log copier panicked")))
        });
        let status = status?;
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(f, "# {} exited with {status}", self.kind.program())?;
        let tail = out
            .and(err)
            .with_context(|| format!("writing the log {}", log.display()))?;
        if !status.success() {
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            anyhow::bail!("{shown} exited with {status}: {}", tail.join("\n").trim());
        }
        Ok(())
    }
}

/// How many of the engine's last stderr lines an error message carries.
const TAIL_LINES: usize = 5;

/// Copy a pipe to the log and our stderr a line at a time; returns its last lines. Reads to the
/// end even when the log cannot be written, so the process never blocks on a full pipe; the
/// first log error is returned.
fn copy_lines(
    pipe: impl Read,
    log: &Mutex<std::fs::File>,
) -> std::io::Result<std::collections::VecDeque<String>> {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::new();
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let mut first_error = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if let Err(e) = log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&line)
        {
            first_error.get_or_insert(e);
        }
        let _ = std::io::stderr().lock().write_all(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(&line).trim_end().to_string());
    }
    first_error.map_or(Ok(tail), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/bin/sh` in the engine's place: the same spawning, environment and logging code.
    fn shell() -> Engine {
        Engine {
            kind: EngineKind::Podman,
            program: PathBuf::from("/bin/sh"),
            global_args: Vec::new(),
            build_args: Vec::new(),
        }
    }

    #[test]
    fn a_failing_call_shows_its_arguments_and_stderr_but_not_its_environment() {
        let e = shell()
            .output(["-c", "echo registry refused >&2; exit 4"])
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("podman -c echo registry refused"), "{msg}");
        assert!(msg.ends_with("failed: registry refused"), "{msg}");
        // The engine does get PATH (and HOME, DOCKER_*, ...): none of it is in the message.
        let path = std::env::var("PATH").unwrap();
        assert!(!path.is_empty());
        assert!(!msg.contains(&path) && !msg.contains("env -i"), "{msg}");
    }

    #[test]
    fn the_engine_gets_proxies_and_its_own_settings_and_nothing_else() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("HTTP_PROXY", "http://proxy:3128"),
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("NO_PROXY", "localhost"),
            ("http_proxy", "http://proxy:3128"),
            ("https_proxy", "http://proxy:3128"),
            ("no_proxy", "localhost"),
            ("DOCKER_HOST", "unix:///run/d.sock"),
            ("CONTAINERS_CONF", "/etc/c.conf"),
            ("GPG_PRIVATE_KEY", "k"),
            ("GPG_PASSPHRASE", "p"),
            ("AWS_SECRET_ACCESS_KEY", "a"),
            ("GITHUB_TOKEN", "g"),
            ("SF_REGISTRY_TOKEN", "r"),
        ];
        let kept: Vec<String> = engine_env(
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .into_iter()
        .map(|(k, _)| k.into_string().unwrap())
        .collect();
        assert_eq!(
            kept,
            [
                "PATH",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "NO_PROXY",
                "http_proxy",
                "https_proxy",
                "no_proxy",
                "DOCKER_HOST",
                "CONTAINERS_CONF"
            ]
        );
    }

    #[test]
    fn output_reaches_the_log_while_the_engine_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        let script =
            "echo out-line; echo err-line >&2; sleep 5; echo late-out; echo last-err >&2; exit 3";
        let run = {
            let log = log.clone();
            std::thread::spawn(move || {
                shell().run_logged(&["-c".to_string(), script.to_string()], &log)
            })
        };
        let start = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("out-line") && text.contains("err-line") {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(4),
                "nothing reached the log while the engine ran: {text:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!run.is_finished(), "the engine had already finished");
        let e = run.join().unwrap().unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("exited with exit status: 3"), "{msg}");
        assert!(msg.contains("err-line\nlast-err"), "{msg}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("$ podman -c echo out-line"), "{text}");
        for want in ["out-line\n", "err-line\n", "late-out\n", "last-err\n"] {
            assert!(text.contains(want), "{want} missing: {text}");
        }
        assert!(
            text.ends_with("# podman exited with exit status: 3\n"),
            "{text}"
        );
    }
}
