//! `sf-invalidate`: invalidate exactly the CloudFront paths a publish changed.
//!
//! Input is the list of changed bucket keys (from `sf-publish`, or `--paths`); the plan
//! ([`plan`]) leaves out immutable blobs, URL-encodes the rest, collapses folders into wildcards
//! only when cheaper, and batches within CloudFront's in-flight limits; [`cdn`] carries it out with
//! a caller reference derived from the change list, so a retried step never invalidates twice.
//! `--dry-run` prints the plan and touches nothing.

pub mod cdn;
pub mod plan;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use sf_core::bad_input;
use sf_core::cli::{CellIdArgs, ResultsArgs, StorageArgs};
use sf_core::env;
use sf_core::exit::ResultExt;
use sf_core::gha::Actions;
use sf_core::record::Recorder;

use crate::plan::{Options, PathMap, Plan};

#[derive(Parser, Debug)]
#[command(
    name = "sf-invalidate",
    version,
    about = "Invalidate exactly the CloudFront paths a publish changed (JSON on stdout)."
)]
pub struct Cli {
    /// The change list sf-publish wrote (schema/change-list.schema.json).
    #[arg(long, value_name = "FILE")]
    pub change_list: Option<PathBuf>,
    /// Changed bucket keys, comma-separated or repeated.
    #[arg(long, value_name = "KEYS", value_delimiter = ',')]
    pub paths: Vec<String>,
    /// File with one changed key per line (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub paths_file: Option<PathBuf>,
    /// The CloudFront distribution in front of the bucket.
    #[arg(long, env = env::CLOUDFRONT_DISTRIBUTION_ID, value_name = "ID")]
    pub distribution_id: Option<String>,
    /// Where keys are served when the distribution's origin path is not the bucket root:
    /// KEY_PREFIX=PATH_PREFIX (e.g. `prod=/` for origin path `/prod`).
    #[arg(long, value_name = "KEY_PREFIX=PATH_PREFIX")]
    pub path_map: Option<String>,
    /// Collapse a folder into `folder/*` from this many changed paths on (2: whenever cheaper).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub min_wildcard_group: usize,
    /// Wait until every invalidation has completed.
    #[arg(long)]
    pub wait: bool,
    /// Longest time to wait, for completion and for room under CloudFront's in-flight limits.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// How often to ask CloudFront while waiting.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, hide = true)]
    pub poll_interval: Duration,
    /// Print the plan (paths and batches) and stop: no AWS calls.
    #[arg(long)]
    pub dry_run: bool,
    /// Region, endpoint override and retries, shared with sf-publish (CloudFront itself is global).
    #[command(flatten)]
    pub aws: sf_aws::AwsArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[command(flatten)]
    pub cell: CellIdArgs,
}

/// What stdout gets.
#[derive(Debug, Serialize)]
pub struct Output<'a> {
    pub distribution_id: Option<&'a str>,
    pub dry_run: bool,
    pub plan: &'a Plan,
    pub invalidations: &'a [cdn::Outcome],
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| run(cli, &Actions::from_env())),
        Err(code) => code,
    }
}

/// The changed keys the CLI names, and what identifies their content (the lines
/// [`plan::source_digest`] hashes into the caller reference): each change list entry's key and
/// sha256; for bare keys (`--paths`, `--paths-file`), the workflow run and attempt that publish
/// belongs to, since their content is not known.
pub fn keys(cli: &Cli) -> Result<(Vec<String>, Vec<String>)> {
    let mut keys: Vec<String> = Vec::new();
    let mut source: Vec<String> = Vec::new();
    if let Some(file) = &cli.change_list {
        for (key, sha256) in change_list_keys(file)? {
            source.push(format!("{key}\t{sha256}"));
            keys.push(key);
        }
    }
    let mut bare: Vec<String> = cli
        .paths
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(file) = &cli.paths_file {
        let text = if file.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading keys from stdin")?;
            s
        } else {
            std::fs::read_to_string(file).bad_input(format!("--paths-file {}", file.display()))?
        };
        bare.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    for k in keys.iter().chain(&bare) {
        if k.contains(['*', '?'])
            || k.chars().any(char::is_control)
            || k.split('/').any(|s| s == "..")
        {
            return Err(bad_input(format!("key {k:?} is not an object key (no wildcards, '..' or control characters); give the keys that changed")));
        }
    }
    if !bare.is_empty() {
        source.extend(bare.iter().map(|k| format!("{k}\t-")));
        source.push(format!("run\t{}", run_identity(cli.cell.get()?)));
        keys.extend(bare);
    }
    Ok((keys, source))
}

/// Which publish bare keys belong to: the workflow run, attempt and cell (a retried step keeps
/// them, a later run or re-run does not). Outside a workflow nothing says whether the content
/// changed since an earlier call, so each call gets its own.
fn run_identity(cell: Option<&str>) -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match var("GITHUB_RUN_ID") {
        Some(run) => format!(
            "{run}.{}.{}",
            var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into()),
            cell.unwrap_or("-")
        ),
        None => format!(
            "local.{}.{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ),
    }
}

/// The bucket keys of a change list with the sha256 of their new content: what a CDN in front of
/// the bucket root serves, immutable objects left out. A list of another schema version, or not
/// a change list, is bad input.
pub fn change_list_keys(file: &std::path::Path) -> Result<Vec<(String, String)>> {
    use sf_core::changes::{ChangeList, CHANGE_LIST_VERSION};
    let bytes = std::fs::read(file).bad_input(format!("--change-list {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .bad_input(format!("--change-list {} is not JSON", file.display()))?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(CHANGE_LIST_VERSION) => {}
        _ => {
            return Err(bad_input(format!(
                "--change-list {} is not a change list of schema version {CHANGE_LIST_VERSION} (schema/change-list.schema.json); give the file sf-publish wrote",
                file.display()
            )))
        }
    }
    let list: ChangeList = serde_json::from_value(value).bad_input(format!(
        "--change-list {}: not a change list (schema/change-list.schema.json)",
        file.display()
    ))?;
    Ok(list
        .changes
        .into_iter()
        .filter(|c| !c.immutable)
        .map(|c| (c.object_key, c.sha256))
        .collect())
}

/// A distribution id as CloudFront makes them: upper-case letters and digits.
fn check_distribution(id: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty()
        || id.len() > 32
        || !id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(bad_input(format!("distribution id {id:?} is not a CloudFront id (upper-case letters and digits, e.g. E2QWRUHAPOMQZL)")));
    }
    Ok(id.to_string())
}

/// The CloudFront client, configured by sf-aws like every AWS client of the project: the
/// standard credential chain (checked up front for a clear error), retries and timeouts.
async fn client(aws: &sf_aws::AwsArgs, cell: Option<&str>) -> Result<aws_sdk_cloudfront::Client> {
    let sdk = aws.settings_for_cell(cell)?.load().await?;
    sf_aws::require_credentials(&sdk).await?;
    Ok(aws_sdk_cloudfront::Client::new(&sdk))
}

/// An error met after this run created the invalidations `made`. Exit 2 promises that nothing
/// was changed, which is no longer true: bad input found now (a later batch's call denied, its
/// paths refused) is a failure of the work, exit 1, that names the invalidations made. Other
/// errors are left as they are (a timeout already names what it waited for).
fn after_changes(e: anyhow::Error, made: &[&str]) -> anyhow::Error {
    if sf_core::exit::code_for(&e) != 2 {
        return e;
    }
    let (noun, which) = if made.len() == 1 {
        ("invalidation", "it is")
    } else {
        ("invalidations", "they are")
    };
    sf_core::exit::after_changes(
        e,
        format!(
            "stopped after this run made {noun} {} (named in the outputs; {which} not undone)",
            made.join(", ")
        ),
    )
}

/// What a run that did its work prints.
struct Done {
    distribution: Option<String>,
    plan: Plan,
    outcomes: Vec<cdn::Outcome>,
}

/// Run with a given Actions context. Every error, bad input found before planning included,
/// ends in a failed result record, so the summary shows the step and why it stopped.
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    let mut rec = Recorder::start("sf-invalidate");
    let dir = cli.results.results_dir.clone();
    match invalidate(&cli, gha, &mut rec) {
        Ok(done) => {
            rec.finish_step(dir.as_deref(), gha)?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(
                &mut out,
                &Output {
                    distribution_id: done.distribution.as_deref(),
                    dry_run: cli.dry_run,
                    plan: &done.plan,
                    invalidations: &done.outcomes,
                },
            )?;
            writeln!(out)?;
            out.flush()?;
            Ok(())
        }
        Err(e) => {
            rec.fail(&e, None);
            // The failure is what gets reported; a record that cannot be written must not hide it.
            let _ = rec.finish_step(dir.as_deref(), gha);
            Err(e)
        }
    }
}

/// Plan, invalidate, and fill in the record's inputs, outputs and metrics.
fn invalidate(cli: &Cli, gha: &Actions, rec: &mut Recorder) -> Result<Done> {
    let cell = cli.cell.get()?;
    rec.record.cell = cell.map(str::to_string);
    let (keys, source) = keys(cli)?;
    let layout = cli.storage.layout()?;
    let map = match &cli.path_map {
        Some(m) => PathMap::parse(m)?,
        None => PathMap::default(),
    };
    let distribution = match (&cli.distribution_id, cli.dry_run) {
        (Some(d), _) => Some(check_distribution(d)?),
        (None, true) => None,
        (None, false) => {
            return Err(bad_input(format!(
                "give the distribution: --distribution-id or {}",
                env::CLOUDFRONT_DISTRIBUTION_ID
            )));
        }
    };
    let opts = Options {
        map,
        min_group: cli.min_wildcard_group,
        ..Options::default()
    };
    let plan = plan::plan(
        distribution.as_deref().unwrap_or("-"),
        &plan::source_digest(&source),
        &keys,
        &layout,
        &opts,
    );
    rec.input("keys", keys.len()).input("dry_run", cli.dry_run);
    if let Some(d) = &distribution {
        rec.input("distribution_id", d);
    }
    gha.log(&format!(
        "{} keys: {} blobs left out, {} paths to invalidate (from {} exact), {} {}",
        plan.keys,
        plan.blobs_skipped,
        plan.paths.len(),
        plan.exact_paths,
        plan.batches.len(),
        if plan.batches.len() == 1 {
            "batch"
        } else {
            "batches"
        }
    ));
    if !plan.unmapped.is_empty() {
        gha.warning(
            &format!(
                "{} keys are outside --path-map's key prefix and were left out, e.g. {}",
                plan.unmapped.len(),
                plan.unmapped[0]
            ),
            None,
        );
    }
    if plan.batches.len() > 1 {
        gha.warning(
            &format!(
                "{} paths need {} invalidations within CloudFront's limits ({} paths, {} wildcards in flight); each waits for the one before",
                plan.paths.len(),
                plan.batches.len(),
                plan::MAX_PATHS_IN_FLIGHT,
                plan::MAX_WILDCARDS_IN_FLIGHT
            ),
            None,
        );
    }

    let mut outcomes = Vec::new();
    let mut failed = None;
    if !cli.dry_run && !plan.batches.is_empty() {
        let d = distribution.clone().expect("checked above");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let waiting = cdn::Waiting {
            wait: cli.wait,
            timeout: cli.timeout,
            poll: cli.poll_interval,
        };
        let result = rt.block_on(async {
            let c = client(&cli.aws, cell).await?;
            cdn::execute(
                &c,
                &d,
                &plan.batches,
                waiting,
                &|m| gha.log(m),
                &mut outcomes,
            )
            .await
        });
        failed = result.err();
    }

    let ids: Vec<&str> = outcomes.iter().map(|o| o.id.as_str()).collect();
    let status = if cli.dry_run {
        "dry-run"
    } else if outcomes.is_empty() && failed.is_some() {
        "failed"
    } else if outcomes.is_empty() {
        "nothing-to-do"
    } else if outcomes.iter().all(|o| cdn::is_completed(&o.status)) && failed.is_none() {
        "Completed"
    } else {
        "InProgress"
    };
    // Outputs and record fields first: on a timeout or failure they still name the
    // invalidations already made, which go on in CloudFront.
    let paths_text = plan.paths.join("\n");
    let outputs = [
        ("invalidation-ids", ids.join(",")),
        ("status", status.to_string()),
        ("path-count", plan.paths.len().to_string()),
        ("paths", paths_text),
    ];
    let pairs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let written = gha.set_outputs(&pairs).context("writing GITHUB_OUTPUT");
    rec.output("invalidation_ids", &ids)
        .output("status", status)
        .output("paths", &plan.paths);
    rec.metric("keys", plan.keys as u64)
        .metric("blobs_skipped", plan.blobs_skipped as u64)
        .metric("paths", plan.paths.len() as u64)
        .metric("exact_paths", plan.exact_paths as u64)
        .metric("batches", plan.batches.len() as u64)
        .metric(
            "reused",
            outcomes.iter().filter(|o| o.reused).count() as u64,
        );
    if let Some(mut e) = failed {
        // Found again (made by an earlier run) is not a change this run made.
        let made: Vec<&str> = outcomes
            .iter()
            .filter(|o| !o.reused)
            .map(|o| o.id.as_str())
            .collect();
        if !made.is_empty() {
            e = after_changes(e, &made);
        }
        return Err(e);
    }
    written?;
    Ok(Done {
        distribution,
        plan,
        outcomes,
    })
}
