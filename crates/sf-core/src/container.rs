//! Where things are inside the build container: the contract between the files sf-spackenv writes
//! and the mounts sf-build makes, kept here so both read the same constants. The paths are fixed
//! (not per cell) so the rendered files are the same bytes wherever the host keeps its caches;
//! sf-build decides the host side of each mount.

use serde::Serialize;

/// The cell's output directory (spack.yaml, build.sh, modules/), mounted read-write: Spack keeps
/// the environment's lock file and `.spack-env/` next to spack.yaml.
pub const ENV_DIR: &str = "/opt/slurm-factory/env";
/// Logs of each build step.
pub const LOG_DIR: &str = "/opt/slurm-factory/env/logs";
/// The host cache root (`~/.slurm-factory` or `SLURM_FACTORY_CACHE_DIR`), mounted read-write.
pub const CACHE_DIR: &str = "/opt/slurm-factory-cache";
/// The runner's shared local binary cache (seed 004's `buildcache/`), an unsigned mirror builds
/// read from; sf-build merges each successful run's own mirror into it.
pub const LOCAL_MIRROR_DIR: &str = "/opt/slurm-factory-cache/buildcache";
/// This run's own mirror, which the build pushes to unsigned: exactly the cell's packages, what
/// sf-sign and sf-publish take next. Mounted per run, so parallel cells never share it.
pub const OUT_MIRROR_DIR: &str = "/opt/slurm-factory/mirror";
/// Downloaded sources (seed 004's `sourcecache/`).
pub const SOURCE_CACHE_DIR: &str = "/opt/slurm-factory-cache/sourcecache";
/// Spack's long-lived index caches.
pub const MISC_CACHE_DIR: &str = "/opt/slurm-factory-cache/misccache";
/// The cell's work tree (install tree, view, modules), mounted read-write per cell.
pub const SLURM_ROOT: &str = "/opt/slurm";
/// The padded install tree.
pub const INSTALL_ROOT: &str = "/opt/slurm/software";
/// The merged view the tarball is made from; also the modulefile's fallback prefix.
pub const VIEW_ROOT: &str = "/opt/slurm/view";
/// Where Spack keeps a view's tree (`view/` is a symlink to `._view/<hash>` beside it, and the
/// view's binaries carry RPATHs into it): a build-time prefix like the view itself.
pub const VIEW_STORE: &str = "/opt/slurm/._view";
/// Where Spack writes Lmod modulefiles.
pub const MODULES_ROOT: &str = "/opt/slurm/modules";
/// Spack's checkout in the image.
pub const SPACK_ROOT: &str = "/opt/spack";
/// The package repositories' trees in the image, one folder per namespace.
pub const REPOS_ROOT: &str = "/opt/spack-repos";
/// The Python Spack runs with (a venv holding its solver, clingo): `SPACK_PYTHON`.
pub const SPACK_PYTHON_ROOT: &str = "/opt/spack-python";
/// A local source mirror (air-gapped builds), mounted read-only by sf-build.
pub const SOURCE_MIRROR_DIR: &str = "/opt/slurm-factory-sources";
/// The file in a cell's environment directory that tells sf-build which host inputs to mount
/// (see [`LocalInputs`]).
pub const LOCAL_INPUTS_FILE: &str = "local-inputs.json";
/// The build user's home: writable by any uid, because the uid is chosen at run time.
pub const BUILD_HOME: &str = "/home/build";
/// The image's default build user and group id (outside the system range; any uid works).
pub const BUILD_UID: u32 = 10001;
/// Name of the local mirror in spack.yaml (what `spack buildcache push` names).
pub const LOCAL_MIRROR_NAME: &str = "local-buildcache";

/// Host inputs a build mounts, as sf-spackenv recorded them next to the environment: the contract
/// between the two for air-gapped builds. Absent file: nothing to mount.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalInputs {
    /// The local source mirror, mounted read-only at [`SOURCE_MIRROR_DIR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mirror: Option<std::path::PathBuf>,
}

/// The paths above as data, for the JSON sf-build reads.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ContainerPaths {
    pub env_dir: &'static str,
    pub log_dir: &'static str,
    pub cache_dir: &'static str,
    pub local_mirror_dir: &'static str,
    pub out_mirror_dir: &'static str,
    pub source_cache_dir: &'static str,
    pub slurm_root: &'static str,
    pub install_root: &'static str,
    pub view_root: &'static str,
    pub modules_root: &'static str,
    pub build_home: &'static str,
}

/// The fixed container layout.
pub const PATHS: ContainerPaths = ContainerPaths {
    env_dir: ENV_DIR,
    log_dir: LOG_DIR,
    cache_dir: CACHE_DIR,
    local_mirror_dir: LOCAL_MIRROR_DIR,
    out_mirror_dir: OUT_MIRROR_DIR,
    source_cache_dir: SOURCE_CACHE_DIR,
    slurm_root: SLURM_ROOT,
    install_root: INSTALL_ROOT,
    view_root: VIEW_ROOT,
    modules_root: MODULES_ROOT,
    build_home: BUILD_HOME,
};
