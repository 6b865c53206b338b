//! Reading the project's YAML data files (the support matrix, the Spack stack pins): the file's
//! text, then its typed value, with errors that are bad input and name the file and line.

use std::path::Path;

use anyhow::Result;
use serde::de::DeserializeOwned;

use crate::exit::bad_input;

/// The text of a data file; `what` names it in the error ("matrix data file").
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Parse YAML into `T`; a syntax or shape error names `origin:line` and says what was expected
/// (`kind`, e.g. "support matrix").
pub fn from_yaml<T: DeserializeOwned>(text: &str, origin: &str, kind: &str) -> Result<T> {
    serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}", l.line()))
            .unwrap_or_default();
        bad_input(format!("{origin}{at}: not a valid {kind}: {e}"))
    })
}
