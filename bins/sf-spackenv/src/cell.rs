//! The one matrix cell this run is for: read from `sf-matrix` output (a bare cell, or
//! `{"include":[cell]}` with exactly one cell) or built from flags, and checked against the
//! support-matrix data file before anything is rendered.
//!
//! A cell from a file is trusted only as far as the data file and the storage layout agree with it:
//! it may hold no key sf-matrix does not print, every field the data file determines (image, OS,
//! compiler, Spack version and release of Slurm, target, ...) must match, and its mirrors and
//! tarball must be exactly where the layout puts them for the cell's own destination (the CDN base
//! is read off the deps mirror unless `--cdn-url` names it).

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde_json::Value;
use sf_core::bad_input;
use sf_core::exit::ResultExt;
use sf_core::layout::{Cell, Destination, Layout, MirrorLocation, Templates};
use sf_core::matrix::{CellKey, OsFamily, Pipeline, Selection, SupportMatrix};

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
    check_keys(&value, origin)?;
    serde_json::from_value(value).bad_input(format!("{origin}: not a matrix cell"))
}

/// A cell as sf-matrix prints it with every optional part present (a tarball cell): the keys a
/// cell may have, top level and inside its mirrors and tarball.
fn full_cell() -> Value {
    let m = SupportMatrix::embedded();
    let key = Selection::default()
        .expand(&m, Pipeline::Tarball)
        .ok()
        .and_then(|keys| keys.into_iter().next())
        .expect("the embedded matrix has tarball cells");
    serde_json::to_value(Layout::default().cell(&m, &key)).expect("a cell serialises")
}

/// Refuse keys sf-matrix never prints (a typo, or a cell from another tool), naming the valid ones.
fn check_keys(value: &Value, origin: &str) -> Result<()> {
    fn walk(got: &Value, full: &Value, path: &str, origin: &str) -> Result<()> {
        let (Value::Object(got), Value::Object(full)) = (got, full) else {
            return Ok(());
        };
        let valid: BTreeSet<&str> = full.keys().map(String::as_str).collect();
        for (k, v) in got {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match full.get(k) {
                Some(f) => walk(v, f, &here, origin)?,
                None => {
                    let list: Vec<&str> = valid.iter().copied().collect();
                    return Err(bad_input(format!(
                        "{origin}: the cell has an unknown key {here:?}; valid keys{}: {}",
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!(" in {path}")
                        },
                        list.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
    walk(value, &full_cell(), "", origin)
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
        (
            "slurm_release",
            serde_json::to_value(&c.slurm_release).unwrap_or_default(),
        ),
        ("spack_target", Value::from(c.spack_target.clone())),
        (
            "runner_labels",
            serde_json::to_value(&c.runner_labels).unwrap_or_default(),
        ),
        ("gpu", Value::from(c.gpu)),
    ]
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
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

/// The storage settings a cell's locations are checked against: the key templates, and the
/// destination and CDN base when the caller names them (otherwise the cell's own are taken).
#[derive(Clone, Debug, Default)]
pub struct Storage {
    pub templates: Templates,
    pub destination: Option<String>,
    pub cdn_url: Option<String>,
}

impl Storage {
    /// Exactly a layout's settings (for cells made from flags with it).
    pub fn of(layout: &Layout) -> Storage {
        Storage {
            templates: layout.templates.clone(),
            destination: Some(layout.destination.to_string()),
            cdn_url: Some(layout.cdn_url.clone()),
        }
    }
}

/// The layout a cell must have been laid out with: its own destination (which must equal the
/// caller's, if named) and CDN base (read off its deps mirror unless the caller names it).
fn layout_of(cell: &Cell, key: &CellKey, storage: &Storage) -> Result<Layout> {
    let regenerate = "regenerate the cell with sf-matrix (with the same --destination, --cdn-url and key templates)";
    if cell.destination.is_empty() {
        return Err(bad_input(format!(
            "the cell names no destination; {regenerate}"
        )));
    }
    let destination = Destination::parse(&cell.destination).context("the cell's destination")?;
    if let Some(given) = &storage.destination {
        let given = Destination::parse(given).context("--destination")?;
        if given != destination {
            return Err(bad_input(format!(
                "the cell's destination is {destination} but --destination (SF_DESTINATION) is {given}; {regenerate}"
            )));
        }
    }
    let cdn_url = match &storage.cdn_url {
        Some(u) => u.clone(),
        None => {
            let probe = Layout::new(None, None, storage.templates.clone())?;
            let deps_key = probe.deps_mirror(&key.toolchain).key;
            let url = &cell.deps_mirror.cdn_url;
            url.strip_suffix(&format!("/{deps_key}"))
                .filter(|base| !base.is_empty())
                .ok_or_else(|| {
                    bad_input(format!(
                        "the cell's deps_mirror.cdn_url {url:?} does not end in the deps mirror key {deps_key:?} the layout gives for {}; {regenerate}",
                        cell.toolchain
                    ))
                })?
                .to_string()
        }
    };
    Layout::new(
        Some(&destination.to_string()),
        Some(&cdn_url),
        storage.templates.clone(),
    )
}

/// Check a cell against the data file and the default key templates.
pub fn check(m: &SupportMatrix, cell: Cell) -> Result<CheckedCell> {
    check_with(m, cell, &Storage::default())
}

/// Check a cell against the data file and the given storage settings.
pub fn check_with(m: &SupportMatrix, cell: Cell, storage: &Storage) -> Result<CheckedCell> {
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
    // Where the mirrors and the tarball are must be what the layout gives: a hand-edited key or
    // URL would send the build's binaries somewhere no later step looks.
    let laid_out = layout_of(&cell, &key, storage)?.cell(m, &key);
    for (name, got, want) in [
        (
            "destination",
            to_json(&cell.destination),
            to_json(&laid_out.destination),
        ),
        (
            "deps_mirror",
            to_json(&cell.deps_mirror),
            to_json(&laid_out.deps_mirror),
        ),
        (
            "version_mirror",
            to_json(&cell.version_mirror),
            to_json(&laid_out.version_mirror),
        ),
        (
            "tarball",
            to_json(&cell.tarball),
            to_json(&laid_out.tarball),
        ),
    ] {
        if got != want {
            return Err(bad_input(format!(
                "the cell's {name} is {got} but the storage layout gives {want} for {}; regenerate the cell with sf-matrix (with the same --destination, --cdn-url and key templates)",
                expected.id
            )));
        }
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
    check_with(m, layout.cell(m, &key), &Storage::of(layout))
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

    #[test]
    fn every_cell_sf_matrix_prints_parses_and_checks() {
        let mm = m();
        let every = Selection {
            slurm_versions: sf_core::matrix::ListArg::All,
            toolchains: sf_core::matrix::ListArg::All,
            archs: sf_core::matrix::ListArg::All,
            builds: sf_core::matrix::ListArg::All,
            ..Default::default()
        };
        let custom = Layout::new(
            Some("file:///srv/cache/root"),
            Some("https://cdn.example.org/base/"),
            Templates::default(),
        )
        .unwrap();
        let mut n = 0;
        for pipeline in [Pipeline::Deps, Pipeline::Version, Pipeline::Tarball] {
            for key in every.expand(&mm, pipeline).unwrap() {
                for layout in [Layout::default(), custom.clone()] {
                    let printed = serde_json::to_string(&layout.cell(&mm, &key)).unwrap();
                    let cell = parse_cell(&printed, "x").unwrap();
                    check(&mm, cell.clone()).unwrap();
                    check_with(&mm, cell, &Storage::of(&layout)).unwrap();
                    n += 1;
                }
            }
        }
        assert!(n > 50, "{n}");
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_valid_ones() {
        let mut c = cell_json(Pipeline::Version, Some("25.11"), "noble");
        c["colour"] = "red".into();
        let e = parse_cell(&c.to_string(), "cell.json").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown key \"colour\""), "{msg}");
        assert!(
            msg.contains("deps_mirror") && msg.contains("slurm_release") && msg.contains("tarball"),
            "{msg}"
        );
        assert_eq!(sf_core::exit::code_for(&e), 2);

        let mut c = cell_json(Pipeline::Version, Some("25.11"), "noble");
        c["deps_mirror"]["region"] = "eu".into();
        let e = parse_cell(&c.to_string(), "cell.json").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown key \"deps_mirror.region\""), "{msg}");
        assert!(msg.contains("in deps_mirror: cdn_url, key, url"), "{msg}");
    }

    #[test]
    fn locations_that_differ_from_the_layout_are_refused() {
        let mm = m();
        let base = cell_json(Pipeline::Version, Some("25.11"), "noble");
        let refused = |c: &Value, storage: &Storage, what: &str| {
            let e = check_with(&mm, parse_cell(&c.to_string(), "x").unwrap(), storage).unwrap_err();
            assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
            assert!(format!("{e:#}").contains(what), "{what}: {e:#}");
        };
        let mut c = base.clone();
        c["slurm_release"] = "25.11.0".into();
        refused(&c, &Storage::default(), "slurm_release");

        let mut c = base.clone();
        c["deps_mirror"]["key"] = "noble/slurm/deps-old".into();
        refused(&c, &Storage::default(), "deps_mirror");

        let mut c = base.clone();
        c["version_mirror"]["url"] = "s3://another-bucket/noble/slurm/25.11".into();
        refused(&c, &Storage::default(), "version_mirror");

        // The CDN base is read off the deps mirror; a version mirror on another base is refused.
        let mut c = base.clone();
        c["version_mirror"]["cdn_url"] = "https://elsewhere.example/noble/slurm/25.11".into();
        refused(&c, &Storage::default(), "version_mirror");

        let mut c = base.clone();
        c["deps_mirror"]["cdn_url"] = "https://cdn.example/somewhere/else".into();
        refused(
            &c,
            &Storage::default(),
            "does not end in the deps mirror key",
        );

        let mut c = cell_json(Pipeline::Tarball, Some("25.11"), "noble");
        c["tarball"]["key"] = "builds/25.11/noble/slurm-latest.tar.gz".into();
        refused(&c, &Storage::default(), "tarball");
        c["tarball"] = Value::Null;
        refused(&c, &Storage::default(), "tarball");

        let mut c = base.clone();
        c["destination"] = "".into();
        refused(&c, &Storage::default(), "names no destination");

        // Storage settings the caller names must agree with the cell's.
        let other_destination = Storage {
            destination: Some("s3://another-bucket".into()),
            ..Default::default()
        };
        refused(&base, &other_destination, "--destination");
        let other_cdn = Storage {
            cdn_url: Some("https://other-cdn.example".into()),
            ..Default::default()
        };
        refused(&base, &other_cdn, "deps_mirror");
        let same = Storage {
            destination: Some(format!("{}/", base["destination"].as_str().unwrap())),
            cdn_url: Some(sf_core::layout::DEFAULT_CDN_URL.into()),
            ..Default::default()
        };
        check_with(&mm, parse_cell(&base.to_string(), "x").unwrap(), &same).unwrap();
        let other_templates = Storage {
            templates: Templates {
                version_mirror: "{toolchain}/slurm-versions/{slurm_version}".into(),
                ..Templates::default()
            },
            ..Default::default()
        };
        refused(&base, &other_templates, "version_mirror");
    }
}
