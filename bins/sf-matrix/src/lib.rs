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
    #[arg(long, env = env::SKIP_PUBLISHED, value_name = "FILE|-")]
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

/// The cells the CLI asks for, and the excludes that left nothing out.
#[derive(Debug)]
pub struct Plan {
    pub cells: Vec<Cell>,
    /// Exclude selectors that match none of the selected cells, as written (`arch=arm64`).
    pub idle_excludes: Vec<String>,
}

/// Build the cells the CLI asks for.
pub fn plan(cli: &Cli) -> Result<Plan> {
    let m = cli.matrix_file.load()?;
    let layout = cli.storage.layout()?;
    let list = |axis: &str, v: &Option<String>, valid: Vec<&str>| {
        v.as_deref()
            .map(|s| ListArg::parse_among(axis, s, &valid))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let selection = Selection {
        slurm_versions: list(
            "--slurm-versions",
            &cli.slurm_versions,
            m.slurm_version_names(),
        )?,
        toolchains: list("--toolchains", &cli.toolchains, m.toolchain_names())?,
        archs: list("--archs", &cli.archs, m.arch_names())?,
        builds: list("--builds", &cli.builds, m.build_names())?,
        include: CellSelector::parse_many(&m, &cli.include).context("--include")?,
        exclude: CellSelector::parse_many(&m, &cli.exclude).context("--exclude")?,
    };
    let expansion = selection.expansion(&m, cli.pipeline)?;
    let idle_excludes = expansion
        .unmatched_excludes
        .iter()
        .map(|e| e.to_string())
        .collect();
    Ok(Plan {
        cells: expansion.cells.iter().map(|k| layout.cell(&m, k)).collect(),
        idle_excludes,
    })
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

/// The matrices one run writes, and why there is more than one.
#[derive(Debug)]
pub struct Split {
    /// Compact `{"include":[...]}` JSON of each matrix, in cell order.
    pub chunks: Vec<String>,
    /// How many cells each matrix holds.
    pub sizes: Vec<usize>,
    /// More cells than one matrix may hold (GitHub: 256 jobs).
    pub over_jobs: bool,
    /// A matrix of that many cells would not fit one output (GitHub: 1 MB).
    pub over_bytes: bool,
}

impl Split {
    /// Why the cells were split, for the warning; `None` when they fit one matrix.
    pub fn cause(&self, max: usize) -> Option<String> {
        let mut why = Vec::new();
        if self.over_jobs {
            why.push(format!("GitHub runs at most {max} jobs per matrix"));
        }
        if self.over_bytes {
            why.push(format!(
                "one output holds at most {OUTPUT_LIMIT} bytes and the cells' JSON is larger"
            ));
        }
        (!why.is_empty()).then(|| why.join(", and "))
    }
}

/// Split cells into matrices of at most `max` cells whose compact JSON fits one output, each as
/// large as it can be. No cells give one empty matrix, so `matrix` is always written.
pub fn split(cells: &[Cell], max: usize) -> Result<Split> {
    let json = |part: &[Cell]| serde_json::to_string(&Matrix { include: part });
    let mut out = Split {
        chunks: Vec::new(),
        sizes: Vec::new(),
        over_jobs: cells.len() > max,
        over_bytes: false,
    };
    if cells.is_empty() {
        out.chunks.push(json(cells)?);
        out.sizes.push(0);
        return Ok(out);
    }
    let mut start = 0;
    while start < cells.len() {
        let end = (start + max).min(cells.len());
        let whole = json(&cells[start..end])?;
        let (end, text) = if whole.len() <= OUTPUT_LIMIT {
            (end, whole)
        } else {
            out.over_bytes = true;
            // The JSON grows with every cell: the longest prefix that fits, by bisection.
            // cells[start..lo] fits (trivially when lo == start); cells[start..hi] does not.
            let (mut lo, mut hi) = (start, end);
            let mut best = None;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let t = json(&cells[start..mid])?;
                if t.len() <= OUTPUT_LIMIT {
                    lo = mid;
                    best = Some(t);
                } else {
                    hi = mid;
                }
            }
            // Nothing fitted: hi is start + 1, the first cell on its own.
            let t = best.ok_or_else(|| {
                sf_core::bad_input(format!(
                    "cell {} alone is over GitHub's {OUTPUT_LIMIT}-byte output limit; shorten --cdn-url / --destination",
                    cells[start].id
                ))
            })?;
            (lo, t)
        };
        out.sizes.push(end - start);
        out.chunks.push(text);
        start = end;
    }
    Ok(out)
}

/// Run with a given Actions context (tests pass their own).
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    // A results folder that cannot take the record is found before anything is printed.
    let results_dir = cli.results.prepare()?;
    let mut rec = Recorder::start("sf-matrix");
    // What was asked, as given (null: the data file's defaults), so the record explains the matrix.
    rec.input("pipeline", cli.pipeline.as_str())
        .input("slurm_versions", &cli.slurm_versions)
        .input("toolchains", &cli.toolchains)
        .input("archs", &cli.archs)
        .input("builds", &cli.builds)
        .input("include", &cli.include)
        .input("exclude", &cli.exclude)
        .input("skip_published", &cli.skip_published);
    let Plan {
        mut cells,
        idle_excludes,
    } = plan(&cli)?;
    for e in &idle_excludes {
        gha.warning(
            &format!(
                "--exclude {e} matches none of the {} selected cells; it leaves nothing out",
                cells.len()
            ),
            None,
        );
    }
    if let Some(src) = &cli.skip_published {
        let published = published_ids(src)?;
        let before = cells.len();
        cells.retain(|c| !published.contains(&c.id));
        rec.metric("skipped_published", (before - cells.len()) as u64);
    }
    let max = usize::from(cli.max_cells);
    let split = split(&cells, max)?;
    let chunks = &split.chunks;

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
                "{} cells split into {} matrices (matrix-1..matrix-{}): {}",
                cells.len(),
                chunks.len(),
                chunks.len(),
                split.cause(max).unwrap_or_default()
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
    rec.finish_step(results_dir, gha)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::layout::{Layout, Templates};
    use sf_core::matrix::SupportMatrix;

    /// Every tarball cell of the embedded data file (72), under a CDN URL of `cdn_len` bytes.
    fn cells(cdn_len: usize) -> Vec<Cell> {
        let m = SupportMatrix::embedded();
        let mut cdn = "https://cdn.example.com/".to_string();
        cdn.push_str(&"p".repeat(cdn_len.saturating_sub(cdn.len())));
        let layout = Layout::new(None, Some(&cdn), Templates::default()).unwrap();
        let selection = Selection {
            slurm_versions: ListArg::All,
            toolchains: ListArg::All,
            archs: ListArg::All,
            builds: ListArg::All,
            include: vec![],
            exclude: vec![],
        };
        let keys = selection.expand(&m, Pipeline::Tarball).unwrap();
        keys.iter().map(|k| layout.cell(&m, k)).collect()
    }

    fn ids(split: &Split) -> Vec<String> {
        split
            .chunks
            .iter()
            .flat_map(|c| {
                let v: serde_json::Value = serde_json::from_str(c).unwrap();
                v["include"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn one_matrix_when_everything_fits() {
        let cells = cells(30);
        let s = split(&cells, 256).unwrap();
        assert_eq!(s.sizes, vec![72]);
        assert!(!s.over_jobs && !s.over_bytes && s.cause(256).is_none());
        assert_eq!(
            ids(&s),
            cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_job_limit_cuts_full_matrices_and_a_remainder() {
        let cells = cells(30);
        let s = split(&cells, 20).unwrap();
        assert_eq!(s.sizes, vec![20, 20, 20, 12]);
        assert!(s.over_jobs && !s.over_bytes);
        assert!(s.cause(20).unwrap().contains("at most 20 jobs"));
        assert_eq!(
            ids(&s),
            cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_byte_limit_fills_each_output_as_far_as_it_goes() {
        let cells = cells(20_000);
        let s = split(&cells, 256).unwrap();
        assert!(s.over_bytes && !s.over_jobs);
        assert!(s.cause(256).unwrap().contains("1000000 bytes"));
        assert!(s.chunks.len() > 1);
        for (i, c) in s.chunks.iter().enumerate() {
            assert!(
                c.len() <= OUTPUT_LIMIT,
                "matrix-{} is {} bytes",
                i + 1,
                c.len()
            );
            // As large as it can be: one more cell would not have fitted.
            if i + 1 < s.chunks.len() {
                let start: usize = s.sizes[..i].iter().sum();
                let grown = serde_json::to_string(&Matrix {
                    include: &cells[start..start + s.sizes[i] + 1],
                })
                .unwrap();
                assert!(grown.len() > OUTPUT_LIMIT);
            }
        }
        assert_eq!(s.sizes.iter().sum::<usize>(), 72);
        assert_eq!(
            ids(&s),
            cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn no_cells_give_one_empty_matrix() {
        let s = split(&[], 256).unwrap();
        assert_eq!(s.chunks, vec![r#"{"include":[]}"#.to_string()]);
        assert_eq!(s.sizes, vec![0]);
    }

    #[test]
    fn a_cell_over_the_limit_on_its_own_is_bad_input() {
        let cells = cells(300_000);
        let err = split(&cells, 256).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&err), 2);
        assert!(err.to_string().contains("alone is over"), "{err}");
    }
}
