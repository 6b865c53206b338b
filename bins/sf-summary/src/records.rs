//! Gathering result records: every `*.json` under the given directories (artifact downloads nest
//! them one folder per job), recognised as a record by its fields, left out (and listed) when
//! it cannot be read or its `schema_version` is not the one this build reads.

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

/// What the directories held.
#[derive(Debug, Default)]
pub struct Gathered {
    pub records: Vec<LoadedRecord>,
    /// `.json` files that cannot be used, with why: not JSON at all (a record cut short by a
    /// dying job, say), a record of another schema version, or one whose fields do not parse.
    /// The caller warns about each and counts them, or refuses them with `--strict`.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Read every record under `dirs`, recursively, in a stable order (by path).
///
/// JSON files that are not records (a change list, a matrix) are passed over; files that are not
/// JSON, records of another schema version and records whose fields do not parse are listed in
/// [`Gathered::unreadable`], all alike.
pub fn gather(dirs: &[PathBuf]) -> Result<Gathered> {
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
    let mut out = Gathered::default();
    for path in files {
        match read_record(&path) {
            Ok(Some(record)) => out.records.push(LoadedRecord { path, record }),
            Ok(None) => {}
            Err(e) if sf_core::exit::code_for(&e) == 2 || e.downcast_ref::<NotJson>().is_some() => {
                out.unreadable.push((path, format!("{e:#}")))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A `.json` file that does not parse as JSON.
#[derive(Debug)]
pub struct NotJson(pub String);

impl std::fmt::Display for NotJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotJson {}

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
/// record this build cannot read, or ([`NotJson`]) not JSON at all.
pub fn read_record(path: &Path) -> Result<Option<ResultRecord>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Err(anyhow::Error::new(NotJson(format!(
                "{} is not JSON ({e}); a result record cut short?",
                path.display()
            ))))
        }
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
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.records[0].record.step, "sf-build");
        assert_eq!(got.unreadable.len(), 1);
        assert!(got.unreadable[0].0.ends_with("notes.json"));
    }

    #[test]
    fn another_schema_version_is_left_out_like_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = Recorder::start("sf-build").record;
        std::fs::write(
            dir.path().join("a.json"),
            serde_json::to_vec(&good).unwrap(),
        )
        .unwrap();
        let mut v = serde_json::to_value(&good).unwrap();
        v["schema_version"] = 99.into();
        std::fs::write(dir.path().join("b.json"), v.to_string()).unwrap();
        v["schema_version"] = SCHEMA_VERSION.into();
        v["status"] = "sideways".into();
        std::fs::write(dir.path().join("c.json"), v.to_string()).unwrap();
        let got = gather(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.unreadable.len(), 2);
        assert!(
            got.unreadable[0].1.contains("schema_version 99"),
            "{:?}",
            got.unreadable
        );
        assert!(
            got.unreadable[1].1.contains("not a valid result record"),
            "{:?}",
            got.unreadable
        );
    }
}
