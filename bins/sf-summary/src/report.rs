//! The merged report: records grouped by pipeline and cell, one row per cell with the outcome of
//! all its steps, plus the steps that ran for no cell and the totals. This is what
//! `--format json` prints and what the Markdown is rendered from.

use std::collections::BTreeMap;

use serde::Serialize;
use sf_core::record::{Artifact, ResultRecord, Status};

use crate::records::LoadedRecord;

/// Schema of the merged JSON; bumped when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// Everything the summary shows.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub report_version: u32,
    pub totals: Totals,
    pub pipelines: Vec<PipelineReport>,
    /// Steps that ran for no matrix cell (the matrix itself, an invalidation).
    pub run_steps: Vec<StepOutcome>,
    /// Result files left out because they could not be read (not JSON, another schema version,
    /// fields that do not parse); each is also a warning.
    pub files_left_out: u64,
}

/// Counts over cells.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub cells: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Bytes of the cells' main artifacts.
    pub bytes: u64,
    /// Sum of step durations.
    pub duration_ms: u64,
}

impl Totals {
    fn add(&mut self, c: &CellReport) {
        self.cells += 1;
        match c.status {
            Status::Success => self.succeeded += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
        self.bytes += c.size.unwrap_or(0);
        self.duration_ms += c.duration_ms;
    }
}

/// One pipeline (deps, version, tarball, image).
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub pipeline: String,
    pub totals: Totals,
    /// Failed cells first, then the rest, each by id.
    pub cells: Vec<CellReport>,
}

/// One matrix cell across all the steps that ran for it.
#[derive(Clone, Debug, Serialize)]
pub struct CellReport {
    pub id: String,
    /// Failed if any step failed; success if any succeeded; else skipped.
    pub status: Status,
    pub slurm_version: Option<String>,
    pub toolchain: Option<String>,
    pub arch: Option<String>,
    pub build: Option<String>,
    /// Size and sha256 of the main artifact (the tarball, else the first with a size).
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Fingerprint of the key that signed its artifacts.
    pub signed_by: Option<String>,
    /// Public URLs of what was published, without duplicates.
    pub cdn_urls: Vec<String>,
    pub duration_ms: u64,
    /// Why steps were skipped.
    pub skipped: Vec<Note>,
    pub failures: Vec<Failure>,
    pub steps: Vec<StepOutcome>,
}

/// A step's one-line outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    pub step: String,
    pub status: Status,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The record file, for whoever wants the whole of it.
    pub record: String,
}

/// Why a step was skipped.
#[derive(Clone, Debug, Serialize)]
pub struct Note {
    pub step: String,
    pub reason: String,
}

/// A failed step: its error chain and where the logs are.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub step: String,
    pub message: String,
    pub chain: Vec<String>,
    pub exit_code: u8,
    pub logs: Option<String>,
}

/// The pipeline a record belongs to: the cell's own field, else the cell id's first word.
fn pipeline_of(r: &ResultRecord) -> String {
    r.cell_data
        .as_ref()
        .and_then(|c| c.get("pipeline"))
        .and_then(|p| p.as_str())
        .map(str::to_string)
        .or_else(|| {
            r.cell
                .as_deref()
                .and_then(|c| c.split('-').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "other".into())
}

fn field(r: &ResultRecord, name: &str) -> Option<String> {
    r.cell_data
        .as_ref()?
        .get(name)?
        .as_str()
        .map(str::to_string)
}

fn outcome(l: &LoadedRecord) -> StepOutcome {
    let r = &l.record;
    StepOutcome {
        step: r.step.clone(),
        status: r.status,
        duration_ms: r.duration_ms,
        reason: r.reason.clone(),
        error: failure(r),
        record: l.path.display().to_string(),
    }
}

fn failure(r: &ResultRecord) -> Option<Failure> {
    if r.status != Status::Failed {
        return None;
    }
    let e = r.error.clone().unwrap_or_default();
    Some(Failure {
        step: r.step.clone(),
        message: if e.message.is_empty() {
            "failed without an error message".into()
        } else {
            e.message
        },
        chain: e.chain,
        exit_code: e.exit_code,
        logs: e.logs,
    })
}

/// The artifact that stands for the cell: its tarball, else its first sized artifact.
fn main_artifact<'a>(arts: &[&'a Artifact]) -> Option<&'a Artifact> {
    arts.iter()
        .find(|a| a.kind == "tarball" && a.size.is_some())
        .or_else(|| arts.iter().find(|a| a.size.is_some()))
        .copied()
}

/// Merge records into the report.
pub fn build(records: &[LoadedRecord]) -> Report {
    let mut by_cell: BTreeMap<(String, String), Vec<&LoadedRecord>> = BTreeMap::new();
    let mut run_steps = Vec::new();
    for l in records {
        match &l.record.cell {
            Some(cell) => by_cell
                .entry((pipeline_of(&l.record), cell.clone()))
                .or_default()
                .push(l),
            None => run_steps.push(outcome(l)),
        }
    }
    let mut pipelines: BTreeMap<String, PipelineReport> = BTreeMap::new();
    for ((pipeline, id), mut recs) in by_cell {
        recs.sort_by(|a, b| {
            (&a.record.started_at, &a.record.step).cmp(&(&b.record.started_at, &b.record.step))
        });
        let status = if recs.iter().any(|l| l.record.status == Status::Failed) {
            Status::Failed
        } else if recs.iter().any(|l| l.record.status == Status::Success) {
            Status::Success
        } else {
            Status::Skipped
        };
        let first = |name: &str| recs.iter().find_map(|l| field(&l.record, name));
        let arts: Vec<&Artifact> = recs
            .iter()
            .flat_map(|l| l.record.artifacts.iter())
            .collect();
        let main = main_artifact(&arts);
        let sha256 = main.and_then(|m| m.sha256.clone()).or_else(|| {
            main.and_then(|m| {
                arts.iter()
                    .find(|a| a.kind == m.kind && a.sha256.is_some())
                    .and_then(|a| a.sha256.clone())
            })
        });
        let mut cdn_urls: Vec<String> = Vec::new();
        for a in &arts {
            if let Some(u) = &a.cdn_url {
                if !cdn_urls.contains(u) {
                    cdn_urls.push(u.clone());
                }
            }
        }
        let cell = CellReport {
            id,
            status,
            slurm_version: first("slurm_version"),
            toolchain: first("toolchain"),
            arch: first("arch"),
            build: first("build"),
            size: main.and_then(|m| m.size),
            sha256,
            signed_by: arts.iter().find_map(|a| a.signed_by.clone()),
            cdn_urls,
            duration_ms: recs.iter().map(|l| l.record.duration_ms).sum(),
            skipped: recs
                .iter()
                .filter(|l| l.record.status == Status::Skipped)
                .map(|l| Note {
                    step: l.record.step.clone(),
                    reason: l
                        .record
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason given".into()),
                })
                .collect(),
            failures: recs.iter().filter_map(|l| failure(&l.record)).collect(),
            steps: recs.iter().map(|l| outcome(l)).collect(),
        };
        let p = pipelines
            .entry(pipeline.clone())
            .or_insert_with(|| PipelineReport {
                pipeline,
                totals: Totals::default(),
                cells: Vec::new(),
            });
        p.totals.add(&cell);
        p.cells.push(cell);
    }
    let mut totals = Totals::default();
    let pipelines: Vec<PipelineReport> = pipelines
        .into_values()
        .map(|mut p| {
            // Failures first: when the table is shortened, they are what stays.
            p.cells
                .sort_by_key(|c| (c.status != Status::Failed, c.id.clone()));
            for c in &p.cells {
                totals.add(c);
            }
            p
        })
        .collect();
    Report {
        report_version: REPORT_VERSION,
        totals,
        pipelines,
        run_steps,
        files_left_out: 0,
    }
}
