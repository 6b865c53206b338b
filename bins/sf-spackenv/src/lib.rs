//! `sf-spackenv`: for one matrix cell, write everything its build container needs: the Spack
//! environment (`spack.yaml`), the build image's recipe (`Dockerfile`), the script the container
//! runs (`build.sh`) and, when the cell builds Slurm, the relocatable Lmod modulefile
//! (`modules/slurm/{version}-{toolchain}.lua`).
//!
//! The cell comes from `sf-matrix` (`--cell FILE|-`) or from flags; either way it is checked
//! against the support-matrix data file. Pins (Spack, package repositories, package versions) come
//! from `data/spack-stack.yaml`. Output is deterministic: the same cell and data give the same
//! bytes. Plan first, then write: `--dry-run` lists the plan, `--print` shows one file of it.

pub mod cell;
pub mod inputs;
pub mod plan;
pub mod render;
pub mod spack_yaml;
pub mod stack;
pub mod template;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::json;

use sf_core::bad_input;
use sf_core::cli::{MatrixFileArgs, ResultsArgs, StorageArgs};
use sf_core::env;
use sf_core::exit::ResultExt;
use sf_core::gha::Actions;
use sf_core::matrix::Pipeline;
use sf_core::record::{Artifact, Recorder};

use crate::cell::CheckedCell;
use crate::plan::{FileKind, Plan};
use crate::stack::Stack;

#[derive(Parser, Debug)]
#[command(
    name = "sf-spackenv",
    version,
    about = "Write the Spack environment, build script, modulefile and container recipe for one matrix cell.",
    after_help = "The cell is `--cell FILE|-|JSON` (as sf-matrix prints it: one cell, or {\"include\":[cell]}), \
                  or --pipeline with --toolchain [--slurm-version --arch --build]. Mirror URLs come from \
                  the cell and must be where the layout puts them; --destination and --cdn-url, when \
                  given, must agree with a cell's. Files go to \
                  --out DIR; --print shows one of them on stdout; --dry-run lists them."
)]
pub struct Cli {
    /// The cell as sf-matrix prints it: a JSON file, `-` for stdin, or the JSON itself.
    #[arg(long, env = env::CELL, value_name = "FILE|-|JSON", conflicts_with_all = ["slurm_version", "toolchain", "arch", "build"])]
    pub cell: Option<String>,
    /// Without --cell: the pipeline (deps, version, tarball).
    #[arg(long)]
    pub pipeline: Option<Pipeline>,
    /// Without --cell: the Slurm version (not for deps).
    #[arg(long, value_name = "VERSION")]
    pub slurm_version: Option<String>,
    /// Without --cell: the toolchain.
    #[arg(long)]
    pub toolchain: Option<String>,
    /// Without --cell: the architecture [default: the data file's default]
    #[arg(long)]
    pub arch: Option<String>,
    /// Without --cell: the build kind, cpu or gpu [default: the data file's default]
    #[arg(long)]
    pub build: Option<String>,
    /// Parallel build jobs, rendered into spack.yaml's `config:build_jobs` and the build
    /// script's default [default: this machine's cores: sf-spackenv runs on the runner that builds]
    #[arg(long, env = env::BUILD_JOBS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub build_jobs: Option<u32>,
    /// Directory to write the files into (created if missing).
    #[arg(long, env = env::OUT_DIR, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print one file to stdout and write nothing.
    #[arg(long, value_enum, value_name = "FILE", conflicts_with = "dry_run")]
    pub print: Option<FileKind>,
    /// List what would be written (JSON on stdout) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stack data file (pins) to use instead of the embedded one.
    #[arg(long, env = env::STACK_FILE, value_name = "FILE")]
    pub stack_file: Option<PathBuf>,
    #[command(flatten)]
    pub local_inputs: stack::LocalInputArgs,
    #[command(flatten)]
    pub matrix_file: MatrixFileArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub results: ResultsArgs,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| run(cli, &Actions::from_env())),
        Err(code) => code,
    }
}

/// The cell the CLI names, checked against the data file.
pub fn resolve_cell(cli: &Cli) -> Result<CheckedCell> {
    let m = cli.matrix_file.load()?;
    match &cli.cell {
        Some(source) => {
            let (text, origin) = sf_core::layout::read_cell_source(source)?;
            // Storage flags or env, when given, must agree with the cell's own locations.
            let storage = cell::Storage {
                templates: cli.storage.layout()?.templates,
                destination: cli.storage.destination.clone(),
                cdn_url: cli.storage.cdn_url.clone(),
            };
            let checked = cell::check_with(&m, cell::parse_cell(&text, &origin)?, &storage)
                .with_context(|| format!("checking the cell from {origin}"))?;
            if let Some(p) = cli.pipeline {
                if p != checked.pipeline {
                    return Err(bad_input(format!(
                        "--pipeline {p} disagrees with the cell's pipeline {}",
                        checked.pipeline
                    )));
                }
            }
            Ok(checked)
        }
        None => {
            let (Some(pipeline), Some(toolchain)) = (cli.pipeline, cli.toolchain.as_deref()) else {
                return Err(bad_input(
                    "no cell: give --cell FILE|- (from sf-matrix), or --pipeline and --toolchain",
                ));
            };
            let layout = cli.storage.layout()?;
            cell::from_flags(
                &m,
                &layout,
                pipeline,
                cli.slurm_version.as_deref(),
                toolchain,
                cli.arch.as_deref(),
                cli.build.as_deref(),
            )
        }
    }
}

/// One entry of the JSON listing.
#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub kind: FileKind,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The build image tag for a Dockerfile: the toolchain and the recipe's digest, so an unchanged
/// recipe reuses its image and a changed one never does.
pub fn image_tag(cell: &CheckedCell, dockerfile_sha256: &str) -> String {
    format!(
        "slurm-factory-build:{}-{}",
        cell.cell.toolchain,
        &dockerfile_sha256[..12]
    )
}

fn listing(plan: &Plan, out: Option<&Path>) -> Vec<FileEntry> {
    plan.files
        .iter()
        .map(|f| FileEntry {
            kind: f.kind,
            path: match out {
                Some(o) => o.join(&f.rel_path).display().to_string(),
                None => f.rel_path.clone(),
            },
            size: f.bytes.len() as u64,
            sha256: f.sha256(),
        })
        .collect()
}

fn summary(plan: &Plan, stack: &Stack, out: Option<&Path>, dry_run: bool) -> serde_json::Value {
    let docker_sha = plan
        .file(FileKind::Dockerfile)
        .map(|f| f.sha256())
        .unwrap_or_default();
    json!({
        "cell": plan.cell.id(),
        "pipeline": plan.cell.pipeline,
        "dry_run": dry_run,
        "out_dir": out.map(|o| o.display().to_string()),
        "files": listing(plan, out),
        "image_tag": image_tag(&plan.cell, &docker_sha),
        "spack": { "release": stack.spack.release, "commit": stack.spack.commit },
        "container": sf_core::container::PATHS,
    })
}

/// What a successful run did.
enum Done {
    /// Files were written: the run is recorded.
    Wrote,
    /// `--print` or `--dry-run`: nothing changed, nothing to record.
    Shown,
}

/// Run with a given Actions context (tests pass their own). A run that writes files leaves a
/// result record in `--results-dir`; so does every failed run (bad input included), with
/// `status: failed` and the error, so a matrix job that stopped early still has its row.
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    let mut rec = Recorder::start("sf-spackenv");
    match generate(&cli, gha, &mut rec) {
        Ok(Done::Wrote) => {
            rec.finish(cli.results.results_dir.as_deref())?;
            Ok(())
        }
        Ok(Done::Shown) => Ok(()),
        Err(err) => {
            rec.fail(&err, None);
            // The failure is what gets reported; a record that cannot be written must not hide it.
            let _ = rec.finish(cli.results.results_dir.as_deref());
            Err(err)
        }
    }
}

fn generate(cli: &Cli, gha: &Actions, rec: &mut Recorder) -> Result<Done> {
    let stack = cli
        .local_inputs
        .apply(Stack::load(cli.stack_file.as_deref())?)?;
    let checked = resolve_cell(cli)?;
    rec.record.cell = Some(checked.id().to_string());
    let options = plan::Options {
        build_jobs: cli
            .build_jobs
            .unwrap_or_else(plan::Options::this_machines_cores),
    };
    let plan = plan::plan(&checked, &stack, &options)?;

    if let Some(kind) = cli.print {
        let file = plan.file(kind).ok_or_else(|| {
            bad_input(format!(
                "cell {} builds no Slurm, so it has no {}",
                checked.id(),
                kind.as_str()
            ))
        })?;
        let mut out = std::io::stdout().lock();
        out.write_all(&file.bytes)?;
        out.flush()?;
        return Ok(Done::Shown);
    }
    if cli.dry_run {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &summary(&plan, &stack, cli.out.as_deref(), true))?;
        writeln!(out)?;
        return Ok(Done::Shown);
    }
    let Some(out_dir) = cli.out.as_deref() else {
        return Err(bad_input(
            "nowhere to write: give --out DIR (or --print FILE, or --dry-run)",
        ));
    };

    rec.record.cell_data = serde_json::to_value(&checked.cell).ok();
    rec.input("pipeline", checked.pipeline.as_str())
        .input("out_dir", out_dir.display().to_string());
    rec.input("spack_commit", stack.spack.commit.as_str())
        .input("build_jobs", options.build_jobs);

    let docker_sha = plan
        .file(FileKind::Dockerfile)
        .map(|f| f.sha256())
        .unwrap_or_default();
    let tag = image_tag(&checked, &docker_sha);
    let mut outputs: Vec<(String, String)> = vec![
        ("cell".into(), checked.id().to_string()),
        ("out_dir".into(), out_dir.display().to_string()),
        ("image_tag".into(), tag.clone()),
    ];
    for file in &plan.files {
        // The inputs are many files: their folder is the one output.
        let path = match file.kind {
            FileKind::Input => out_dir.join(inputs::INPUTS_DIR),
            _ => out_dir.join(&file.rel_path),
        };
        let entry = (file.kind.output_name().into(), path.display().to_string());
        if !outputs.contains(&entry) {
            outputs.push(entry);
        }
    }
    let pairs: Vec<(&str, &str)> = outputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // GITHUB_OUTPUT is written while the files can still be taken back: either both land, or
    // neither does.
    let written = plan.write_then(out_dir, |_| {
        gha.set_outputs(&pairs).bad_input(format!(
            "{}: cannot write the step outputs",
            sf_core::env::GITHUB_OUTPUT
        ))
    })?;
    gha.log(&format!(
        "sf-spackenv: wrote {} files for {} into {}",
        written.len(),
        checked.id(),
        out_dir.display()
    ));
    for (file, path) in plan.files.iter().zip(&written) {
        rec.record.artifacts.push(Artifact {
            kind: file.kind.as_str().into(),
            path: Some(path.display().to_string()),
            size: Some(file.bytes.len() as u64),
            sha256: Some(file.sha256()),
            ..Default::default()
        });
    }
    for (k, v) in &outputs {
        rec.output(k, v);
    }
    rec.metric("files", written.len() as u64);

    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &summary(&plan, &stack, Some(out_dir), false))?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(Done::Wrote)
}
