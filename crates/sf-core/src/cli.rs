//! Command-line pieces every binary shares: the support-matrix file, the storage layout options and
//! the results directory and the cell a step runs for, each with its documented environment
//! variable.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::env;
use crate::exit::bad_input;
use crate::layout::{Layout, Templates};
use crate::matrix::SupportMatrix;

/// `--matrix-file`.
#[derive(Args, Clone, Debug, Default)]
pub struct MatrixFileArgs {
    /// Support-matrix data file to use instead of the embedded one.
    #[arg(long, env = env::MATRIX_FILE, value_name = "FILE", global = true)]
    pub matrix_file: Option<PathBuf>,
}

impl MatrixFileArgs {
    pub fn load(&self) -> Result<SupportMatrix> {
        crate::matrix::load_from_arg(self.matrix_file.as_deref())
    }
}

/// Where things are stored and served from.
#[derive(Args, Clone, Debug, Default)]
pub struct StorageArgs {
    /// Destination bucket: s3://bucket[/prefix] or file:///dir [default: the public bucket]
    #[arg(long, env = env::DESTINATION, value_name = "URL", global = true)]
    pub destination: Option<String>,
    /// Public CDN base URL in front of the destination.
    #[arg(long, env = env::CDN_URL, value_name = "URL", global = true)]
    pub cdn_url: Option<String>,
    /// Key template of the deps mirror ({toolchain}).
    #[arg(long, env = env::DEPS_MIRROR_TEMPLATE, value_name = "TEMPLATE", hide_short_help = true, global = true)]
    pub deps_mirror_template: Option<String>,
    /// Key template of a version mirror ({toolchain}, {slurm_version}).
    #[arg(long, env = env::VERSION_MIRROR_TEMPLATE, value_name = "TEMPLATE", hide_short_help = true, global = true)]
    pub version_mirror_template: Option<String>,
    /// Key template of an amd64/cpu tarball ({toolchain}, {slurm_version}).
    #[arg(long, env = env::TARBALL_TEMPLATE, value_name = "TEMPLATE", hide_short_help = true, global = true)]
    pub tarball_template: Option<String>,
    /// Key template of other tarballs ({toolchain}, {slurm_version}, {variant}).
    #[arg(long, env = env::TARBALL_VARIANT_TEMPLATE, value_name = "TEMPLATE", hide_short_help = true, global = true)]
    pub tarball_variant_template: Option<String>,
}

impl StorageArgs {
    pub fn layout(&self) -> Result<Layout> {
        let d = Templates::default();
        let templates = Templates {
            deps_mirror: self.deps_mirror_template.clone().unwrap_or(d.deps_mirror),
            version_mirror: self
                .version_mirror_template
                .clone()
                .unwrap_or(d.version_mirror),
            tarball: self.tarball_template.clone().unwrap_or(d.tarball),
            tarball_variant: self
                .tarball_variant_template
                .clone()
                .unwrap_or(d.tarball_variant),
        };
        Layout::new(
            self.destination.as_deref(),
            self.cdn_url.as_deref(),
            templates,
        )
    }
}

/// `--results-dir`.
#[derive(Args, Clone, Debug, Default)]
pub struct ResultsArgs {
    /// Directory to append this step's JSON result record to.
    #[arg(long, env = env::RESULTS_DIR, value_name = "DIR", global = true)]
    pub results_dir: Option<PathBuf>,
}

impl ResultsArgs {
    /// Create the results directory and make sure a record can be written there, before the step
    /// prints or writes anything: a directory that cannot hold the record is bad input (exit 2)
    /// instead of a failure after the step's work is done.
    pub fn prepare(&self) -> Result<Option<&std::path::Path>> {
        let Some(dir) = self.results_dir.as_deref() else {
            return Ok(None);
        };
        let bad = |e: std::io::Error| {
            bad_input(format!(
                "--results-dir {}: {e}; it must be a directory this step can write to",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(bad)?;
        let probe = dir.join(format!(".sf-probe-{}", crate::fsutil::random_hex(4)?));
        std::fs::write(&probe, b"").map_err(bad)?;
        let _ = std::fs::remove_file(&probe);
        Ok(Some(dir))
    }
}

/// `--cell-id`.
#[derive(Args, Clone, Debug, Default)]
pub struct CellIdArgs {
    /// The matrix cell this step runs for (as sf-matrix names it, e.g. tarball-25.11-noble-amd64-cpu):
    /// recorded in the result record and named in the AWS role session.
    #[arg(long, env = env::CELL_ID, value_name = "ID", global = true)]
    pub cell_id: Option<String>,
}

impl CellIdArgs {
    /// The cell id, if one was given (empty counts as none); bad input unless it is a cell id's
    /// characters (letters, digits, `.`, `_`, `-`), since it becomes part of file names.
    pub fn get(&self) -> Result<Option<&str>> {
        let Some(id) = self
            .cell_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        let ok = id.len() <= 128
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Some(id))
        } else {
            Err(crate::exit::bad_input(format!(
                "cell id {id:?} (--cell-id / {}) is not a matrix cell id: letters, digits, '.', '_' and '-', \
                 at most 128, e.g. tarball-25.11-noble-amd64-cpu",
                env::CELL_ID
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_ids_are_checked() {
        let a = |s: &str| CellIdArgs {
            cell_id: Some(s.into()),
        };
        assert_eq!(
            a("tarball-25.11-noble-amd64-cpu").get().unwrap(),
            Some("tarball-25.11-noble-amd64-cpu")
        );
        assert_eq!(a("  ").get().unwrap(), None);
        assert_eq!(CellIdArgs::default().get().unwrap(), None);
        for bad in ["a/b", "../x", "a b", ".hidden"] {
            assert_eq!(
                crate::exit::code_for(&a(bad).get().unwrap_err()),
                2,
                "{bad}"
            );
        }
    }
}
