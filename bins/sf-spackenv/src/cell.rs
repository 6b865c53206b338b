//! The one matrix cell this run is for: read from `sf-matrix` output (a bare cell, or
//! `{"include":[cell]}` with exactly one cell) or built from flags, and checked against the
//! support-matrix data file before anything is rendered.
//!
//! A cell from a file is trusted only as far as the data file agrees with it: every field the data
//! file determines (image, OS, compiler, Spack version of Slurm, target, ...) must match. Mirror
//! URLs are the cell's own (they depend on the destination the matrix was made for) and are only
//! checked for shape.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;
use sf_core::bad_input;
use sf_core::exit::ResultExt;
use sf_core::layout::{Cell, Layout, MirrorLocation};
use sf_core::matrix::{CellKey, OsFamily, Pipeline, SupportMatrix};

/// A cell that agrees with the data file, with its pipeline parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCell {
    pub cell: Cell,
    pub pipeline: Pipeline,
    pub family: OsFamily,
}

impl CheckedCell {
    pub fn id(&self) -> &str {
        &self.cell.id
    }

    /// Whether this cell builds Slurm itself (version and tarball pipelines).
    pub fn builds_slurm(&self) -> bool {
        self.cell.slurm_version.is_some()
    }
}

/// Read a cell JSON from a file, or stdin for `-`.
pub fn read_cell_text(source: &Path) -> Result<String> {
    if source.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the cell from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(source)
            .bad_input(format!("cannot read the cell file {}", source.display()))
    }
}

/// Parse a cell: a bare cell object, or a matrix with exactly one cell.
pub fn parse_cell(text: &str, origin: &str) -> Result<Cell> {
    let value: Value = serde_json::from_str(text).bad_input(format!("{origin}: not JSON"))?;
    let value = match value {
        Value::Object(mut obj) if obj.contains_key("include") => match obj.remove("include") {
            Some(Value::Array(mut cells)) if cells.len() == 1 => cells.remove(0),
            Some(Value::Array(cells)) => {
                return Err(bad_input(format!(
                    "{origin}: the matrix holds {} cells; sf-spackenv renders one cell, so pass one (e.g. with jq '.include[0]')",
                    cells.len()
                )))
            }
            _ => return Err(bad_input(format!("{origin}: \"include\" must be an array of cells"))),
        },
        other @ Value::Object(_) => other,
        _ => return Err(bad_input(format!("{origin}: a cell must be a JSON object as sf-matrix prints it"))),
    };
    serde_json::from_value(value).bad_input(format!("{origin}: not a matrix cell"))
}

/// The fields of a cell that the data file determines, as (name, value) pairs for comparison.
fn data_fields(c: &Cell) -> Vec<(&'static str, Value)> {
    vec![
        ("id", Value::from(c.id.clone())),
        ("os", Value::from(c.os.clone())),
        ("os_family", Value::from(c.os_family.clone())),
        ("base_image", Value::from(c.base_image.clone())),
        (
            "spack_os",
            serde_json::to_value(&c.spack_os).unwrap_or_default(),
        ),
        ("gcc", Value::from(c.gcc.clone())),
        ("glibc", Value::from(c.glibc.clone())),
        (
            "slurm_spack_version",
            serde_json::to_value(&c.slurm_spack_version).unwrap_or_default(),
        ),
        ("spack_target", Value::from(c.spack_target.clone())),
        (
            "runner_labels",
            serde_json::to_value(&c.runner_labels).unwrap_or_default(),
        ),
        ("gpu", Value::from(c.gpu)),
    ]
}

/// A mirror URL Spack can fetch from and that is safe to write into YAML unquoted.
fn check_mirror(what: &str, m: &MirrorLocation) -> Result<()> {
    let url = &m.cdn_url;
    let scheme_ok =
        url.starts_with("https://") || url.starts_with("http://") || url.starts_with("file:///");
    let chars_ok = url.chars().all(|c| {
        c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`' | '$' | '#' | '{' | '}')
    });
    if !scheme_ok || !chars_ok {
        return Err(bad_input(format!(
            "{what}.cdn_url {url:?} is not a mirror URL (http(s):// or file:///, no quotes or spaces)"
        )));
    }
    Ok(())
}

/// Check a cell against the data file.
pub fn check(m: &SupportMatrix, cell: Cell) -> Result<CheckedCell> {
    let pipeline: Pipeline = cell.pipeline.parse().context("the cell's pipeline")?;
    if pipeline == Pipeline::Image {
        return Err(bad_input(
            "the image pipeline installs the tested tarball and has no Spack environment; valid pipelines here: deps, version, tarball",
        ));
    }
    let key = CellKey {
        pipeline,
        slurm_version: match (&cell.slurm_version, pipeline.has_slurm_version()) {
            (Some(v), true) => Some(
                m.slurm_version(v.as_str())
                    .context("the cell's slurm_version")?,
            ),
            (None, true) => {
                return Err(bad_input(format!(
                    "a {pipeline} cell needs a slurm_version; this one has none"
                )))
            }
            (Some(v), false) => {
                return Err(bad_input(format!(
                    "a deps cell has no Slurm version, but this one names {v}"
                )))
            }
            (None, false) => None,
        },
        toolchain: m
            .toolchain_name(cell.toolchain.as_str())
            .context("the cell's toolchain")?,
        arch: m.arch_name(cell.arch.as_str()).context("the cell's arch")?,
        build: m
            .build_kind(cell.build.as_str())
            .context("the cell's build")?,
    };
    // Mirrors and tarball keys depend on the destination, so the expected cell is laid out with
    // the default layout and only the data-determined fields are compared.
    let expected = Layout::default().cell(m, &key);
    for ((name, got), (_, want)) in data_fields(&cell).into_iter().zip(data_fields(&expected)) {
        if got != want {
            return Err(bad_input(format!(
                "the cell's {name} is {got} but the support matrix says {want} for {}; regenerate the cell with sf-matrix",
                expected.id
            )));
        }
    }
    check_mirror("deps_mirror", &cell.deps_mirror)?;
    match (&cell.version_mirror, pipeline.has_slurm_version()) {
        (Some(vm), true) => check_mirror("version_mirror", vm)?,
        (None, true) => {
            return Err(bad_input(format!(
                "a {pipeline} cell needs a version_mirror; this one has none"
            )))
        }
        (Some(_), false) => {
            return Err(bad_input(
                "a deps cell has no version mirror, but this one has one",
            ))
        }
        (None, false) => {}
    }
    let family = m.toolchain(&key.toolchain).family;
    Ok(CheckedCell {
        cell,
        pipeline,
        family,
    })
}

/// Build a cell from flags, as sf-matrix would for this one combination.
pub fn from_flags(
    m: &SupportMatrix,
    layout: &Layout,
    pipeline: Pipeline,
    slurm_version: Option<&str>,
    toolchain: &str,
    arch: Option<&str>,
    build: Option<&str>,
) -> Result<CheckedCell> {
    let arch = arch.unwrap_or(m.default_arch().as_str()).to_string();
    let build = build.unwrap_or(m.default_build().as_str()).to_string();
    let slurm_version = match (slurm_version, pipeline.has_slurm_version()) {
        (Some(v), true) => Some(m.slurm_version(v)?),
        (None, true) => {
            return Err(bad_input(format!(
                "--slurm-version is needed for the {pipeline} pipeline"
            )))
        }
        (Some(v), false) => {
            return Err(bad_input(format!(
                "the deps pipeline has no Slurm version, but --slurm-version {v} was given"
            )))
        }
        (None, false) => None,
    };
    let key = CellKey {
        pipeline,
        slurm_version,
        toolchain: m.toolchain_name(toolchain)?,
        arch: m.arch_name(&arch)?,
        build: m.build_kind(&build)?,
    };
    check(m, layout.cell(m, &key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> SupportMatrix {
        SupportMatrix::embedded()
    }

    fn cell_json(pipeline: Pipeline, v: Option<&str>, tc: &str) -> Value {
        let m = m();
        let key = CellKey {
            pipeline,
            slurm_version: v.map(|v| m.slurm_version(v).unwrap()),
            toolchain: m.toolchain_name(tc).unwrap(),
            arch: m.arch_name("amd64").unwrap(),
            build: m.build_kind("cpu").unwrap(),
        };
        serde_json::to_value(Layout::default().cell(&m, &key)).unwrap()
    }

    #[test]
    fn bare_cells_and_one_cell_matrices_are_accepted() {
        let c = cell_json(Pipeline::Version, Some("25.11"), "noble");
        let bare = parse_cell(&c.to_string(), "x").unwrap();
        let wrapped = parse_cell(&serde_json::json!({ "include": [c] }).to_string(), "x").unwrap();
        assert_eq!(bare, wrapped);
        let checked = check(&m(), bare).unwrap();
        assert_eq!(checked.id(), "version-25.11-noble-amd64-cpu");
        assert!(checked.builds_slurm());
    }

    #[test]
    fn matrices_of_several_cells_are_refused() {
        let c = cell_json(Pipeline::Deps, None, "noble");
        let e = parse_cell(
            &serde_json::json!({ "include": [c.clone(), c] }).to_string(),
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("2 cells"), "{e}");
        assert_eq!(sf_core::exit::code_for(&e), 2);
    }

    #[test]
    fn cells_that_disagree_with_the_data_file_are_refused() {
        let mut c = cell_json(Pipeline::Version, Some("25.11"), "jammy");
        c["base_image"] = "ubuntu:latest".into();
        let e = check(&m(), parse_cell(&c.to_string(), "x").unwrap()).unwrap_err();
        assert!(e.to_string().contains("base_image"), "{e}");

        let mut c = cell_json(Pipeline::Version, Some("25.11"), "jammy");
        c["toolchain"] = "bionic".into();
        let e = check(&m(), parse_cell(&c.to_string(), "x").unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("noble, jammy"), "{e:#}");
        assert_eq!(sf_core::exit::code_for(&e), 2);

        let mut c = cell_json(Pipeline::Version, Some("25.11"), "jammy");
        c.as_object_mut().unwrap().remove("spack_target");
        let e = parse_cell(&c.to_string(), "x").unwrap_err();
        assert!(e.to_string().contains("spack_target"), "{e}");

        let mut c = cell_json(Pipeline::Version, Some("25.11"), "jammy");
        c["version_mirror"]["cdn_url"] = "https://x/$(id)".into();
        assert!(check(&m(), parse_cell(&c.to_string(), "x").unwrap()).is_err());
    }

    #[test]
    fn flags_build_the_same_cell_as_the_matrix() {
        let mm = m();
        let from = from_flags(
            &mm,
            &Layout::default(),
            Pipeline::Tarball,
            Some("24.11"),
            "rockylinux9",
            None,
            Some("gpu"),
        )
        .unwrap();
        assert_eq!(from.id(), "tarball-24.11-rockylinux9-amd64-gpu");
        assert!(from.cell.gpu);
        assert!(from_flags(
            &mm,
            &Layout::default(),
            Pipeline::Deps,
            Some("24.11"),
            "noble",
            None,
            None
        )
        .is_err());
        assert!(from_flags(
            &mm,
            &Layout::default(),
            Pipeline::Version,
            None,
            "noble",
            None,
            None
        )
        .is_err());
        assert!(from_flags(
            &mm,
            &Layout::default(),
            Pipeline::Image,
            Some("24.11"),
            "noble",
            None,
            None
        )
        .is_err());
    }
}
