//! The result record: what one step did, as JSON, appended to a results directory that
//! `sf-summary` gathers from every matrix job.
//!
//! The JSON Schema generated from [`ResultRecord`] is checked into `schema/result-record.schema.json`;
//! a test fails when the type and the file drift apart, so readers of old artifacts can rely on
//! `schema_version`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// Bumped when a field changes meaning or is removed.
pub const SCHEMA_VERSION: u32 = 1;

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
    Skipped,
}

/// A file or object the step produced or touched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Artifact {
    /// What it is: tarball, signature, mirror, manifest, sums, ...
    pub kind: String,
    /// Local path, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Object key under the destination, if published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Destination (`s3://`, `file://`) or public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdn_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lowercase hex sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Fingerprint of the key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// Why a step failed, and where to look.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorInfo {
    pub message: String,
    /// The causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// 1 (the work failed) or 2 (bad input).
    pub exit_code: u8,
    /// Logs or a debug bundle kept for this failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// What one step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResultRecord {
    pub schema_version: u32,
    /// The binary and subcommand, e.g. `sf-publish mirror`.
    pub step: String,
    /// The matrix cell id, when the step ran for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// The cell itself (as `sf-matrix` printed it), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_data: Option<serde_json::Value>,
    pub status: Status,
    /// Why the step was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// The inputs that shaped the work (never secrets).
    #[serde(default)]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Values the step wrote for later steps (also in `GITHUB_OUTPUT`).
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Named counters: objects uploaded, bytes, skipped, retries...
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    /// Durations of named phases, milliseconds.
    #[serde(default)]
    pub timings_ms: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// Builds a record while a step runs; [`Recorder::finish`] stamps the end and writes it.
#[derive(Debug)]
pub struct Recorder {
    pub record: ResultRecord,
    start: Instant,
}

impl Recorder {
    pub fn start(step: &str) -> Self {
        let now = SystemTime::now();
        Recorder {
            record: ResultRecord {
                schema_version: SCHEMA_VERSION,
                step: step.to_string(),
                cell: None,
                cell_data: None,
                status: Status::Success,
                reason: None,
                started_at: rfc3339(now),
                finished_at: rfc3339(now),
                duration_ms: 0,
                inputs: BTreeMap::new(),
                outputs: BTreeMap::new(),
                artifacts: Vec::new(),
                metrics: BTreeMap::new(),
                timings_ms: BTreeMap::new(),
                error: None,
            },
            start: Instant::now(),
        }
    }

    pub fn input(&mut self, name: &str, value: impl Serialize) -> &mut Self {
        self.record
            .inputs
            .insert(name.into(), serde_json::to_value(value).unwrap_or_default());
        self
    }

    pub fn output(&mut self, name: &str, value: impl Serialize) -> &mut Self {
        self.record
            .outputs
            .insert(name.into(), serde_json::to_value(value).unwrap_or_default());
        self
    }

    pub fn metric(&mut self, name: &str, value: u64) -> &mut Self {
        self.record.metrics.insert(name.into(), value);
        self
    }

    pub fn timing(&mut self, name: &str, d: Duration) -> &mut Self {
        self.record
            .timings_ms
            .insert(name.into(), d.as_millis() as u64);
        self
    }

    /// Mark the step failed with this error (the chain is kept, the exit code derived).
    pub fn fail(&mut self, err: &anyhow::Error, logs: Option<String>) -> &mut Self {
        self.record.status = Status::Failed;
        self.record.error = Some(ErrorInfo {
            message: err.to_string(),
            chain: err.chain().skip(1).map(|c| c.to_string()).collect(),
            exit_code: crate::exit::code_for(err),
            logs,
        });
        self
    }

    /// Stamp the end and write the record into `dir` (if given). Returns the file written.
    pub fn finish(mut self, dir: Option<&Path>) -> Result<(ResultRecord, Option<PathBuf>)> {
        self.record.finished_at = rfc3339(SystemTime::now());
        self.record.duration_ms = self.start.elapsed().as_millis() as u64;
        let path = match dir {
            Some(d) => Some(write_record(d, &self.record)?),
            None => None,
        };
        Ok((self.record, path))
    }
}

impl Recorder {
    /// [`Recorder::finish`], then tell later steps where the record is: the `result` output (the
    /// GitHub Action exposes it as its `result` output).
    pub fn finish_step(
        self,
        dir: Option<&Path>,
        gha: &crate::gha::Actions,
    ) -> Result<(ResultRecord, Option<PathBuf>)> {
        let (record, path) = self.finish(dir)?;
        if let Some(p) = &path {
            gha.set_output("result", &p.display().to_string())
                .context("writing GITHUB_OUTPUT")?;
        }
        Ok((record, path))
    }
}

/// Write a record as `<step>-<cell>-<random>.json` in `dir` (created if missing), atomically.
pub fn write_record(dir: &Path, record: &ResultRecord) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the results directory {}", dir.display()))?;
    let rnd = crate::fsutil::random_hex(4)?;
    let step = record.step.replace(' ', "-");
    let name = match &record.cell {
        Some(c) => format!("{step}-{c}-{}.json", rnd),
        None => format!("{step}-{}.json", rnd),
    };
    let path = dir.join(name);
    let mut bytes = serde_json::to_vec_pretty(record)?;
    bytes.push(b'\n');
    write_atomic(&path, &bytes)
        .with_context(|| format!("writing the result record {}", path.display()))?;
    Ok(path)
}

/// The JSON Schema of a type the steps exchange, as the repository keeps it under `schema/`
/// (pretty JSON with a final newline).
pub fn schema_json_of<T: JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serialises");
    s.push('\n');
    s
}

/// The JSON Schema of [`ResultRecord`], as checked into the repository.
pub fn schema_json() -> String {
    schema_json_of::<ResultRecord>()
}

/// Format a time as RFC 3339 UTC with seconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_schema_matches_the_type() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/result-record.schema.json"
        );
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == schema_json(),
            "schema/result-record.schema.json is out of date; regenerate it with `cargo run -p sf-core --example write-schema`"
        );
    }

    #[test]
    fn records_round_trip_and_land_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::start("sf-sign file");
        r.record.cell = Some("tarball-25.11-noble-amd64-cpu".into());
        r.input("files", ["a.tar.gz"]).metric("files_signed", 1);
        r.fail(&crate::exit::bad_input("wrong passphrase"), None);
        let (rec, path) = r.finish(Some(dir.path())).unwrap();
        let path = path.unwrap();
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("sf-sign-file-tarball-25.11-noble-amd64-cpu-"));
        let back: ResultRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.error.unwrap().exit_code, 2);
        assert!(back.started_at.ends_with('Z'));
    }
}
