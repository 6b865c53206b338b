//! Gathering result records: every `*.json` under the given directories (artifact downloads nest
//! them one folder per job), recognised as a record by its fields, refused when its
//! `schema_version` is not the one this build reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sf_core::bad_input;
use sf_core::exit::ResultExt;
use sf_core::record::{ResultRecord, SCHEMA_VERSION};

/// A record and the file it came from.
#[derive(Clone, Debug)]
pub struct LoadedRecord {
    pub path: PathBuf,
    pub record: ResultRecord,
}

/// Read every record under `dirs`, recursively, in a stable order (by path).
///
/// JSON files that are not records (a change list, a matrix) are passed over; a record of another
/// schema version, or one that does not parse, is bad input.
pub fn gather(dirs: &[PathBuf]) -> Result<Vec<LoadedRecord>> {
    let mut files = Vec::new();
    for dir in dirs {
        let meta =
            std::fs::metadata(dir).bad_input(format!("results directory {}", dir.display()))?;
        if !meta.is_dir() {
            return Err(bad_input(format!(
                "{} is not a directory; give the folders that hold the result records",
                dir.display()
            )));
        }
        walk(dir, &mut files)?;
    }
    files.sort();
    files.dedup();
    let mut out = Vec::new();
    for path in files {
        if let Some(record) = read_record(&path)? {
            out.push(LoadedRecord { path, record });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&path, files)?;
        } else if ft.is_file() && path.extension().is_some_and(|e| e == "json") {
            // Temporary files of an interrupted atomic write start with a dot; never half a record.
            if !entry.file_name().to_string_lossy().starts_with('.') {
                files.push(path);
            }
        }
    }
    Ok(())
}

/// One file: `Some(record)`, `None` when it is JSON but not a record, an error when it is a
/// record this build cannot read.
pub fn read_record(path: &Path) -> Result<Option<ResultRecord>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    let is_record = value.get("schema_version").is_some()
        && value.get("step").is_some()
        && value.get("status").is_some();
    if !is_record {
        return Ok(None);
    }
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        other => {
            return Err(bad_input(format!(
                "{}: result record schema_version {} is not the one this sf-summary reads ({SCHEMA_VERSION}); use the sf-summary of the same release as the steps",
                path.display(),
                other.map(|v| v.to_string()).unwrap_or_else(|| value["schema_version"].to_string())
            )));
        }
    }
    let record: ResultRecord = serde_json::from_value(value).bad_input(format!(
        "{}: not a valid result record (schema/result-record.schema.json)",
        path.display()
    ))?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::record::Recorder;

    #[test]
    fn nested_records_are_found_and_other_json_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("results-a/deeper");
        sf_core::record::write_record(&nested, &Recorder::start("sf-build").record).unwrap();
        std::fs::write(dir.path().join("matrix.json"), br#"{"include":[]}"#).unwrap();
        std::fs::write(dir.path().join("notes.json"), b"not json").unwrap();
        let got = gather(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].record.step, "sf-build");
    }

    #[test]
    fn another_schema_version_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(Recorder::start("sf-build").record).unwrap();
        v["schema_version"] = 99.into();
        std::fs::write(dir.path().join("r.json"), v.to_string()).unwrap();
        let err = gather(&[dir.path().to_path_buf()]).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&err), 2);
        assert!(err.to_string().contains("schema_version 99"), "{err}");
    }
}
