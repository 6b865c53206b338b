//! Assembling the relocatable tarball of a cell: the view, the modulefile from the environment
//! directory sf-spackenv wrote, the install assets shipped in this binary (`data/slurm_assets/`)
//! and `BUILDINFO.json` from the cell and the environment's lock file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use sf_archive::pack::{extra, ExtraFile};
use sf_archive::{BuildInfo, GzOptions, PackInput};
use sf_core::bad_input;
use sf_core::layout::Cell;

/// The install tree and view paths inside the build container: RPATHs and links under them are
/// relocated.
pub const CONTAINER_BUILD_PREFIXES: [&str; 3] = [
    sf_core::container::INSTALL_ROOT,
    sf_core::container::VIEW_ROOT,
    sf_core::container::VIEW_STORE,
];

/// The assets every tarball carries under `data/slurm_assets/`, embedded so the binary works
/// wherever it is installed.
const ASSETS: [(&str, &[u8], bool); 9] = [
    (
        "slurm_install.sh",
        include_bytes!("../../../data/slurm_assets/slurm_install.sh"),
        true,
    ),
    (
        "defaults/slurmd.service",
        include_bytes!("../../../data/slurm_assets/defaults/slurmd.service"),
        false,
    ),
    (
        "defaults/slurmctld.service",
        include_bytes!("../../../data/slurm_assets/defaults/slurmctld.service"),
        false,
    ),
    (
        "defaults/slurmdbd.service",
        include_bytes!("../../../data/slurm_assets/defaults/slurmdbd.service"),
        false,
    ),
    (
        "slurm/slurm.conf.template",
        include_bytes!("../../../data/slurm_assets/slurm/slurm.conf.template"),
        false,
    ),
    (
        "slurm/slurmdbd.conf.template",
        include_bytes!("../../../data/slurm_assets/slurm/slurmdbd.conf.template"),
        false,
    ),
    (
        "slurm/cgroup.conf.template",
        include_bytes!("../../../data/slurm_assets/slurm/cgroup.conf.template"),
        false,
    ),
    (
        "slurm/topology.conf.template",
        include_bytes!("../../../data/slurm_assets/slurm/topology.conf.template"),
        false,
    ),
    (
        "mysql/slurm_acct_db.sql",
        include_bytes!("../../../data/slurm_assets/mysql/slurm_acct_db.sql"),
        false,
    ),
];

/// The install assets as tarball entries.
pub fn assets() -> Vec<ExtraFile> {
    ASSETS
        .iter()
        .map(|(p, b, x)| extra(&format!("data/slurm_assets/{p}"), b.to_vec(), *x))
        .collect()
}

/// Where the modulefile comes from: `--modulefile`, else `{env_dir}/modules/slurm/{v}-{tc}.lua`.
pub fn find_modulefile(
    cell: &Cell,
    env_dir: Option<&Path>,
    explicit: Option<&Path>,
) -> Result<PathBuf> {
    let module = crate::cell::module_name(cell)?;
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(bad_input(format!(
                "the modulefile {} does not exist",
                p.display()
            )))
        };
    }
    let Some(env_dir) = env_dir else {
        return Err(bad_input(
            "no modulefile: give --env-dir (the directory sf-spackenv wrote) or --modulefile",
        ));
    };
    let p = env_dir.join("modules").join(format!("{module}.lua"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(bad_input(format!(
            "{} has no modulefile {}: run sf-spackenv for this cell into it, or give --modulefile",
            env_dir.display(),
            p.display()
        )))
    }
}

/// Package name-version to DAG hash from a Spack lock file (`spack.lock`), for BUILDINFO.
pub fn spec_hashes(lock: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", lock.display()))?;
    let mut out = BTreeMap::new();
    if let Some(specs) = v.get("concrete_specs").and_then(|s| s.as_object()) {
        for (hash, spec) in specs {
            let name = spec.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            let version = spec.get("version").and_then(|n| n.as_str()).unwrap_or("");
            let key = if version.is_empty() {
                name.to_string()
            } else {
                format!("{name}@{version}")
            };
            out.insert(key, hash.clone());
        }
    }
    Ok(out)
}

/// Build facts from the cell.
pub fn buildinfo(
    cell: &Cell,
    source_commit: Option<String>,
    spec_hashes: BTreeMap<String, String>,
) -> BuildInfo {
    let mut b = BuildInfo::new();
    b.slurm_version = cell.slurm_version.as_ref().map(|v| v.as_str().to_string());
    b.slurm_spack_version = cell.slurm_spack_version.clone();
    b.toolchain = cell.toolchain.as_str().to_string();
    b.os = cell.os.clone();
    b.gcc = cell.gcc.clone();
    b.glibc = cell.glibc.clone();
    b.arch = cell.arch.as_str().to_string();
    b.target = cell.spack_target.clone();
    b.gpu = cell.gpu;
    b.spec_hashes = spec_hashes;
    b.source_commit = source_commit;
    b
}

/// Everything the pack of one cell needs.
#[derive(Debug)]
pub struct TarballRequest<'a> {
    pub cell: &'a Cell,
    pub view: PathBuf,
    pub env_dir: Option<PathBuf>,
    pub modulefile: Option<PathBuf>,
    pub build_prefixes: Vec<String>,
    pub source_date_epoch: Option<u64>,
    pub source_commit: Option<String>,
    pub gzip: GzOptions,
    /// What the view was really built on, when measured.
    pub built_on: Option<sf_archive::BuiltOn>,
    /// A view the pipeline's Spack build did not make.
    pub rehearsal: bool,
}

/// The pack input for a cell.
pub fn pack_input(req: &TarballRequest) -> Result<PackInput> {
    let module = crate::cell::module_name(req.cell)?;
    let modulefile = find_modulefile(req.cell, req.env_dir.as_deref(), req.modulefile.as_deref())?;
    let bytes =
        std::fs::read(&modulefile).with_context(|| format!("reading {}", modulefile.display()))?;
    let mut extras = vec![extra(&format!("modules/{module}.lua"), bytes, false)];
    extras.extend(assets());
    let hashes = match req
        .env_dir
        .as_ref()
        .map(|d| d.join("spack.lock"))
        .filter(|p| p.is_file())
    {
        Some(lock) => spec_hashes(&lock)?,
        None => BTreeMap::new(),
    };
    let prefixes = if req.build_prefixes.is_empty() {
        CONTAINER_BUILD_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        req.build_prefixes.clone()
    };
    Ok(PackInput {
        view: req.view.clone(),
        build_prefixes: prefixes,
        extras,
        buildinfo: sf_archive::BuildInfo {
            built_on: req.built_on.clone(),
            rehearsal: req.rehearsal,
            ..buildinfo(req.cell, req.source_commit.clone(), hashes)
        },
        source_date_epoch: req.source_date_epoch,
        gzip: req.gzip,
    })
}
