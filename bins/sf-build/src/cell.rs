//! The matrix cell a run is for, read as `sf-matrix` prints it (a bare cell, or a matrix holding
//! exactly one), and the names derived from it.

use anyhow::Result;
use serde_json::Value;

use sf_core::bad_input;
use sf_core::exit::ResultExt;
use sf_core::layout::Cell;

/// Read a cell from a file, `-` for stdin, or inline JSON (a value starting with `{`, as a
/// workflow passes `toJSON(matrix)` through the environment).
pub fn read(source: &str) -> Result<Cell> {
    let (text, origin) = sf_core::layout::read_cell_source(source)?;
    parse(&text, &origin)
}

/// Parse a bare cell or `{"include":[cell]}`.
pub fn parse(text: &str, origin: &str) -> Result<Cell> {
    let value: Value = serde_json::from_str(text).bad_input(format!("{origin} is not JSON"))?;
    let value = match value {
        Value::Object(mut obj) if obj.contains_key("include") => match obj.remove("include") {
            Some(Value::Array(mut cells)) if cells.len() == 1 => cells.remove(0),
            _ => {
                return Err(bad_input(format!(
                    "{origin}: a matrix must hold exactly one cell for sf-build"
                )))
            }
        },
        v => v,
    };
    serde_json::from_value(value)
        .bad_input(format!("{origin} is not a cell as sf-matrix prints it"))
}

/// The module name of the cell's Slurm: `slurm/{version}-{toolchain}`.
pub fn module_name(cell: &Cell) -> Result<String> {
    let v = cell.slurm_version.as_ref().ok_or_else(|| {
        bad_input(format!(
            "cell {} builds no Slurm (a deps cell): it has no tarball",
            cell.id
        ))
    })?;
    Ok(format!("slurm/{}-{}", v.as_str(), cell.toolchain.as_str()))
}

/// The Slurm version `sinfo --version` must report: the exact release when known (the cell's
/// `slurm_release`, e.g. 25.11.6 for Spack's 25-11-6-1), else the release series.
pub fn expected_version(cell: &Cell) -> Result<String> {
    match (&cell.slurm_release, &cell.slurm_version) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(v)) => Ok(v.as_str().to_string()),
        _ => Err(bad_input(format!("cell {} builds no Slurm", cell.id))),
    }
}

/// The tarball's file name for the cell.
pub fn tarball_name(cell: &Cell) -> Result<String> {
    match &cell.tarball {
        Some(t) => Ok(t.file_name.clone()),
        None => {
            let v = cell
                .slurm_version
                .as_ref()
                .ok_or_else(|| bad_input(format!("cell {} builds no Slurm", cell.id)))?;
            Ok(format!(
                "slurm-{}-{}-software.tar.gz",
                v.as_str(),
                cell.toolchain.as_str()
            ))
        }
    }
}
