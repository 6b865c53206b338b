//! The support matrix: which Slurm versions, toolchains, architectures and build kinds exist, read
//! from one data file (`data/matrix.yaml`, embedded) and validated when loaded.
//!
//! Names from the data file travel as small newtypes ([`SlurmVersion`], [`Toolchain`], [`Arch`],
//! [`BuildKind`]); a value of one of them has been checked against the file. [`Selection`] turns
//! user lists (`all`, comma lists, include/exclude selectors) into [`CellKey`]s, and
//! [`crate::layout`] turns those into the full cells later steps read.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::exit::bad_input;

/// The data file compiled into every binary.
pub const EMBEDDED: &str = include_str!("../../../data/matrix.yaml");

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A Slurm release series from the data file, e.g. `25.11`.
    SlurmVersion
);
name_type!(
    /// A toolchain (an OS image with its own GCC and glibc), e.g. `noble`.
    Toolchain
);
name_type!(
    /// A CPU architecture as runners name it, e.g. `amd64`.
    Arch
);
name_type!(
    /// A build kind, `cpu` or `gpu`.
    BuildKind
);

impl BuildKind {
    /// GPU builds add CUDA (NVML) and ROCm (RSMI) support to Slurm.
    pub fn is_gpu(&self) -> bool {
        self.0 == "gpu"
    }
}

/// The pipelines a matrix can be made for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// Slurm's dependencies, one mirror per toolchain.
    Deps,
    /// Slurm itself into the per-version mirror.
    Version,
    /// The relocatable tarball.
    Tarball,
    /// A container image with Slurm pre-installed from the tarball.
    Image,
}

impl Pipeline {
    pub const ALL: [Pipeline; 4] = [
        Pipeline::Deps,
        Pipeline::Version,
        Pipeline::Tarball,
        Pipeline::Image,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Pipeline::Deps => "deps",
            Pipeline::Version => "version",
            Pipeline::Tarball => "tarball",
            Pipeline::Image => "image",
        }
    }

    /// Whether cells of this pipeline have a Slurm version (deps cells do not).
    pub fn has_slurm_version(self) -> bool {
        self != Pipeline::Deps
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pipeline {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        Pipeline::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                bad_input(format!(
                    "unknown pipeline {s:?}; valid: deps, version, tarball, image"
                ))
            })
    }
}

/// The package manager family of a toolchain's OS, which picks its container template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    Apt,
    Dnf,
}

impl OsFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Apt => "apt",
            OsFamily::Dnf => "dnf",
        }
    }
}

/// One Slurm release series.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmRelease {
    pub name: SlurmVersion,
    /// The exact Spack package version built for this series.
    pub spack_version: String,
    /// latest, lts, stable...
    pub channel: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub legacy: bool,
}

impl SlurmRelease {
    /// The version Slurm reports for this build: `25-11-6-1` (Spack's name, after the git tag
    /// `slurm-25-11-6-1`) is Slurm 25.11.6; a dotted spack_version is already that.
    pub fn reported_version(&self) -> String {
        if self.spack_version.contains('.') {
            return self.spack_version.clone();
        }
        let parts: Vec<&str> = self.spack_version.split('-').collect();
        parts[..parts.len().min(3)].join(".")
    }
}

/// One toolchain: an OS image and its own compiler and C library.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolchainInfo {
    pub name: Toolchain,
    pub os: String,
    pub family: OsFamily,
    pub base_image: String,
    /// Expected system GCC version (the build detects and records the real one).
    pub gcc: String,
    pub glibc: String,
    /// What Spack calls this OS; `None` when it is detected at build time.
    pub spack_os: Option<String>,
    #[serde(default)]
    pub recommended: bool,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub legacy: bool,
}

/// One architecture and where its jobs run.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchInfo {
    pub name: Arch,
    pub runner_labels: Vec<String>,
    pub spack_target: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub legacy: bool,
}

/// One build kind.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuildInfo {
    pub name: BuildKind,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub legacy: bool,
}

/// The whole data file, validated.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupportMatrix {
    pub schema: u32,
    pub slurm_versions: Vec<SlurmRelease>,
    pub toolchains: Vec<ToolchainInfo>,
    pub archs: Vec<ArchInfo>,
    pub builds: Vec<BuildInfo>,
}

/// Characters allowed in a name: safe in shell words, YAML scalars, S3 keys and file names.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `registry/path:tag` with the characters Docker allows in references.
fn is_image_reference(s: &str) -> bool {
    let Some((repo, tag)) = s.rsplit_once(':') else {
        return false;
    };
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    repo_ok && tag_ok
}

/// The 1-based line where `key: value` (or `- key: value`) appears for the `nth` time, for errors.
fn line_of(text: &str, key: &str, value: &str, nth: usize) -> Option<usize> {
    let quoted = [
        value.to_string(),
        format!("\"{value}\""),
        format!("'{value}'"),
    ];
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let l = line.trim_start().trim_start_matches("- ").trim();
            l.strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .is_some_and(|v| quoted.iter().any(|q| v.trim() == q))
        })
        .nth(nth)
        .map(|(i, _)| i + 1)
}

/// The 1-based line of the `nth` `key:` (or `- key:`) in the file, whatever its value, for errors
/// about an entry's field.
fn line_of_key(text: &str, key: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let l = line.trim_start().trim_start_matches("- ");
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .nth(nth)
        .map(|(i, _)| i + 1)
}

/// Free text shown to people (an OS name): not blank, one line, no control characters, and no
/// `::`, which would start a workflow command where it opens a log line.
fn is_plain_text(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 128 && !s.chars().any(char::is_control) && !s.contains("::")
}

impl SupportMatrix {
    /// The embedded data file.
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED, "data/matrix.yaml").expect("the embedded support matrix is valid")
    }

    /// Load from a file, or the embedded data when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::embedded()),
            Some(p) => {
                let text = crate::datafile::read_text(p, "matrix data file")?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// Parse and validate. Errors are bad input and name the file and line.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let m: SupportMatrix = crate::datafile::from_yaml(text, origin, "support matrix")?;
        m.validate(text, origin)?;
        Ok(m)
    }

    fn validate(&self, text: &str, origin: &str) -> Result<()> {
        let err = |line: Option<usize>, msg: String| {
            let at = line.map(|l| format!(":{l}")).unwrap_or_default();
            Err(bad_input(format!("{origin}{at}: {msg}")))
        };
        if self.schema != 1 {
            return err(
                line_of(text, "schema", &self.schema.to_string(), 0),
                format!("schema {} is not supported; valid: 1", self.schema),
            );
        }
        let sections: [(&str, Vec<&str>); 4] = [
            (
                "slurm_versions",
                self.slurm_versions
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect(),
            ),
            (
                "toolchains",
                self.toolchains.iter().map(|v| v.name.as_str()).collect(),
            ),
            (
                "archs",
                self.archs.iter().map(|v| v.name.as_str()).collect(),
            ),
            (
                "builds",
                self.builds.iter().map(|v| v.name.as_str()).collect(),
            ),
        ];
        for (section, names) in &sections {
            if names.is_empty() {
                return err(
                    line_of_key(text, section, 0),
                    format!("{section} is empty; it needs at least one entry"),
                );
            }
            let mut seen = BTreeSet::new();
            for name in names {
                if !is_safe_name(name) {
                    return err(
                        line_of(text, "name", name, 0),
                        format!("{section}: name {name:?} may only hold letters, digits, '.', '_' and '-'"),
                    );
                }
                if !seen.insert(*name) {
                    return err(
                        line_of(text, "name", name, 1),
                        format!("{section}: duplicate name {name:?}"),
                    );
                }
            }
        }
        for v in &self.slurm_versions {
            let parts: Vec<&str> = v.name.as_str().split('.').collect();
            if parts.len() != 2
                || parts
                    .iter()
                    .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return err(
                    line_of(text, "name", v.name.as_str(), 0),
                    format!(
                        "slurm version {:?} must be a release series like 25.11",
                        v.name.as_str()
                    ),
                );
            }
            let i = self
                .slurm_versions
                .iter()
                .position(|r| r.name == v.name)
                .unwrap_or(0);
            if !is_safe_name(&v.channel) {
                return err(
                    line_of_key(text, "channel", i),
                    format!(
                        "slurm version {}: channel {:?} may only hold letters, digits, '.', '_' and '-' (like latest, lts)",
                        v.name, v.channel
                    ),
                );
            }
            // Spack names Slurm releases after their tags (25-11-6-1); plain 25.11.6 is accepted too.
            let dashed = v.name.as_str().replace('.', "-");
            if !(v.spack_version.starts_with(&format!("{}.", v.name))
                || v.spack_version.starts_with(&format!("{dashed}-")))
                || !is_safe_name(&v.spack_version)
            {
                return err(
                    line_of(text, "spack_version", &v.spack_version, 0),
                    format!(
                        "spack_version {:?} must be a {} release such as {}-0-1",
                        v.spack_version, v.name, dashed
                    ),
                );
            }
        }
        for (i, t) in self.toolchains.iter().enumerate() {
            if !is_plain_text(&t.os) {
                return err(
                    line_of_key(text, "os", i),
                    format!(
                        "toolchain {}: os {:?} must be a one-line name like Ubuntu 24.04 (not blank, no control characters, no '::')",
                        t.name, t.os
                    ),
                );
            }
            for (key, value) in [("gcc", &t.gcc), ("glibc", &t.glibc)] {
                if !is_safe_name(value) {
                    return err(
                        line_of_key(text, key, i),
                        format!(
                            "toolchain {}: {key} {value:?} must be a version like 13 or 2.39 (letters, digits, '.', '_', '-')",
                            t.name
                        ),
                    );
                }
            }
            if !is_image_reference(&t.base_image) {
                return err(
                    line_of(text, "base_image", &t.base_image, 0),
                    format!(
                        "toolchain {}: base_image {:?} is not an image reference like ubuntu:noble",
                        t.name, t.base_image
                    ),
                );
            }
            if let Some(os) = &t.spack_os {
                if !is_safe_name(os) {
                    return err(
                        line_of(text, "spack_os", os, 0),
                        format!(
                            "toolchain {}: spack_os {os:?} is not a Spack OS name",
                            t.name
                        ),
                    );
                }
            }
        }
        for (i, a) in self.archs.iter().enumerate() {
            if a.runner_labels.is_empty() {
                return err(
                    line_of_key(text, "runner_labels", i),
                    format!(
                        "arch {}: runner_labels is empty; give the labels its runners carry, like [self-hosted, X64]",
                        a.name
                    ),
                );
            }
            // Labels travel into `runs-on` and comma-joined into tables: no commas, quotes or spaces.
            if let Some(bad) = a.runner_labels.iter().find(|l| !is_safe_name(l)) {
                return err(
                    line_of_key(text, "runner_labels", i),
                    format!(
                        "arch {}: runner label {bad:?} may only hold letters, digits, '.', '_' and '-'",
                        a.name
                    ),
                );
            }
            if !is_safe_name(&a.spack_target) {
                return err(
                    line_of(text, "spack_target", &a.spack_target, 0),
                    format!(
                        "arch {}: spack_target {:?} is not a Spack target",
                        a.name, a.spack_target
                    ),
                );
            }
        }
        for (section, defaults) in [
            (
                "slurm_versions",
                self.slurm_versions.iter().filter(|v| v.default).count(),
            ),
            (
                "toolchains",
                self.toolchains.iter().filter(|v| v.default).count(),
            ),
            ("archs", self.archs.iter().filter(|v| v.default).count()),
            ("builds", self.builds.iter().filter(|v| v.default).count()),
        ] {
            if defaults == 0 {
                return err(
                    line_of_key(text, section, 0),
                    format!("{section}: no entry has default: true; mark at least one"),
                );
            }
        }
        Ok(())
    }

    pub fn release(&self, v: &SlurmVersion) -> &SlurmRelease {
        self.slurm_versions
            .iter()
            .find(|r| &r.name == v)
            .expect("validated version")
    }
    pub fn toolchain(&self, t: &Toolchain) -> &ToolchainInfo {
        self.toolchains
            .iter()
            .find(|r| &r.name == t)
            .expect("validated toolchain")
    }
    /// The architecture a cell gets when none is named: the first marked `default`.
    pub fn default_arch(&self) -> &Arch {
        &self
            .archs
            .iter()
            .find(|a| a.default)
            .expect("validated: one arch is default")
            .name
    }

    /// The build kind a cell gets when none is named: the first marked `default`.
    pub fn default_build(&self) -> &BuildKind {
        &self
            .builds
            .iter()
            .find(|b| b.default)
            .expect("validated: one build is default")
            .name
    }

    pub fn arch(&self, a: &Arch) -> &ArchInfo {
        self.archs
            .iter()
            .find(|r| &r.name == a)
            .expect("validated arch")
    }

    /// The names of one axis's entries, in file order, for error messages.
    pub fn slurm_version_names(&self) -> Vec<&str> {
        self.slurm_versions
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }
    pub fn toolchain_names(&self) -> Vec<&str> {
        self.toolchains.iter().map(|r| r.name.as_str()).collect()
    }
    pub fn arch_names(&self) -> Vec<&str> {
        self.archs.iter().map(|r| r.name.as_str()).collect()
    }
    pub fn build_names(&self) -> Vec<&str> {
        self.builds.iter().map(|r| r.name.as_str()).collect()
    }

    /// Check a user-given Slurm version against the data file.
    pub fn slurm_version(&self, s: &str) -> Result<SlurmVersion> {
        lookup(
            "Slurm version",
            s,
            self.slurm_versions.iter().map(|r| &r.name),
        )
    }
    pub fn toolchain_name(&self, s: &str) -> Result<Toolchain> {
        lookup("toolchain", s, self.toolchains.iter().map(|r| &r.name))
    }
    pub fn arch_name(&self, s: &str) -> Result<Arch> {
        lookup("architecture", s, self.archs.iter().map(|r| &r.name))
    }
    pub fn build_kind(&self, s: &str) -> Result<BuildKind> {
        lookup("build", s, self.builds.iter().map(|r| &r.name))
    }
}

fn lookup<'a, T: AsRef<str> + Clone + 'a>(
    what: &str,
    s: &str,
    names: impl Iterator<Item = &'a T> + Clone,
) -> Result<T> {
    let s = s.trim();
    names
        .clone()
        .find(|n| n.as_ref() == s)
        .cloned()
        .ok_or_else(|| {
            let valid: Vec<&str> = names.map(|n| n.as_ref()).collect();
            let hint = did_you_mean(what, s, &valid)
                .map(|v| format!("; did you mean {v}?"))
                .unwrap_or_default();
            bad_input(format!(
                "unknown {what} {}{hint}; valid: {}",
                crate::exit::quoted(s),
                valid.join(", ")
            ))
        })
}

/// The valid name someone most likely meant: another spelling of an architecture (`x86_64`,
/// `aarch64`), or the same name in other letter case.
fn did_you_mean<'a>(what: &str, s: &str, valid: &[&'a str]) -> Option<&'a str> {
    let alias = match (what, s.to_ascii_lowercase().as_str()) {
        ("architecture", "x86_64" | "x86-64" | "x64" | "amd64" | "intel64") => "amd64",
        ("architecture", "aarch64" | "arm64" | "armv8") => "arm64",
        _ => "",
    };
    valid
        .iter()
        .copied()
        .find(|v| *v == alias || v.eq_ignore_ascii_case(s))
}

/// A user's list for one axis: not given, `all`, or named values.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ListArg {
    /// Not given: the entries marked `default: true`.
    #[default]
    Default,
    /// `all`: every entry not marked `legacy`.
    All,
    Named(Vec<String>),
}

impl ListArg {
    /// Parse `all`, or a comma list with optional whitespace. Empty lists and duplicates are errors.
    pub fn parse(axis: &str, raw: &str) -> Result<Self> {
        let trimmed = raw.trim();
        if trimmed.eq_ignore_ascii_case("all") {
            return Ok(ListArg::All);
        }
        let items: Vec<String> = trimmed.split(',').map(|s| s.trim().to_string()).collect();
        if trimmed.is_empty() || items.iter().all(|s| s.is_empty()) {
            return Err(bad_input(format!(
                "{axis}: the list is empty; give `all` or a comma list"
            )));
        }
        if items.iter().any(|s| s.is_empty()) {
            return Err(bad_input(format!(
                "{axis}: {raw:?} has an empty item between commas"
            )));
        }
        let mut seen = BTreeSet::new();
        for item in &items {
            if !seen.insert(item.as_str()) {
                return Err(bad_input(format!("{axis}: {item:?} is listed twice")));
            }
        }
        Ok(ListArg::Named(items))
    }

    /// [`ListArg::parse`], with the values the axis accepts in the error (`valid: all, a, b`).
    pub fn parse_among(axis: &str, raw: &str, valid: &[&str]) -> Result<Self> {
        Self::parse(axis, raw)
            .map_err(|e| bad_input(format!("{e}; valid: all, {}", valid.join(", "))))
    }

    fn resolve<T: Clone>(
        &self,
        entries: impl Iterator<Item = (T, bool, bool)>,
        check: impl Fn(&str) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            ListArg::Default => Ok(entries.filter(|(_, d, _)| *d).map(|(n, _, _)| n).collect()),
            ListArg::All => Ok(entries
                .filter(|(_, _, legacy)| !*legacy)
                .map(|(n, _, _)| n)
                .collect()),
            ListArg::Named(names) => names.iter().map(|n| check(n)).collect(),
        }
    }
}

/// A cell before it is laid out: which pipeline, toolchain, version, arch and build.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellKey {
    pub pipeline: Pipeline,
    pub slurm_version: Option<SlurmVersion>,
    pub toolchain: Toolchain,
    pub arch: Arch,
    pub build: BuildKind,
}

impl CellKey {
    /// A stable id, usable in job names, artifact names and file names:
    /// `version-25.11-noble-amd64-cpu`, `deps-noble-amd64-cpu`.
    pub fn id(&self) -> String {
        match &self.slurm_version {
            Some(v) => format!(
                "{}-{}-{}-{}-{}",
                self.pipeline, v, self.toolchain, self.arch, self.build
            ),
            None => format!(
                "{}-{}-{}-{}",
                self.pipeline, self.toolchain, self.arch, self.build
            ),
        }
    }
}

/// A cell selector for `--include`/`--exclude`: `slurm=25.11,toolchain=noble,arch=arm64,build=gpu`,
/// any subset of the keys (a missing key matches anything; `version` is accepted for `slurm`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CellSelector {
    pub slurm_version: Option<SlurmVersion>,
    pub toolchain: Option<Toolchain>,
    pub arch: Option<Arch>,
    pub build: Option<BuildKind>,
}

impl fmt::Display for CellSelector {
    /// The selector as it is written: `slurm=25.11,toolchain=noble`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("slurm", self.slurm_version.as_ref().map(|v| v.as_str())),
            ("toolchain", self.toolchain.as_ref().map(|v| v.as_str())),
            ("arch", self.arch.as_ref().map(|v| v.as_str())),
            ("build", self.build.as_ref().map(|v| v.as_str())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
        f.write_str(&parts.join(","))
    }
}

impl CellSelector {
    pub fn parse(m: &SupportMatrix, raw: &str) -> Result<Self> {
        let mut sel = CellSelector::default();
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(bad_input(
                "an empty cell selector; write e.g. slurm=25.11,toolchain=noble",
            ));
        }
        for part in raw.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(bad_input(format!(
                    "cell selector part {:?} is not key=value; keys: slurm, toolchain, arch, build",
                    part.trim()
                )));
            };
            let (k, v) = (k.trim(), v.trim());
            let dup = match k {
                "slurm" | "version" | "slurm_version" => sel.slurm_version.replace(m.slurm_version(v)?).is_some(),
                "toolchain" => sel.toolchain.replace(m.toolchain_name(v)?).is_some(),
                "arch" => sel.arch.replace(m.arch_name(v)?).is_some(),
                "build" => sel.build.replace(m.build_kind(v)?).is_some(),
                other => {
                    return Err(bad_input(format!(
                        "unknown cell selector key {other:?} in {raw:?}; valid keys: slurm, toolchain, arch, build"
                    )))
                }
            };
            if dup {
                return Err(bad_input(format!("cell selector {raw:?} names {k} twice")));
            }
        }
        Ok(sel)
    }

    /// Split a list of selectors given as one string (`;` or newline separated, from env vars).
    pub fn parse_many(m: &SupportMatrix, raw: &[String]) -> Result<Vec<Self>> {
        raw.iter()
            .flat_map(|r| {
                r.split([';', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .map(|s| Self::parse(m, &s))
            .collect()
    }

    pub fn matches(&self, key: &CellKey) -> bool {
        self.slurm_version
            .as_ref()
            .is_none_or(|v| key.slurm_version.as_ref() == Some(v))
            && self.toolchain.as_ref().is_none_or(|t| &key.toolchain == t)
            && self.arch.as_ref().is_none_or(|a| &key.arch == a)
            && self.build.as_ref().is_none_or(|b| &key.build == b)
    }
}

/// What the user asked for, before expansion.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub slurm_versions: ListArg,
    pub toolchains: ListArg,
    pub archs: ListArg,
    pub builds: ListArg,
    pub include: Vec<CellSelector>,
    pub exclude: Vec<CellSelector>,
}

/// What a [`Selection`] expands into.
#[derive(Debug)]
pub struct Expansion<'a> {
    /// The selected cells.
    pub cells: Vec<CellKey>,
    /// The excludes that match none of the cells the lists and includes select, in the order
    /// given (most likely a typo in a workflow input; the caller warns).
    pub unmatched_excludes: Vec<&'a CellSelector>,
}

impl Selection {
    /// Expand into cells: the cross product of the lists, plus includes, minus excludes; in a
    /// stable order (data-file order of each axis) with no duplicates.
    pub fn expand(&self, m: &SupportMatrix, pipeline: Pipeline) -> Result<Vec<CellKey>> {
        Ok(self.expansion(m, pipeline)?.cells)
    }

    /// [`Selection::expand`], also telling which excludes left nothing out.
    pub fn expansion(&self, m: &SupportMatrix, pipeline: Pipeline) -> Result<Expansion<'_>> {
        let versions = self.slurm_versions.resolve(
            m.slurm_versions
                .iter()
                .map(|r| (r.name.clone(), r.default, r.legacy)),
            |s| m.slurm_version(s),
        )?;
        let toolchains = self.toolchains.resolve(
            m.toolchains
                .iter()
                .map(|r| (r.name.clone(), r.default, r.legacy)),
            |s| m.toolchain_name(s),
        )?;
        let archs = self.archs.resolve(
            m.archs
                .iter()
                .map(|r| (r.name.clone(), r.default, r.legacy)),
            |s| m.arch_name(s),
        )?;
        let builds = self.builds.resolve(
            m.builds
                .iter()
                .map(|r| (r.name.clone(), r.default, r.legacy)),
            |s| m.build_kind(s),
        )?;

        let version_axis: Vec<Option<SlurmVersion>> = if pipeline.has_slurm_version() {
            versions.into_iter().map(Some).collect()
        } else {
            vec![None]
        };

        let mut cells = Vec::new();
        for v in &version_axis {
            for t in &toolchains {
                for a in &archs {
                    for b in &builds {
                        cells.push(CellKey {
                            pipeline,
                            slurm_version: v.clone(),
                            toolchain: t.clone(),
                            arch: a.clone(),
                            build: b.clone(),
                        });
                    }
                }
            }
        }
        for inc in &self.include {
            let key = self.included_cell(m, pipeline, inc)?;
            // Asking for a cell and leaving it out in one run is a contradiction, not a no-op.
            if let Some(ex) = self.exclude.iter().find(|e| e.matches(&key)) {
                return Err(bad_input(format!(
                    "--include {inc} names cell {}, which --exclude {ex} leaves out; drop one of them",
                    key.id()
                )));
            }
            if !cells.contains(&key) {
                cells.push(key);
            }
        }
        // Every exclude is tried on every cell (no stopping at the first that matches), so the
        // same pass tells which excludes matched nothing.
        let mut matched = vec![false; self.exclude.len()];
        cells.retain(|c| {
            let mut keep = true;
            for (hit, e) in matched.iter_mut().zip(&self.exclude) {
                if e.matches(c) {
                    *hit = true;
                    keep = false;
                }
            }
            keep
        });
        if cells.is_empty() {
            return Err(bad_input(
                "the selection leaves no cells: every combination was excluded",
            ));
        }
        let unmatched_excludes = self
            .exclude
            .iter()
            .zip(matched)
            .filter_map(|(e, hit)| (!hit).then_some(e))
            .collect();
        Ok(Expansion {
            cells,
            unmatched_excludes,
        })
    }

    /// An include must name one cell: toolchain always, a Slurm version unless the pipeline is
    /// deps; arch and build default to the data file's first default entry.
    fn included_cell(
        &self,
        m: &SupportMatrix,
        pipeline: Pipeline,
        inc: &CellSelector,
    ) -> Result<CellKey> {
        let toolchain = inc.toolchain.clone().ok_or_else(|| {
            bad_input("an --include must name a toolchain, e.g. slurm=25.11,toolchain=noble")
        })?;
        let slurm_version = match (pipeline.has_slurm_version(), &inc.slurm_version) {
            (true, None) => {
                return Err(bad_input(format!(
                    "an --include for the {pipeline} pipeline must name a Slurm version (slurm=...)"
                )))
            }
            (true, Some(v)) => Some(v.clone()),
            (false, Some(v)) => {
                return Err(bad_input(format!(
                    "the deps pipeline has no Slurm version, but an --include names slurm={v}"
                )))
            }
            (false, None) => None,
        };
        Ok(CellKey {
            pipeline,
            slurm_version,
            toolchain,
            arch: inc.arch.clone().unwrap_or_else(|| m.default_arch().clone()),
            build: inc
                .build
                .clone()
                .unwrap_or_else(|| m.default_build().clone()),
        })
    }
}

/// Load the data file named by a flag or env value, with context.
pub fn load_from_arg(path: Option<&Path>) -> Result<SupportMatrix> {
    SupportMatrix::load(path).context("loading the support matrix")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> SupportMatrix {
        SupportMatrix::embedded()
    }

    #[test]
    fn embedded_defaults_are_3_versions_by_6_toolchains() {
        let cells = Selection::default()
            .expand(&m(), Pipeline::Version)
            .unwrap();
        assert_eq!(cells.len(), 18);
        assert!(cells
            .iter()
            .all(|c| c.arch.as_str() == "amd64" && c.build.as_str() == "cpu"));
        assert!(!cells.iter().any(|c| c.toolchain.as_str() == "focal"));
        let deps = Selection::default().expand(&m(), Pipeline::Deps).unwrap();
        assert_eq!(deps.len(), 6);
        assert!(deps.iter().all(|c| c.slurm_version.is_none()));
    }

    #[test]
    fn all_leaves_out_legacy_but_names_reach_it() {
        let sel = Selection {
            toolchains: ListArg::parse("toolchains", "all").unwrap(),
            archs: ListArg::parse("archs", "all").unwrap(),
            builds: ListArg::parse("builds", "all").unwrap(),
            ..Default::default()
        };
        assert_eq!(
            sel.expand(&m(), Pipeline::Tarball).unwrap().len(),
            3 * 6 * 2 * 2
        );
        let focal = Selection {
            toolchains: ListArg::parse("toolchains", " focal ").unwrap(),
            ..Default::default()
        };
        assert_eq!(focal.expand(&m(), Pipeline::Tarball).unwrap().len(), 3);
    }

    #[test]
    fn spack_versions_map_to_what_slurm_reports() {
        let mm = m();
        let r = mm.release(&mm.slurm_version("25.11").unwrap());
        assert_eq!(r.spack_version, "25-11-6-1");
        assert_eq!(r.reported_version(), "25.11.6");
        let dotted = SlurmRelease {
            spack_version: "24.11.2".into(),
            ..r.clone()
        };
        assert_eq!(dotted.reported_version(), "24.11.2");
    }

    #[test]
    fn list_parsing_rejects_empty_and_duplicates() {
        assert_eq!(
            ListArg::parse("t", " noble , jammy ").unwrap(),
            ListArg::Named(vec!["noble".into(), "jammy".into()])
        );
        assert!(ListArg::parse("t", "").is_err());
        assert!(ListArg::parse("t", " , ").is_err());
        assert!(ListArg::parse("t", "noble,,jammy").is_err());
        let e = ListArg::parse("t", "noble,noble").unwrap_err();
        assert!(e.to_string().contains("twice"));
    }

    #[test]
    fn unknown_values_list_the_valid_ones() {
        let sel = Selection {
            toolchains: ListArg::parse("t", "noble,bionic").unwrap(),
            ..Default::default()
        };
        let e = sel.expand(&m(), Pipeline::Version).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"bionic\"") && text.contains("noble, jammy"),
            "{text}"
        );
        assert_eq!(crate::exit::code_for(&e), 2);
    }

    #[test]
    fn other_spellings_get_a_hint_and_long_values_are_cut() {
        for (given, hint) in [
            ("x86_64", "amd64"),
            ("aarch64", "arm64"),
            ("AMD64", "amd64"),
        ] {
            let e = lookup("architecture", given, m().archs.iter().map(|a| &a.name)).unwrap_err();
            assert!(
                e.to_string().contains(&format!("did you mean {hint}?")),
                "{given}: {e}"
            );
        }
        let e = lookup("toolchain", "Noble", m().toolchains.iter().map(|t| &t.name)).unwrap_err();
        assert!(e.to_string().contains("did you mean noble?"), "{e}");
        let long = "x".repeat(131_000);
        let e = lookup("toolchain", &long, m().toolchains.iter().map(|t| &t.name)).unwrap_err();
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
        assert!(e.to_string().contains("131000 bytes"), "{e}");
    }

    #[test]
    fn include_adds_and_exclude_removes() {
        let mm = m();
        let sel = Selection {
            slurm_versions: ListArg::parse("v", "25.11").unwrap(),
            include: CellSelector::parse_many(
                &mm,
                &["slurm=24.11,toolchain=noble,arch=arm64,build=gpu".into()],
            )
            .unwrap(),
            exclude: CellSelector::parse_many(
                &mm,
                &["toolchain=rockylinux8;toolchain=rockylinux9".into()],
            )
            .unwrap(),
            ..Default::default()
        };
        let cells = sel.expand(&mm, Pipeline::Version).unwrap();
        assert_eq!(cells.len(), 5);
        assert_eq!(cells.last().unwrap().id(), "version-24.11-noble-arm64-gpu");
        assert!(CellSelector::parse(&mm, "toolchain=noble,toolchain=jammy").is_err());
        assert!(CellSelector::parse(&mm, "os=noble").is_err());
        assert!(CellSelector::parse(&mm, "toolchain=plan9").is_err());
    }

    #[test]
    fn list_errors_name_the_valid_values() {
        let v = ["noble", "jammy"];
        let e = ListArg::parse_among("--toolchains", " ", &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--toolchains: the list is empty; give `all` or a comma list; valid: all, noble, jammy"
        );
        assert_eq!(crate::exit::code_for(&e), 2);
        let e = ListArg::parse_among("--toolchains", "noble,noble", &v).unwrap_err();
        assert!(
            e.to_string().ends_with("twice; valid: all, noble, jammy"),
            "{e}"
        );
        assert_eq!(m().toolchain_names()[..2], ["noble", "jammy"]);
    }

    #[test]
    fn an_excluded_include_is_refused_and_idle_excludes_are_found() {
        let mm = m();
        let sel = Selection {
            include: CellSelector::parse_many(&mm, &["slurm=24.11,toolchain=focal".into()])
                .unwrap(),
            exclude: CellSelector::parse_many(&mm, &["toolchain=focal".into()]).unwrap(),
            ..Default::default()
        };
        let e = sel.expand(&mm, Pipeline::Version).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--include slurm=24.11,toolchain=focal names cell version-24.11-focal-amd64-cpu, which --exclude toolchain=focal leaves out; drop one of them"
        );

        let sel = Selection {
            exclude: CellSelector::parse_many(
                &mm,
                &["toolchain=noble;arch=arm64;slurm=23.11,build=gpu".into()],
            )
            .unwrap(),
            ..Default::default()
        };
        let expansion = sel.expansion(&mm, Pipeline::Version).unwrap();
        assert_eq!(expansion.cells, sel.expand(&mm, Pipeline::Version).unwrap());
        let idle: Vec<String> = expansion
            .unmatched_excludes
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(idle, ["arch=arm64", "slurm=23.11,build=gpu"]);

        // Excludes that leave out the same cells each count as matched, whichever comes first;
        // an include outside the lists is among the cells an exclude can match.
        let sel = Selection {
            toolchains: ListArg::parse("toolchains", "noble,jammy").unwrap(),
            include: CellSelector::parse_many(&mm, &["slurm=24.11,toolchain=focal".into()])
                .unwrap(),
            exclude: CellSelector::parse_many(
                &mm,
                &[
                    "toolchain=noble;slurm=25.11,toolchain=noble;build=gpu;slurm=24.11,arch=arm64"
                        .into(),
                ],
            )
            .unwrap(),
            ..Default::default()
        };
        let expansion = sel.expansion(&mm, Pipeline::Version).unwrap();
        let ids: Vec<String> = expansion.cells.iter().map(|c| c.id()).collect();
        assert_eq!(
            ids,
            [
                "version-25.11-jammy-amd64-cpu",
                "version-24.11-jammy-amd64-cpu",
                "version-23.11-jammy-amd64-cpu",
                "version-24.11-focal-amd64-cpu",
            ]
        );
        let idle: Vec<String> = expansion
            .unmatched_excludes
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(idle, ["build=gpu", "slurm=24.11,arch=arm64"]);
    }

    #[test]
    fn include_must_name_a_whole_cell() {
        let mm = m();
        let sel = Selection {
            include: CellSelector::parse_many(&mm, &["toolchain=noble".into()]).unwrap(),
            ..Default::default()
        };
        assert!(sel.expand(&mm, Pipeline::Version).is_err());
        assert_eq!(sel.expand(&mm, Pipeline::Deps).unwrap().len(), 6);
    }

    #[test]
    fn broken_data_files_name_the_line() {
        let dup = EMBEDDED.replacen("name: jammy", "name: noble", 1);
        let e = SupportMatrix::parse(&dup, "m.yaml")
            .unwrap_err()
            .to_string();
        let expected_line = dup
            .lines()
            .position(|l| l.contains("name: noble") && !l.contains("jammy"))
            .unwrap();
        // the second `name: noble` is the duplicate
        let second = dup
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == "- name: noble")
            .nth(1)
            .unwrap()
            .0
            + 1;
        assert!(
            e.contains(&format!("m.yaml:{second}:")) && e.contains("duplicate"),
            "{e} (first at {expected_line})"
        );

        let img = EMBEDDED.replace(
            "base_image: docker.io/library/ubuntu:jammy",
            "base_image: \"ubuntu jammy; rm -rf /\"",
        );
        let e = SupportMatrix::parse(&img, "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("base_image") && e.contains("m.yaml:"), "{e}");

        let e = SupportMatrix::parse("schema: [", "m.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.yaml:1"), "{e}");

        let unknown = EMBEDDED.replacen(
            "    channel: latest",
            "    channel: latest\n    colour: red",
            1,
        );
        assert!(SupportMatrix::parse(&unknown, "m.yaml")
            .unwrap_err()
            .to_string()
            .contains("colour"));
    }

    /// The error for a changed copy of the embedded file, and the 1-based line of `marker` in it.
    fn broken(text: &str, marker: &str) -> (String, usize) {
        let e = SupportMatrix::parse(text, "m.yaml").unwrap_err();
        assert_eq!(crate::exit::code_for(&e), 2);
        let line = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
        (e.to_string(), line)
    }

    #[test]
    fn blank_and_multi_line_free_text_is_refused_at_its_line() {
        let cases = [
            (
                EMBEDDED.replacen("gcc: \"11.4.0\"", "gcc: \"\"", 1),
                "gcc: \"\"",
                "gcc \"\"",
            ),
            (
                EMBEDDED.replacen("os: Ubuntu 22.04", "os: \"Ubuntu\\n::error::pwned\"", 1),
                "pwned",
                "os \"Ubuntu\\n::error::pwned\"",
            ),
            (
                EMBEDDED.replacen("os: Ubuntu 22.04", "os: \"x ::error::y\"", 1),
                "::error::y",
                "no '::'",
            ),
            (
                EMBEDDED.replacen("os: Ubuntu 22.04", "os: \" \"", 1),
                "os: \" \"",
                "not blank",
            ),
            (
                EMBEDDED.replacen("glibc: \"2.35\"", "glibc: \"2.35\\t\"", 1),
                "glibc: \"2.35",
                "glibc",
            ),
            (
                EMBEDDED.replacen("channel: lts", "channel: \"\"", 1),
                "channel: \"\"",
                "channel",
            ),
        ];
        for (text, marker, expected) in &cases {
            let (e, line) = broken(text, marker);
            assert!(
                e.starts_with(&format!("m.yaml:{line}:")) && e.contains(expected),
                "{marker}: {e}"
            );
        }
    }

    #[test]
    fn bad_runner_labels_are_refused_at_their_line() {
        for (labels, expected) in [
            ("[]", "runner_labels is empty"),
            ("[self-hosted, \"X64,ARM64\"]", "\"X64,ARM64\""),
            ("[self-hosted, 'X\"64']", "X\\\"64"),
            ("[self-hosted, \"\"]", "label \"\""),
        ] {
            let text = EMBEDDED.replacen(
                "runner_labels: [self-hosted, ARM64]",
                &format!("runner_labels: {labels}"),
                1,
            );
            let (e, line) = broken(&text, &format!("runner_labels: {labels}"));
            assert!(
                e.starts_with(&format!("m.yaml:{line}: arch arm64:")) && e.contains(expected),
                "{labels}: {e}"
            );
        }
    }

    #[test]
    fn an_unknown_family_and_a_duplicate_arch_name_their_line() {
        let text = EMBEDDED.replacen("family: dnf", "family: yum", 1);
        let (e, line) = broken(&text, "family: yum");
        assert!(
            e.starts_with(&format!("m.yaml:{line}:")) && e.contains("yum") && e.contains("apt"),
            "{e}"
        );

        let text = EMBEDDED.replacen("- name: arm64", "- name: amd64", 1);
        let e = SupportMatrix::parse(&text, "m.yaml")
            .unwrap_err()
            .to_string();
        let second = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == "- name: amd64")
            .nth(1)
            .unwrap()
            .0
            + 1;
        assert!(
            e.starts_with(&format!("m.yaml:{second}: archs: duplicate name \"amd64\"")),
            "{e}"
        );
    }

    #[test]
    fn an_empty_section_or_one_without_a_default_names_its_line() {
        let start = EMBEDDED.find("\nbuilds:\n").unwrap() + 1;
        let text = format!("{}builds: []\n", &EMBEDDED[..start]);
        let (e, line) = broken(&text, "builds: []");
        assert!(
            e.starts_with(&format!("m.yaml:{line}: builds is empty")),
            "{e}"
        );

        let text = format!(
            "{}builds:\n  - name: cpu\n  - name: gpu\n",
            &EMBEDDED[..start]
        );
        let (e, line) = broken(&text, "builds:");
        assert!(
            e.starts_with(&format!(
                "m.yaml:{line}: builds: no entry has default: true"
            )),
            "{e}"
        );
    }

    #[test]
    fn names_with_metacharacters_are_refused() {
        let bad = EMBEDDED.replacen("name: noble", "name: \"noble;id\"", 1);
        assert!(SupportMatrix::parse(&bad, "m.yaml").is_err());
        let sel = Selection {
            toolchains: ListArg::parse("t", "$(id)").unwrap(),
            ..Default::default()
        };
        assert!(sel.expand(&m(), Pipeline::Version).is_err());
    }
}
