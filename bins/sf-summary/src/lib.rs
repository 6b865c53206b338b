//! `sf-summary`: the last step of every pipeline. Gathers the result records of all matrix jobs
//! into one Markdown job summary (or merged JSON), posts it as a check run on the commit, and
//! with `catalog DEST` lists what a destination holds, optionally as a GitHub release.
//!
//! A summary never fails a pipeline whose work succeeded: problems talking to GitHub or writing the
//! job summary are warnings, unless `--strict`; so are result files it cannot use (not JSON,
//! another schema version, fields that do not parse), which the summary also counts.

pub mod catalog;
pub mod github;
pub mod markdown;
pub mod records;
pub mod report;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sf_core::cli::{ResultsArgs, StorageArgs};
use sf_core::env;
use sf_core::gha::{Actions, SUMMARY_LIMIT};
use sf_core::record::Recorder;

use crate::github::{GitHub, RepoSlug, RetryPolicy};

#[derive(Parser, Debug)]
#[command(
    name = "sf-summary",
    version,
    about = "The deployment summary: result records in, Markdown job summary (or JSON) out; `catalog` lists a destination.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List what a bucket or directory holds (tarballs, mirrors), as Markdown or JSON; with
    /// --release, also as a GitHub release.
    Catalog(CatalogArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Markdown,
    Json,
}

/// GitHub settings. The token comes from `GITHUB_TOKEN` only, never a flag.
#[derive(Args, Debug, Clone)]
pub struct GitHubArgs {
    /// GitHub REST API base URL.
    #[arg(long, env = env::GITHUB_API_URL, default_value = github::DEFAULT_API_URL, value_name = "URL")]
    pub github_api_url: String,
    /// Repository (owner/name) for check runs and releases.
    #[arg(long, env = env::GITHUB_REPOSITORY, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// Fail the step (instead of warning) when GitHub or the job summary cannot be written, or a
    /// cell failed.
    #[arg(long)]
    pub strict: bool,
    /// Tries per GitHub call.
    #[arg(long, default_value_t = 5, hide = true)]
    pub github_attempts: u32,
    /// First backoff after a GitHub server error (doubles per try).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, hide = true)]
    pub github_backoff: Duration,
    /// Longest rate-limit wait to accept before giving up.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, hide = true)]
    pub github_max_wait: Duration,
}

impl GitHubArgs {
    /// A client when `GITHUB_TOKEN` and a repository are set; the token is masked first.
    fn client(&self, gha: &Actions) -> Result<Option<GitHub>> {
        let token = match std::env::var(env::GITHUB_TOKEN) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => return Ok(None),
        };
        gha.mask(&token);
        let Some(repo) = &self.repo else {
            gha.warning("GITHUB_TOKEN is set but no repository (--repo / GITHUB_REPOSITORY): nothing posted to GitHub", None);
            return Ok(None);
        };
        let policy = RetryPolicy {
            attempts: self.github_attempts.max(1),
            backoff: self.github_backoff,
            max_wait: self.github_max_wait,
        };
        Ok(Some(GitHub::new(
            &self.github_api_url,
            &token,
            RepoSlug::parse(repo)?,
            policy,
        )?))
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directories holding result records, searched recursively (one per downloaded artifact is fine).
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// What stdout gets: the Markdown summary or the merged data.
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    pub format: Format,
    /// Heading of the summary.
    #[arg(long, default_value = "Slurm Factory deployment")]
    pub title: String,
    /// Commit for the check run.
    #[arg(long, env = env::GITHUB_SHA, value_name = "SHA")]
    pub sha: Option<String>,
    /// Name of the check run.
    #[arg(long, default_value = "Slurm Factory deployment")]
    pub check_name: String,
    /// Do not post a check run even with a token.
    #[arg(long)]
    pub no_check_run: bool,
    #[command(flatten)]
    pub github: GitHubArgs,
    #[command(flatten)]
    pub results: ResultsArgs,
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    /// What to list: s3://bucket[/prefix] or file:///dir [default: --destination].
    #[arg(value_name = "DEST")]
    pub dest: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    pub format: Format,
    /// Create or update the GitHub release of this tag: notes are the catalog, assets every
    /// SHA256SUMS and its signature.
    #[arg(long, value_name = "TAG")]
    pub release: Option<String>,
    /// Title of the release [default: the tag].
    #[arg(long, value_name = "NAME")]
    pub release_name: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Region, endpoint override and retries for an s3:// destination.
    #[command(flatten)]
    pub aws: sf_aws::AwsArgs,
    #[command(flatten)]
    pub github: GitHubArgs,
    #[command(flatten)]
    pub results: ResultsArgs,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // octocrab's TLS uses ring and the AWS SDK's aws-lc-rs; with both linked rustls cannot pick
    // one by itself, so name it once, before any client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| run(cli, &Actions::from_env())),
        Err(code) => code,
    }
}

/// Run with a given Actions context.
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    match cli.command {
        Some(Command::Catalog(args)) => run_catalog(args, gha),
        None => run_report(cli.report, gha),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Problems that are warnings unless `--strict`.
#[derive(Default)]
struct Soft {
    strict: bool,
    first: Option<anyhow::Error>,
}

impl Soft {
    fn report(&mut self, gha: &Actions, err: anyhow::Error) {
        gha.warning(&format!("{err:#}"), None);
        if self.strict && self.first.is_none() {
            self.first = Some(err);
        }
    }
}

fn run_report(args: ReportArgs, gha: &Actions) -> Result<()> {
    let mut rec = Recorder::start("sf-summary");
    if args.dirs.is_empty() {
        return Err(sf_core::bad_input(
            "give at least one directory of result records (DIR...)",
        ));
    }
    rec.input("dirs", &args.dirs);
    let gathered = records::gather(&args.dirs)?;
    // A file that is not JSON is most likely a record cut short: never dropped in silence.
    for (path, why) in &gathered.unreadable {
        gha.warning(
            &format!("{} left out of the summary: {why}", path.display()),
            None,
        );
    }
    if args.github.strict {
        if let Some((path, why)) = gathered.unreadable.first() {
            return Err(sf_core::bad_input(format!(
                "{} of the result files cannot be read or are of another schema version (--strict), e.g. {}: {why}",
                gathered.unreadable.len(),
                path.display()
            )));
        }
    }
    let loaded = gathered.records;
    let mut report = report::build(&loaded);
    report.files_left_out = gathered.unreadable.len() as u64;
    let limit = SUMMARY_LIMIT as usize;
    let rendered = markdown::render_fitting(&report, &args.title, limit);
    let mut soft = Soft {
        strict: args.github.strict,
        first: None,
    };
    if rendered.cells_omitted > 0 {
        gha.warning(
            &format!(
                "the summary shows {} of {} cells, to stay within GitHub's 1 MiB job-summary limit",
                rendered.cells_shown, report.totals.cells
            ),
            None,
        );
    }

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Markdown => out.write_all(rendered.markdown.as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    drop(out);

    // The step summary may already hold text from earlier in this step: fit what is left.
    if let Some(file) = &gha.summary_file {
        let used = std::fs::metadata(file)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let fitted = if used + rendered.markdown.len() <= limit {
            rendered.markdown.clone()
        } else {
            markdown::render_fitting(&report, &args.title, limit.saturating_sub(used)).markdown
        };
        if let Err(e) = gha.append_summary(&fitted) {
            soft.report(
                gha,
                anyhow::Error::new(e).context("appending to GITHUB_STEP_SUMMARY"),
            );
        }
    }

    let mut check_url = String::new();
    if !args.no_check_run {
        let posted = (|| -> Result<Option<github::CheckRun>> {
            // octocrab's client spawns onto the runtime it is built in.
            let rt = runtime()?;
            let _in_runtime = rt.enter();
            let Some(gh) = args.github.client(gha)? else {
                return Ok(None);
            };
            let Some(sha) = args.sha.as_deref().map(str::trim) else {
                gha.warning(
                    "GITHUB_TOKEN is set but no commit (--sha / GITHUB_SHA): no check run posted",
                    None,
                );
                return Ok(None);
            };
            if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(sf_core::bad_input(format!(
                    "--sha {sha:?} is not a 40-character commit id"
                )));
            }
            let t = &report.totals;
            let conclusion = if t.failed > 0 {
                "failure"
            } else if t.succeeded > 0 {
                "success"
            } else {
                "neutral"
            };
            let title = format!(
                "{} succeeded, {} failed, {} skipped",
                t.succeeded, t.failed, t.skipped
            );
            let text = markdown::render_fitting(&report, &args.title, github::CHECK_RUN_TEXT_LIMIT)
                .markdown;
            let run =
                rt.block_on(gh.create_check_run(&args.check_name, sha, conclusion, &title, &text))?;
            rec.metric(
                "github_retries",
                gh.retries.load(std::sync::atomic::Ordering::Relaxed),
            );
            Ok(Some(run))
        })();
        match posted {
            Ok(Some(run)) => {
                gha.log(&format!("check run {} posted: {}", run.id, run.html_url));
                check_url = run.html_url;
            }
            Ok(None) => {}
            Err(e) => soft.report(gha, github::classify(e.context("posting the check run"))),
        }
    }

    let t = &report.totals;
    let outputs = [
        ("cells", t.cells.to_string()),
        ("succeeded", t.succeeded.to_string()),
        ("failed", t.failed.to_string()),
        ("skipped", t.skipped.to_string()),
        ("summary-bytes", rendered.markdown.len().to_string()),
        ("check-run-url", check_url.clone()),
    ];
    let pairs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Err(e) = gha.set_outputs(&pairs) {
        soft.report(gha, anyhow::Error::new(e).context("writing GITHUB_OUTPUT"));
    }
    for (k, v) in &outputs {
        rec.output(k, v);
    }
    rec.metric("records", loaded.len() as u64)
        .metric("unreadable_files", gathered.unreadable.len() as u64)
        .metric("cells", t.cells)
        .metric("cells_failed", t.failed)
        .metric("cells_omitted", rendered.cells_omitted as u64)
        .metric("summary_bytes", rendered.markdown.len() as u64);
    if args.github.strict && t.failed > 0 && soft.first.is_none() {
        soft.first = Some(anyhow::anyhow!(
            "{} of {} cells failed (--strict)",
            t.failed,
            t.cells
        ));
    }
    if let Some(err) = soft.first {
        rec.fail(&err, None);
        rec.finish(args.results.results_dir.as_deref())?;
        return Err(err);
    }
    rec.finish(args.results.results_dir.as_deref())?;
    Ok(())
}

fn run_catalog(args: CatalogArgs, gha: &Actions) -> Result<()> {
    let mut rec = Recorder::start("sf-summary catalog");
    let mut storage = args.storage.clone();
    if args.dest.is_some() {
        storage.destination = args.dest.clone();
    }
    if storage.destination.is_none() {
        return Err(sf_core::bad_input("give the destination to list: DEST (s3://bucket[/prefix] or file:///dir) or --destination"));
    }
    let layout = storage.layout()?;
    rec.input("destination", layout.destination.to_string());
    let src = catalog::open(&layout.destination, &args.aws.settings()?)?;
    let cat = catalog::build(src.as_ref(), &layout)?;
    let md = catalog::markdown(&cat, usize::MAX);

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Markdown => out.write_all(md.as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &cat)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    drop(out);

    let mut soft = Soft {
        strict: args.github.strict,
        first: None,
    };
    let mut release_url = String::new();
    if let Some(tag) = &args.release {
        let done = (|| -> Result<Option<github::Release>> {
            let rt = runtime()?;
            let _in_runtime = rt.enter();
            let Some(gh) = args.github.client(gha)? else {
                return Err(sf_core::bad_input("--release needs GITHUB_TOKEN in the environment and a repository (--repo / GITHUB_REPOSITORY)"));
            };
            let mut assets = Vec::new();
            for key in &cat.sums {
                for k in [key.clone(), sf_core::layout::Layout::signature_key(key)] {
                    if let Some(bytes) = src.read(&k)? {
                        assets.push((catalog::asset_name(&k), bytes));
                    }
                }
            }
            let notes = catalog::markdown_fitting(&cat, github::RELEASE_BODY_LIMIT);
            let name = args.release_name.clone().unwrap_or_else(|| tag.clone());
            let r = rt.block_on(gh.upsert_release(tag, &name, &notes, None, &assets))?;
            rec.metric(
                "github_retries",
                gh.retries.load(std::sync::atomic::Ordering::Relaxed),
            )
            .metric("release_assets_uploaded", r.assets.len() as u64)
            .metric("release_assets_unchanged", r.unchanged.len() as u64);
            Ok(Some(r))
        })();
        match done {
            Ok(Some(r)) => {
                gha.log(&format!(
                    "release {tag} {}: {} ({} assets uploaded, {} unchanged)",
                    if r.created { "created" } else { "updated" },
                    r.html_url,
                    r.assets.len(),
                    r.unchanged.len()
                ));
                release_url = r.html_url;
            }
            Ok(None) => {}
            Err(e) => soft.report(
                gha,
                github::classify(e.context(format!("publishing the release {tag}"))),
            ),
        }
    }
    let outputs = [
        ("tarballs", cat.tarballs.len().to_string()),
        ("mirrors", cat.mirrors.len().to_string()),
        ("release-url", release_url),
    ];
    let pairs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Err(e) = gha.set_outputs(&pairs) {
        soft.report(gha, anyhow::Error::new(e).context("writing GITHUB_OUTPUT"));
    }
    for (k, v) in &outputs {
        rec.output(k, v);
    }
    rec.metric("tarballs", cat.tarballs.len() as u64)
        .metric("mirrors", cat.mirrors.len() as u64);
    if let Some(err) = soft.first {
        rec.fail(&err, None);
        rec.finish(args.results.results_dir.as_deref())?;
        return Err(err);
    }
    rec.finish(args.results.results_dir.as_deref())?;
    Ok(())
}
