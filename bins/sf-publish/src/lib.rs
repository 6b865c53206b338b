//! `sf-publish`: put Spack build caches and relocatable tarballs onto S3 or a directory, so that
//! readers never see a broken state and parallel matrix jobs never undo each other.
//!
//! Subcommands: `mirror` (a signed local mirror onto a mirror root, index merged), `reindex`
//! (rebuild a mirror's indexes from its manifests), `tarball` (tarballs with signatures and
//! `SHA256SUMS`) and `status` (which matrix cells are already published). Every run that writes
//! prints its change list (JSON, see [`changes`]) on stdout, can write it to a file for
//! `sf-invalidate`, and leaves a result record.

pub mod changes;
pub mod merge;
pub mod mirror;
pub mod objects;
pub mod progress;
pub mod publish;
pub mod reindex;
pub mod status;
pub mod tarball;
pub mod trust;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;

use sf_aws::{AwsArgs, AwsSettings};
use sf_core::cli::{CellIdArgs, MatrixFileArgs, ResultsArgs, StorageArgs};
use sf_core::exit::bad_input;
use sf_core::gha::Actions;
use sf_core::layout::Destination;
use sf_core::record::Recorder;
use sf_store::{Store, Transfer};

use crate::changes::ChangeList;
use crate::publish::Publisher;
use crate::trust::{Trust, TrustArgs};

#[derive(Parser, Debug)]
#[command(
    name = "sf-publish",
    version,
    about = "Put Spack build caches and tarballs on S3 or a directory, keeping the cache index whole (JSON on stdout)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[command(flatten)]
    pub cell: CellIdArgs,
    /// Also write the change list (keys created or replaced) to this file, for sf-invalidate.
    #[arg(long, value_name = "FILE", global = true)]
    pub change_list: Option<PathBuf>,
    /// Objects uploaded at once.
    #[arg(long, default_value_t = 16, value_name = "N", global = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Files from this size (MiB) up are sent as multipart uploads (S3).
    #[arg(
        long,
        default_value_t = 64,
        value_name = "MIB",
        global = true,
        hide_short_help = true
    )]
    pub multipart_threshold_mib: u64,
    /// Multipart part size (MiB; at least 5).
    #[arg(long, default_value_t = 16, value_name = "MIB", global = true, hide_short_help = true, value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size_mib: u64,
    /// Parts of one file in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N", global = true, hide_short_help = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub part_concurrency: u16,
    /// Seconds between one-line progress reports on stderr when it is not a terminal (a line also
    /// comes each time another tenth of the bytes is done); on a terminal a bar is drawn instead.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "SECS",
        global = true,
        hide_short_help = true,
        allow_negative_numbers = true,
        value_parser = parse_progress_secs
    )]
    pub progress_secs: f64,
    /// Pause before re-reading an index just written, to confirm no racing writer replaced it.
    #[arg(
        long,
        default_value = "150",
        value_name = "MS",
        global = true,
        hide_short_help = true
    )]
    pub confirm_delay_ms: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish a signed local layout-3 mirror to a mirror root; the index is merged, not replaced.
    Mirror {
        /// The local mirror (holds v3/ and blobs/).
        #[arg(value_name = "SRC")]
        src: PathBuf,
        /// The mirror root: s3://bucket/prefix or file:///dir (e.g. a cell's deps_mirror.url).
        #[arg(value_name = "DEST")]
        dest: String,
        #[command(flatten)]
        trust: TrustArgs,
        /// Publish spec manifests without checking signatures (unsigned mirrors).
        #[arg(long)]
        allow_unsigned: bool,
        /// Check the source and print the objects in upload order; upload nothing.
        #[arg(long)]
        dry_run: bool,
        /// Create a file:// destination directory that does not exist yet (a mistyped path is
        /// refused otherwise, as a missing bucket is).
        #[arg(long)]
        create: bool,
    },
    /// Rebuild a mirror's package index and key index from its spec and key manifests.
    Reindex {
        /// The mirror root: s3://bucket/prefix or file:///dir.
        #[arg(value_name = "DEST")]
        dest: String,
        /// Write an empty index even where there is no mirror (no index, no spec manifests).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Publish tarballs with their .asc and their folder's SHA256SUMS(.asc) to the layout's keys.
    Tarball {
        /// Tarballs; FILE.asc, SHA256SUMS and SHA256SUMS.asc must be beside each.
        #[arg(required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The destination root: s3://bucket[/prefix] or file:///dir.
        #[arg(value_name = "DEST")]
        dest: String,
        /// Create a file:// destination directory that does not exist yet (a mistyped path is
        /// refused otherwise, as a missing bucket is).
        #[arg(long)]
        create: bool,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        matrix_file: MatrixFileArgs,
    },
    /// Which cells of a job matrix (sf-matrix JSON, FILE or -) are already published.
    Status {
        #[arg(value_name = "MATRIX")]
        matrix: String,
        /// Stack data file (pins: which specs mark a mirror cell as built) instead of the embedded one.
        #[arg(long, env = sf_core::env::STACK_FILE, value_name = "FILE")]
        stack_file: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| run(cli, &Actions::from_env())),
        Err(code) => code,
    }
}

/// What a writing run prints on stdout.
#[derive(Debug, Serialize)]
pub struct Report {
    pub destination: String,
    pub objects_uploaded: u64,
    pub bytes_uploaded: u64,
    pub objects_skipped: u64,
    pub retries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reindex: Option<reindex::Reindexed>,
    pub change_list: ChangeList,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn open(dest: &str, aws: &AwsSettings, transfer: Transfer) -> Result<Store> {
    let dest = Destination::parse(dest)?;
    Store::open_with(&dest, aws, transfer)
        .await
        .with_context(|| format!("opening {dest}"))
}

/// The path of a directory destination that does not exist. Opening a directory store creates
/// it, so a command that reads what is there (status, reindex) checks this first: a missing
/// directory holds nothing, and a mistyped one must not be made.
pub(crate) fn missing_dir(dest: &Destination) -> Option<&str> {
    match dest {
        Destination::Dir { path } if !Path::new(path).is_dir() => Some(path),
        _ => None,
    }
}

/// A file:// destination must exist unless `create` (a mistyped path would publish a new tree).
fn refuse_missing_dir(dest: &Destination, create: bool) -> Result<()> {
    match missing_dir(dest) {
        Some(path) if !create => Err(bad_input(format!(
            "{dest}: directory {path} does not exist; nothing was published (--create makes it, for a first publish there)"
        ))),
        _ => Ok(()),
    }
}

/// Run with a given Actions context (tests pass their own).
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    let step = match &cli.command {
        Command::Mirror { .. } => "sf-publish mirror",
        Command::Reindex { .. } => "sf-publish reindex",
        Command::Tarball { .. } => "sf-publish tarball",
        Command::Status { .. } => "sf-publish status",
    };
    let mut rec = Recorder::start(step);
    let result = execute(&cli, gha, &mut rec);
    if let Err(e) = &result {
        rec.fail(e, None);
    }
    let finished = rec.finish_step(cli.results.results_dir.as_deref(), gha);
    result?;
    finished?;
    Ok(())
}

fn execute(cli: &Cli, gha: &Actions, rec: &mut Recorder) -> Result<()> {
    let cell = cli.cell.get()?;
    // The cell joins this record to the cell's build and signing in the summary.
    rec.record.cell = cell.map(str::to_string);
    let aws = cli.aws.settings_for_cell(cell)?;
    let settle = Duration::from_millis(cli.confirm_delay_ms);
    let concurrency = usize::from(cli.concurrency);
    let transfer = Transfer {
        multipart_threshold: cli.multipart_threshold_mib << 20,
        part_size: cli.part_size_mib << 20,
        concurrency: usize::from(cli.part_concurrency),
    };
    match &cli.command {
        Command::Status { matrix, stack_file } => {
            let stack = sf_spackenv::stack::Stack::load(stack_file.as_deref())?;
            let text = read_file_or_stdin(matrix)?;
            let cells = status::parse_matrix(&text)?;
            let report = runtime()?.block_on(status::status(&cells, &aws, &stack))?;
            rec.metric("cells", cells.len() as u64)
                .metric("published", report.published.len() as u64);
            print_json(&report)?;
            let published: Vec<&str> = report.published.iter().map(|c| c.id.as_str()).collect();
            gha.set_output("published", &serde_json::to_string(&published)?)
                .context("writing GITHUB_OUTPUT")?;
            Ok(())
        }
        Command::Mirror {
            src,
            dest,
            trust,
            allow_unsigned,
            dry_run,
            create,
        } => {
            rec.input("source", src.display().to_string())
                .input("destination", dest)
                .input("allow_unsigned", allow_unsigned);
            refuse_missing_dir(&Destination::parse(dest)?, *create || *dry_run)?;
            sf_spack::Mirror::open(src)?.require_v3()?;
            let trust = if *allow_unsigned {
                None
            } else {
                Some(Trust::load(trust, |pin| {
                    mirror::published_key(src, &pin.to_string())
                })?)
            };
            let plan = {
                let _g = gha.group("checking the source mirror");
                mirror::plan(src, trust.as_ref())?
            };
            rec.metric("specs", plan.specs.len() as u64);
            if *dry_run {
                return print_json(&plan.objects()?);
            }
            let rt = runtime()?;
            let p = Publisher::new(rt.block_on(open(dest, &aws, transfer))?, concurrency);
            let out = rt.block_on(with_progress(&p, cli, mirror::publish(&plan, &p, settle)));
            for (name, d) in out.as_ref().map(|o| o.timings.clone()).unwrap_or_default() {
                rec.timing(name, d);
            }
            finish(cli, gha, rec, &p, None, out.map(|_| ()))
        }
        Command::Reindex { dest, allow_empty } => {
            rec.input("destination", dest)
                .input("allow_empty", allow_empty);
            if let Some(path) = missing_dir(&Destination::parse(dest)?).filter(|_| !allow_empty) {
                return Err(bad_input(format!(
                    "{dest}: directory {path} does not exist, so there is no mirror to reindex; nothing was written (--allow-empty writes an empty one)"
                )));
            }
            let rt = runtime()?;
            let p = Publisher::new(rt.block_on(open(dest, &aws, transfer))?, concurrency);
            let out = rt.block_on(with_progress(&p, cli, reindex::reindex(&p, *allow_empty)));
            let done = out.as_ref().ok().cloned();
            if let Some(r) = &done {
                for s in &r.skipped {
                    gha.warning(&format!("reindex: skipped {}: {}", s.key, s.reason), None);
                }
                rec.metric("specs", r.specs as u64)
                    .metric("specs_skipped", r.skipped.len() as u64);
                rec.output("skipped", &r.skipped);
            }
            finish(cli, gha, rec, &p, done, out.map(|_| ()))
        }
        Command::Tarball {
            files,
            dest,
            create,
            trust,
            storage,
            matrix_file,
        } => {
            rec.input("files", files).input("destination", dest);
            let m = matrix_file.load()?;
            let mut layout = storage.layout()?;
            let dest_parsed = Destination::parse(dest)?;
            // The layout's destination (--destination / SF_DESTINATION) places the keys; DEST is
            // where they are written. Two different ones would publish where nobody looks.
            if let Some(given) = storage.destination.as_deref() {
                if Destination::parse(given)? != dest_parsed {
                    return Err(bad_input(format!(
                        "--destination (or {}) {given} and DEST {dest} differ: give the destination once, or the same in both; nothing was published",
                        sf_core::env::DESTINATION
                    )));
                }
            }
            refuse_missing_dir(&dest_parsed, *create)?;
            layout.destination = dest_parsed;
            let trust = Trust::load(trust, |pin| {
                Err(bad_input(format!(
                    "no certificate for {pin}: give --cert FILE with the public key"
                )))
            })?;
            let checked = tarball::check(files, &m, &layout, &trust)?;
            let rt = runtime()?;
            let p = Publisher::new(rt.block_on(open(dest, &aws, transfer))?, concurrency);
            let out = rt.block_on(with_progress(
                &p,
                cli,
                tarball::publish(&checked, &trust, &p),
            ));
            let signers = out.as_ref().ok().cloned().unwrap_or_default();
            for (i, t) in checked.iter().enumerate() {
                rec.record.artifacts.push(sf_core::record::Artifact {
                    kind: "tarball".into(),
                    path: Some(t.file.display().to_string()),
                    key: Some(t.location.key.clone()),
                    url: Some(p.store.url_of(&t.location.key)),
                    cdn_url: Some(t.location.cdn_url.clone()),
                    size: std::fs::metadata(&t.file).ok().map(|m| m.len()),
                    sha256: Some(t.sha256.clone()),
                    signed_by: signers.get(i).cloned(),
                });
            }
            let out = out.map(|_| ());
            finish(cli, gha, rec, &p, None, out)
        }
    }
}

/// The valid range of `--progress-secs`.
const PROGRESS_SECS: std::ops::RangeInclusive<f64> = 0.05..=3600.0;

/// `--progress-secs`: a finite number of seconds in [`PROGRESS_SECS`], checked while the command
/// line is parsed, before any destination is opened (NaN would otherwise reach `Duration`).
fn parse_progress_secs(s: &str) -> std::result::Result<f64, String> {
    let range = format!(
        "a number of seconds from {} to {}",
        PROGRESS_SECS.start(),
        PROGRESS_SECS.end()
    );
    match s.trim().parse::<f64>() {
        Ok(v) if PROGRESS_SECS.contains(&v) => Ok(v),
        Ok(_) => Err(format!("{s:?} is out of range: give {range}")),
        Err(_) => Err(format!("{s:?} is not a number: give {range}")),
    }
}

/// Run the work showing its progress (a bar on a terminal, lines in CI logs).
async fn with_progress<T>(
    p: &Publisher,
    cli: &Cli,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = Duration::from_secs_f64(cli.progress_secs);
    let reporter = progress::start(p, progress::style_here(), every);
    let out = work.await;
    reporter.finish();
    out
}

/// Counters, change list, outputs and the stdout report of a writing run (also after a failure,
/// so the record says what was already written).
fn finish(
    cli: &Cli,
    gha: &Actions,
    rec: &mut Recorder,
    p: &Publisher,
    reindexed: Option<reindex::Reindexed>,
    outcome: Result<()>,
) -> Result<()> {
    let s = &p.stats;
    let report = Report {
        destination: p.store.destination().to_string(),
        objects_uploaded: s.get(&s.uploaded),
        bytes_uploaded: s.get(&s.bytes),
        objects_skipped: s.get(&s.skipped),
        retries: s.get(&s.retries),
        reindex: reindexed,
        change_list: p.changes.snapshot(),
    };
    rec.metric("objects_uploaded", report.objects_uploaded)
        .metric("bytes_uploaded", report.bytes_uploaded)
        .metric("objects_skipped", report.objects_skipped)
        .metric("retries", report.retries)
        .metric("changes", report.change_list.changes.len() as u64);
    let path = match (&cli.change_list, &cli.results.results_dir) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => Some(dir.join(format!(
            "sf-publish-changes-{}.json",
            sf_core::fsutil::random_hex(4)?
        ))),
        (None, None) => None,
    };
    if let Some(path) = &path {
        report.change_list.write(path)?;
        rec.output("change_list", path.display().to_string());
    }
    let mut outputs = vec![
        ("changes", report.change_list.changes.len().to_string()),
        ("uploaded", report.objects_uploaded.to_string()),
    ];
    if let Some(path) = &path {
        outputs.push(("change-list", path.display().to_string()));
    }
    let pairs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    gha.set_outputs(&pairs).context("writing GITHUB_OUTPUT")?;
    outcome?;
    print_json(&report)
}

fn print_json(v: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Read a file, or stdin for `-`.
pub fn read_file_or_stdin(arg: &str) -> Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(Path::new(arg)).map_err(|e| bad_input(format!("{arg}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directory_that_is_not_there_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().display().to_string();
        let gone = dir.path().join("typo").display().to_string();
        let parse = |p: &str| Destination::parse(&format!("file://{p}")).unwrap();
        assert_eq!(missing_dir(&parse(&there)), None);
        assert_eq!(missing_dir(&parse(&gone)), Some(gone.as_str()));
        // A file where the directory should be holds no store either.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let file = dir.path().join("file").display().to_string();
        assert_eq!(missing_dir(&parse(&file)), Some(file.as_str()));
        assert_eq!(
            missing_dir(&Destination::parse("s3://some-bucket/x").unwrap()),
            None
        );
        assert!(!dir.path().join("typo").exists());
    }
}
