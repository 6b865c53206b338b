//! `sf-build build`: run one cell's Spack build in a container.
//!
//! The build image comes from the environment directory's `Dockerfile` (sf-spackenv), tagged by
//! toolchain and recipe digest, so it is built once per runner and reused by every cell (kept
//! unless `--remove-image`). Each run gets its own work directory under `{cache}/builds/work/`
//! holding a copy of the environment directory, the `/opt/slurm` tree (install tree, view,
//! modules) and the run's own mirror, which the build pushes to: parallel cells never share one,
//! and what is signed and published next is exactly this cell's packages. The host caches
//! (`buildcache/`, the runner's unsigned binary cache; `sourcecache/`; `misccache/`) are mounted
//! at the container paths of [`sf_core::container`]; after a successful build the run's mirror is
//! merged into `buildcache/` so later builds on this runner reuse its binaries. The container runs as the caller's
//! uid/gid, so everything it writes stays the runner's, and it gets no variable from our
//! environment: no signing key, passphrase or cloud credential can reach it. On failure a debug
//! bundle (build logs, `spack.yaml`, the script, the engine's output) is kept and its path reported.
//!
//! What stays of a work directory: every path the build reports (the view, modules, mirror,
//! environment and logs) is read by later steps of the job (`sf-sign mirror`, `test-mirror`,
//! `sf-build pack`), so they stay where they are. The install tree is read by none of them (the
//! view is a copy, the mirror holds the packages) and is most of a build's disk: it is removed
//! once a run has succeeded (after the pack, when there is one), unless `--keep`. A failed run
//! keeps everything, its debug bundle included.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use sf_core::bad_input;
use sf_core::container;
use sf_core::layout::Cell;

use crate::engine::Engine;

/// The cache subfolders mounted into the container (seed 004's layout plus Spack's misc cache),
/// each at `{container::CACHE_DIR}/{name}`.
pub const MOUNTED_CACHES: [&str; 3] = ["buildcache", "sourcecache", "misccache"];

/// One build.
#[derive(Debug)]
pub struct BuildRequest<'a> {
    pub cell: &'a Cell,
    pub env_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub engine: &'a Engine,
    pub run_args: Vec<String>,
    pub keep: bool,
    pub remove_image: bool,
    pub user: (u32, u32),
    pub jobs: Option<u32>,
}

/// What a successful build left.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    pub work_dir: PathBuf,
    pub image: String,
    pub view: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    /// The padded install tree (every package's prefix); `None` once removed or when the build
    /// made none.
    pub install_tree: Option<PathBuf>,
    pub env_dir: PathBuf,
    /// This run's unsigned mirror: the cell's packages only.
    pub mirror: PathBuf,
    /// The runner's shared cache the run's mirror was merged into, and what that added.
    pub cache_mirror: PathBuf,
    pub cache_merge: Option<sf_spack::cache::Merged>,
    pub logs: PathBuf,
}

/// A failed build: the error and the debug bundle kept for it.
#[derive(Debug)]
pub struct BuildFailure {
    pub error: anyhow::Error,
    pub bundle: Option<PathBuf>,
}

/// The default host cache root: `SLURM_FACTORY_CACHE_DIR`, else `~/.slurm-factory`.
pub fn default_cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".slurm-factory")
}

/// The build image tag: toolchain and the first 12 hex digits of the recipe's sha256, as
/// sf-spackenv reports it.
pub fn image_tag(cell: &Cell, dockerfile: &[u8]) -> String {
    let digest = hex::encode(Sha256::digest(dockerfile));
    format!(
        "slurm-factory-build:{}-{}",
        cell.toolchain.as_str(),
        &digest[..12]
    )
}

/// The cell's build image from the recipe in `env_dir` (sf-spackenv's `Dockerfile`), built
/// unless this runner has it already. The build context is `env_dir`: recipe and scripts only.
pub fn ensure_build_image(
    engine: &Engine,
    cell: &Cell,
    env_dir: &Path,
    log: &Path,
) -> Result<String> {
    let dockerfile = env_dir.join("Dockerfile");
    let recipe = fs::read(&dockerfile).with_context(|| {
        format!(
            "reading {} (the build image's recipe sf-spackenv wrote)",
            dockerfile.display()
        )
    })?;
    let image = image_tag(cell, &recipe);
    if engine.image_exists(&image) {
        eprintln!("sf-build: reusing the build image {image}");
    } else {
        eprintln!("sf-build: building the build image {image}");
        engine.build(&dockerfile, env_dir, std::slice::from_ref(&image), &[], log)?;
    }
    Ok(image)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if ft.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
        } else {
            fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The host inputs sf-spackenv recorded for the environment (none when it recorded none).
pub fn local_inputs(env_dir: &Path) -> Result<container::LocalInputs> {
    let path = env_dir.join(container::LOCAL_INPUTS_FILE);
    if !path.exists() {
        return Ok(container::LocalInputs::default());
    }
    let text = fs::read_to_string(&path)
        .map_err(|e| bad_input(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        bad_input(format!(
            "{} is not the local-inputs file sf-spackenv writes: {e}",
            path.display()
        ))
    })
}

/// Check the request before anything is created; the host inputs the build mounts.
pub fn check(req: &BuildRequest) -> Result<container::LocalInputs> {
    for f in ["Dockerfile", "build.sh"] {
        let p = req.env_dir.join(f);
        if !p.is_file() {
            return Err(bad_input(format!(
                "{} has no {f}: give --env-dir the directory sf-spackenv wrote for cell {}",
                req.env_dir.display(),
                req.cell.id
            )));
        }
    }
    let inputs = local_inputs(&req.env_dir)?;
    if let Some(dir) = &inputs.source_mirror {
        if !dir.is_dir() {
            return Err(bad_input(format!(
                "the local source mirror {} that sf-spackenv was given is not a directory here",
                dir.display()
            )));
        }
    }
    Ok(inputs)
}

/// Run the build.
pub fn build(req: &BuildRequest) -> std::result::Result<BuildOutcome, BuildFailure> {
    let inputs = check(req).map_err(|error| BuildFailure {
        error,
        bundle: None,
    })?;
    let work = prepare(req).map_err(|error| BuildFailure {
        error,
        bundle: None,
    })?;
    match run_in(req, &inputs, &work) {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            let bundle = debug_bundle(&work).ok();
            Err(BuildFailure { error, bundle })
        }
    }
}

fn prepare(req: &BuildRequest) -> Result<PathBuf> {
    for c in MOUNTED_CACHES {
        fs::create_dir_all(req.cache_dir.join(c))
            .with_context(|| format!("creating {}", req.cache_dir.join(c).display()))?;
    }
    let work = req.cache_dir.join("builds/work").join(format!(
        "{}-{}",
        req.cell.id,
        sf_core::fsutil::random_hex(4)?
    ));
    for d in ["slurm", "mirror"] {
        fs::create_dir_all(work.join(d))
            .with_context(|| format!("creating {}", work.join(d).display()))?;
    }
    copy_tree(&req.env_dir, &work.join("env"))?;
    fs::create_dir_all(work.join("env/logs"))?;
    // Run as root for another uid (rootful Podman): hand it what it must write to. As the runner
    // itself, everything is the runner's already.
    if current_uid() == 0 && req.user.0 != 0 {
        chown_tree(&work, req.user)?;
        for c in MOUNTED_CACHES {
            std::os::unix::fs::chown(req.cache_dir.join(c), Some(req.user.0), Some(req.user.1))?;
        }
    }
    Ok(work)
}

fn run_in(
    req: &BuildRequest,
    inputs: &container::LocalInputs,
    work: &Path,
) -> Result<BuildOutcome> {
    let image = ensure_build_image(
        req.engine,
        req.cell,
        &work.join("env"),
        &work.join("engine.log"),
    )?;
    let name = format!(
        "sf-build-{}-{}",
        req.cell.id,
        sf_core::fsutil::random_hex(4)?
    );
    let mut args: Vec<String> = vec!["run".into()];
    if !req.keep {
        args.push("--rm".into());
    }
    args.extend([
        "--name".into(),
        name.clone(),
        "--user".into(),
        format!("{}:{}", req.user.0, req.user.1),
    ]);
    args.extend(req.run_args.iter().cloned());
    let mount = |host: &Path, inside: &str| format!("{}:{inside}", host.display());
    args.extend([
        "--volume".into(),
        mount(&work.join("env"), container::ENV_DIR),
    ]);
    args.extend([
        "--volume".into(),
        mount(&work.join("slurm"), container::SLURM_ROOT),
    ]);
    args.extend([
        "--volume".into(),
        mount(&work.join("mirror"), container::OUT_MIRROR_DIR),
    ]);
    for c in MOUNTED_CACHES {
        args.extend([
            "--volume".into(),
            mount(
                &req.cache_dir.join(c),
                &format!("{}/{c}", container::CACHE_DIR),
            ),
        ]);
    }
    if let Some(dir) = &inputs.source_mirror {
        args.extend([
            "--volume".into(),
            format!("{}:{}:ro", dir.display(), container::SOURCE_MIRROR_DIR),
        ]);
    }
    if let Some(j) = req.jobs {
        args.extend(["--env".into(), format!("{}={j}", sf_core::env::BUILD_JOBS)]);
    }
    args.extend([
        image.clone(),
        "/bin/bash".into(),
        format!("{}/build.sh", container::ENV_DIR),
    ]);
    eprintln!("sf-build: running cell {} in container {name}", req.cell.id);
    let ran = req
        .engine
        .run_logged(&args, &work.join("container.log"))
        .with_context(|| format!("the build of cell {} failed", req.cell.id));
    if req.remove_image {
        // One-off runners: the image is not worth its disk space after this build. Never
        // `--force`: the image is the toolchain's, shared by every cell on this runner, and a
        // forced removal would take other cells' running builds with it (Podman removes the
        // containers using it). While it is in use, removal fails and the image stays.
        if let Err(e) = req.engine.output(["rmi", image.as_str()]) {
            eprintln!(
                "sf-build: warning: the build image {image} was not removed (another build may be using it): {e:#}"
            );
        }
    }
    ran?;
    let view = work.join("slurm/view");
    let modules = work.join("slurm/modules");
    let install_tree = install_tree(work);
    let mirror = work.join("mirror");
    let cache_mirror = req.cache_dir.join("buildcache");
    Ok(BuildOutcome {
        work_dir: work.to_path_buf(),
        image,
        view: view.is_dir().then_some(view),
        modules: modules.is_dir().then_some(modules),
        install_tree: install_tree.is_dir().then_some(install_tree),
        env_dir: work.join("env"),
        cache_merge: merge_into_cache(&mirror, &cache_mirror),
        mirror,
        cache_mirror,
        logs: work.join("env/logs"),
    })
}

/// Add the run's mirror to the runner's cache. The cache only saves later builds time, so a
/// failure here is a warning, never the build's failure; a run that pushed nothing adds nothing.
fn merge_into_cache(mirror: &Path, cache: &Path) -> Option<sf_spack::cache::Merged> {
    if !mirror.join(sf_core::layout::spack::LAYOUT_JSON).is_file() {
        eprintln!(
            "sf-build: warning: the build pushed no mirror to {}",
            mirror.display()
        );
        return None;
    }
    let merged =
        sf_spack::Mirror::open(mirror).and_then(|m| sf_spack::cache::merge_into_cache(&m, cache));
    match merged {
        Ok(m) => {
            eprintln!(
                "sf-build: {} specs merged into the runner's cache {} ({} new blobs, {} specs indexed)",
                m.specs,
                cache.display(),
                m.blobs_added,
                m.indexed
            );
            Some(m)
        }
        Err(e) => {
            eprintln!(
                "sf-build: warning: the runner's cache {} was not updated: {e:#}",
                cache.display()
            );
            None
        }
    }
}

/// Where the install tree of a run lies in its work directory (`/opt/slurm/software` inside).
pub fn install_tree(work: &Path) -> PathBuf {
    let inside = Path::new(container::INSTALL_ROOT)
        .strip_prefix(container::SLURM_ROOT)
        .expect("the install tree lies in the mounted Slurm root");
    work.join("slurm").join(inside)
}

/// After a successful run: remove its install tree, which no later step reads. A failure to
/// remove is a warning; the run succeeded.
pub fn remove_install_tree(outcome: &mut BuildOutcome) {
    let Some(tree) = outcome.install_tree.clone() else {
        return;
    };
    match remove_tree(&tree) {
        Ok(()) => {
            eprintln!(
                "sf-build: removed the install tree {} (--keep keeps it)",
                tree.display()
            );
            outcome.install_tree = None;
        }
        Err(e) => eprintln!(
            "sf-build: warning: could not remove the install tree {}: {e}",
            tree.display()
        ),
    }
}

/// Remove a tree the build wrote. Some packages install directories without write permission,
/// which stops a removal by their owner: those are made writable and the removal tried again.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        r => r,
    }
}

fn make_dirs_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700))?;
        }
        for e in fs::read_dir(path)? {
            make_dirs_writable(&e?.path())?;
        }
    }
    Ok(())
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Gather what explains a failure into `{work}/debug-bundle`.
fn debug_bundle(work: &Path) -> Result<PathBuf> {
    let bundle = work.join("debug-bundle");
    fs::create_dir_all(&bundle)?;
    let env = work.join("env");
    if env.join("logs").is_dir() {
        copy_tree(&env.join("logs"), &bundle.join("logs"))?;
    }
    for f in ["spack.yaml", "spack.lock", "build.sh", "Dockerfile"] {
        if env.join(f).is_file() {
            fs::copy(env.join(f), bundle.join(f))?;
        }
    }
    for f in ["container.log", "engine.log"] {
        if work.join(f).is_file() {
            fs::copy(work.join(f), bundle.join(f))?;
        }
    }
    // Spack's per-package build logs, when the install step got that far.
    let stage = work.join("slurm");
    if stage.is_dir() {
        collect_spack_logs(&stage, &bundle.join("spack-build-logs"), 0)?;
    }
    Ok(bundle)
}

fn collect_spack_logs(dir: &Path, out: &Path, depth: u32) -> Result<()> {
    if depth > 12 {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ft.is_dir() {
            collect_spack_logs(&entry.path(), out, depth + 1)?;
        } else if ft.is_file() && (name == "spack-build-out.txt" || name == "spack-build-env.txt") {
            fs::create_dir_all(out)?;
            let parent = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            fs::copy(entry.path(), out.join(format!("{parent}-{name}")))?;
        }
    }
    Ok(())
}
