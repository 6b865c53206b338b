//! `sf-matrix`: turn workflow inputs (lists or `all` per axis, include/exclude selectors, the
//! pipeline) into the job matrix `{"include":[cell, ...]}` every later step reads.
//!
//! Past GitHub's 256 jobs per matrix, or 1 MB per output, the matrix is split into `matrix-1`,
//! `matrix-2`, ... outputs.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use sf_core::cli::{MatrixFileArgs, ResultsArgs, StorageArgs};
use sf_core::env;
use sf_core::gha::{Actions, OUTPUT_LIMIT};
use sf_core::layout::Cell;
use sf_core::matrix::{CellSelector, ListArg, Pipeline, Selection};
use sf_core::record::Recorder;

/// GitHub's limit of jobs in one matrix.
pub const MAX_JOBS_PER_MATRIX: u16 = 256;

#[derive(Parser, Debug)]
#[command(
    name = "sf-matrix",
    version,
    about = "Turn workflow inputs into the Slurm Factory job matrix (JSON on stdout)."
)]
pub struct Cli {
    /// Pipeline the matrix is for: deps (no Slurm version), version, tarball, image.
    #[arg(long, env = env::PIPELINE, default_value = "version")]
    pub pipeline: Pipeline,
    /// Slurm versions: `all` or a comma list [default: the data file's defaults]
    #[arg(long, env = env::SLURM_VERSIONS, value_name = "LIST")]
    pub slurm_versions: Option<String>,
    /// Toolchains: `all` or a comma list.
    #[arg(long, env = env::TOOLCHAINS, value_name = "LIST")]
    pub toolchains: Option<String>,
    /// Architectures: `all` or a comma list.
    #[arg(long, env = env::ARCHS, value_name = "LIST")]
    pub archs: Option<String>,
    /// Build kinds (cpu, gpu): `all` or a comma list.
    #[arg(long, env = env::BUILDS, value_name = "LIST")]
    pub builds: Option<String>,
    /// Add a cell: slurm=V,toolchain=T[,arch=A][,build=B]. Repeatable; in the env, `;`-separated.
    #[arg(long, env = env::INCLUDE, value_name = "SELECTOR")]
    pub include: Vec<String>,
    /// Leave out matching cells: any of slurm=,toolchain=,arch=,build=. Repeatable.
    #[arg(long, env = env::EXCLUDE, value_name = "SELECTOR")]
    pub exclude: Vec<String>,
    /// Output format on stdout.
    #[arg(long, env = env::FORMAT, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Largest matrix per output (GitHub allows 256 jobs per matrix).
    #[arg(long, default_value_t = MAX_JOBS_PER_MATRIX, hide = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_cells: u16,
    /// Leave out the cells `sf-publish status` reports as published (its JSON, FILE or `-`).
    #[arg(long, value_name = "FILE|-")]
    pub skip_published: Option<String>,
    #[command(flatten)]
    pub matrix_file: MatrixFileArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub results: ResultsArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// The matrix as GitHub's `strategy.matrix` reads it.
#[derive(Debug, Serialize)]
pub struct Matrix<'a> {
    pub include: &'a [Cell],
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| run(cli, &Actions::from_env())),
        Err(code) => code,
    }
}

/// Build the cells the CLI asks for.
pub fn plan(cli: &Cli) -> Result<Vec<Cell>> {
    let m = cli.matrix_file.load()?;
    let layout = cli.storage.layout()?;
    let list =
        |axis: &str, v: &Option<String>| v.as_deref().map(|s| ListArg::parse(axis, s)).transpose();
    let selection = Selection {
        slurm_versions: list("--slurm-versions", &cli.slurm_versions)?.unwrap_or_default(),
        toolchains: list("--toolchains", &cli.toolchains)?.unwrap_or_default(),
        archs: list("--archs", &cli.archs)?.unwrap_or_default(),
        builds: list("--builds", &cli.builds)?.unwrap_or_default(),
        include: CellSelector::parse_many(&m, &cli.include).context("--include")?,
        exclude: CellSelector::parse_many(&m, &cli.exclude).context("--exclude")?,
    };
    let keys = selection.expand(&m, cli.pipeline)?;
    Ok(keys.iter().map(|k| layout.cell(&m, k)).collect())
}

/// The ids `sf-publish status` listed under `published`, read from a file or stdin (`-`).
pub fn published_ids(src: &str) -> Result<std::collections::BTreeSet<String>> {
    use std::io::Read;
    let text = if src == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the publish status from stdin")?;
        s
    } else {
        std::fs::read_to_string(src)
            .map_err(|e| sf_core::bad_input(format!("--skip-published {src}: {e}")))?
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        sf_core::bad_input(format!(
            "--skip-published: not JSON ({e}); expected the output of `sf-publish status`"
        ))
    })?;
    let list = v.get("published").and_then(|p| p.as_array()).ok_or_else(|| {
        sf_core::bad_input("--skip-published: no \"published\" list; expected the output of `sf-publish status`")
    })?;
    list.iter()
        .map(|c| {
            c.get("id")
                .and_then(|i| i.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    sf_core::bad_input("--skip-published: a published entry has no \"id\"")
                })
        })
        .collect()
}

/// Split cells into matrices of at most `max` cells whose compact JSON fits one output.
pub fn split(cells: &[Cell], max: usize) -> Result<Vec<String>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < cells.len() {
        let mut end = (start + max).min(cells.len());
        loop {
            let json = serde_json::to_string(&Matrix {
                include: &cells[start..end],
            })?;
            if json.len() <= OUTPUT_LIMIT {
                chunks.push(json);
                break;
            }
            if end - start == 1 {
                anyhow::bail!(
                    "cell {} alone is over GitHub's 1 MB output limit",
                    cells[start].id
                );
            }
            end = start + (end - start) / 2;
        }
        start = end;
    }
    Ok(chunks)
}

/// Run with a given Actions context (tests pass their own).
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    let mut rec = Recorder::start("sf-matrix");
    rec.input("pipeline", cli.pipeline.as_str());
    let mut cells = plan(&cli)?;
    if let Some(src) = &cli.skip_published {
        let published = published_ids(src)?;
        let before = cells.len();
        cells.retain(|c| !published.contains(&c.id));
        rec.metric("skipped_published", (before - cells.len()) as u64);
    }
    let chunks = split(&cells, usize::from(cli.max_cells))?;

    // Outputs are computed whole before anything is written, so bad input writes nothing.
    let count = cells.len().to_string();
    let mut outputs: Vec<(String, String)> = vec![
        ("count".into(), count.clone()),
        ("chunks".into(), chunks.len().to_string()),
    ];
    if chunks.len() == 1 {
        outputs.push(("matrix".into(), chunks[0].clone()));
    } else {
        gha.warning(
            &format!(
                "{} cells split into {} matrices (matrix-1..matrix-{}): GitHub runs at most {} jobs per matrix",
                cells.len(),
                chunks.len(),
                chunks.len(),
                cli.max_cells
            ),
            None,
        );
    }
    for (i, c) in chunks.iter().enumerate() {
        outputs.push((format!("matrix-{}", i + 1), c.clone()));
    }
    let pairs: Vec<(&str, &str)> = outputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    gha.set_outputs(&pairs).context("writing GITHUB_OUTPUT")?;

    let mut out = std::io::stdout().lock();
    match cli.format {
        Format::Json => {
            serde_json::to_writer(&mut out, &Matrix { include: &cells })?;
            writeln!(out)?;
        }
        Format::Table => write!(out, "{}", table(&cells))?,
    }
    out.flush()?;

    rec.output("count", cells.len())
        .output("chunks", chunks.len());
    rec.metric("cells", cells.len() as u64);
    rec.finish_step(cli.results.results_dir.as_deref(), gha)?;
    Ok(())
}

/// A plain-text table for people.
pub fn table(cells: &[Cell]) -> String {
    let header = [
        "id",
        "slurm",
        "spack version",
        "toolchain",
        "image",
        "arch",
        "target",
        "build",
        "runner",
    ];
    let rows: Vec<[String; 9]> = cells
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                c.slurm_version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                c.slurm_spack_version.clone().unwrap_or_else(|| "-".into()),
                c.toolchain.to_string(),
                c.base_image.clone(),
                c.arch.to_string(),
                c.spack_target.clone(),
                c.build.to_string(),
                c.runner_labels.join(","),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cols: Vec<&str>| {
        let mut s = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out.push_str(&format!("{} cells\n", cells.len()));
    out
}
