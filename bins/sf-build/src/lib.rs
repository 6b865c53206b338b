//! `sf-build`: run one cell's Spack build in a container ([`build`]), turn the view into the
//! relocatable tarball ([`tarball`], on `sf-archive`), prove the tarball ([`tarball_test`]) or the
//! signed mirror ([`mirror_test`]) works in a clean container before anything publishes it, and
//! build the Slurm image from the tarball ([`image`]).
//!
//! stdout carries one JSON object per command (what a later step reads); people read stderr.

pub mod build;
pub mod cell;
pub mod engine;
pub mod image;
pub mod mirror_test;
pub mod tarball;
pub mod tarball_test;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use sf_archive::GzOptions;
use sf_core::bad_input;
use sf_core::cli::{MatrixFileArgs, ResultsArgs};
use sf_core::env;
use sf_core::gha::Actions;
use sf_core::record::{Artifact, Recorder};

use crate::engine::{Engine, EngineKind};

#[derive(Parser, Debug)]
#[command(
    name = "sf-build",
    version,
    about = "Build one cell in a container, assemble and test the relocatable tarball, build the Slurm image."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
    #[command(flatten)]
    pub results: ResultsArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the cell's Spack build in a container, then pack the tarball when the cell has one.
    Build(BuildArgs),
    /// Pack a view into the relocatable tarball (deterministic, relocated, parallel gzip).
    Pack(PackArgs),
    /// Test a tarball: extract, load the module with Lmod, `sinfo --version`, `ldd` everything.
    Test(TestArgs),
    /// Test signed mirrors: `spack install --cache-only` the build's specs in a clean container.
    TestMirror(TestMirrorArgs),
    /// Build the Slurm image from a tested tarball, and push it.
    Image(ImageArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CellArg {
    /// The cell as sf-matrix prints it: a JSON file, `-` for stdin, or the JSON itself.
    #[arg(long, env = env::CELL, value_name = "FILE|-|JSON")]
    pub cell: String,
}

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Container engine [default: the first of podman, docker on PATH]
    #[arg(long, env = env::ENGINE, value_enum)]
    pub engine: Option<EngineKind>,
    /// A global option for every engine call (repeatable), e.g. --engine-arg=--storage-driver=vfs.
    #[arg(long = "engine-arg", env = env::ENGINE_ARGS, value_delimiter = ' ', allow_hyphen_values = true, value_name = "ARG")]
    pub engine_args: Vec<String>,
    /// An option for every container run (repeatable), e.g. --run-arg=--ulimit=nofile=20000:20000.
    #[arg(long = "run-arg", env = env::RUN_ARGS, value_delimiter = ' ', allow_hyphen_values = true, value_name = "ARG")]
    pub run_args: Vec<String>,
    /// An option for every image build (repeatable), e.g. --image-build-arg=--squash-all for
    /// Podman on vfs storage, where each layer is a full copy.
    #[arg(long = "image-build-arg", env = env::IMAGE_BUILD_ARGS, value_delimiter = ' ', allow_hyphen_values = true, value_name = "ARG")]
    pub image_build_args: Vec<String>,
}

fn non_empty(args: &[String]) -> Vec<String> {
    args.iter().filter(|a| !a.is_empty()).cloned().collect()
}

impl EngineArgs {
    fn engine(&self) -> Result<Engine> {
        let mut engine = Engine::find(self.engine, non_empty(&self.engine_args))?;
        engine.build_args = non_empty(&self.image_build_args);
        Ok(engine)
    }
    fn run_args(&self) -> Vec<String> {
        non_empty(&self.run_args)
    }
}

#[derive(Args, Debug, Clone)]
pub struct PackOpts {
    /// Write the tarball here [default: {cache}/builds/{tarball file name}]
    #[arg(long, env = env::TARBALL, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing tarball.
    #[arg(long)]
    pub force: bool,
    /// The modulefile to ship [default: {env-dir}/modules/slurm/{version}-{toolchain}.lua]
    #[arg(long, value_name = "FILE")]
    pub modulefile: Option<PathBuf>,
    /// A build-time prefix to relocate away from (repeatable) [default: /opt/slurm/software,
    /// /opt/slurm/view, /opt/slurm/._view]
    #[arg(long = "build-prefix", value_name = "DIR")]
    pub build_prefixes: Vec<String>,
    /// Clamp mtimes here (seconds) [default: the newest mtime in the view]
    #[arg(long, env = env::SOURCE_DATE_EPOCH, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    /// The source commit recorded in BUILDINFO.json.
    #[arg(long, env = env::GITHUB_SHA, value_name = "SHA")]
    pub source_commit: Option<String>,
    /// Compression threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// gzip level, 1-12 (libdeflate's scale; 6 is gzip's default).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=12))]
    pub level: i32,
    /// Host cache root (buildcache/, sourcecache/, builds/) [default: ~/.slurm-factory]
    #[arg(long, env = env::CACHE_DIR, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub cell: CellArg,
    /// The directory sf-spackenv wrote for this cell (Dockerfile, build.sh, spack.yaml, modules/).
    #[arg(long, env = env::ENV_DIR, value_name = "DIR")]
    pub env_dir: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Keep the build container and the run's install tree (both are removed after a successful
    /// run otherwise; the view, mirror, environment and logs always stay).
    #[arg(long)]
    pub keep: bool,
    /// Remove the build image afterwards (it is kept otherwise: every cell of the toolchain on this
    /// runner reuses it). For one-off runners short of disk.
    #[arg(long, conflicts_with = "keep")]
    pub remove_image: bool,
    /// Run the build as UID:GID [default: this process's uid and gid, so files stay the runner's]
    #[arg(long, value_name = "UID:GID")]
    pub user: Option<String>,
    /// Build jobs inside the container [default: what sf-spackenv rendered: the cores of the runner it ran on]
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Do not pack the tarball after the build.
    #[arg(long)]
    pub no_pack: bool,
    #[command(flatten)]
    pub pack: PackOpts,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// The view was built on this host, not by the pipeline's Spack build (a local rehearsal):
    /// BUILDINFO.json says so, and records this host's OS, GCC and glibc as what it was built on.
    #[arg(long)]
    pub rehearsal: bool,
    #[command(flatten)]
    pub cell: CellArg,
    /// The view to pack.
    #[arg(long, value_name = "DIR")]
    pub view: PathBuf,
    /// The directory sf-spackenv wrote (modulefile, spack.lock).
    #[arg(long, env = env::ENV_DIR, value_name = "DIR")]
    pub env_dir: Option<PathBuf>,
    #[command(flatten)]
    pub pack: PackOpts,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub cell: CellArg,
    /// The tarball to test.
    #[arg(long, env = env::TARBALL, value_name = "FILE")]
    pub tarball: PathBuf,
    /// Run on this host instead of a clean container.
    #[arg(long)]
    pub local: bool,
    /// The image to test in [default: the cell's base image]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Check the version and the libraries only, without starting a cluster (for cells whose
    /// daemons cannot run where the test runs).
    #[arg(long)]
    pub quick: bool,
    /// How the test cluster authenticates: Slurm's own auth/slurm with a generated key, munge
    /// (munged must already run where the test runs), or none (a Slurm built without munge
    /// and libjwt).
    #[arg(long, value_enum, default_value_t = tarball_test::ClusterAuth::Slurm)]
    pub auth: tarball_test::ClusterAuth,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct TestMirrorArgs {
    #[command(flatten)]
    pub cell: CellArg,
    /// A signed local mirror to install from (repeatable): what `sf-sign mirror` made of the
    /// build's mirror.
    #[arg(long = "mirror", required = true, value_name = "DIR")]
    pub mirrors: Vec<PathBuf>,
    /// The directory the build ran with (its `spack.lock` and `Dockerfile`): sf-build build's
    /// `env_dir` output.
    #[arg(long, env = env::ENV_DIR, value_name = "DIR")]
    pub env_dir: PathBuf,
    /// Another mirror URL the container fetches from itself (repeatable) [default: for a
    /// version cell, the cell's published deps mirror]
    #[arg(long = "upstream", value_name = "URL")]
    pub upstream: Vec<String>,
    /// Fetch from the given mirrors only, not the cell's deps mirror.
    #[arg(long, conflicts_with = "upstream")]
    pub no_upstream: bool,
    /// The image to test in [default: the cell's build image, from --env-dir's Dockerfile]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    pub cell: CellArg,
    /// The tested tarball to install.
    #[arg(long, env = env::TARBALL, value_name = "FILE")]
    pub tarball: PathBuf,
    /// Registry and namespace, e.g. ghcr.io/vantagecompute. Capitals are lowercased (repository
    /// paths must be lowercase; a GitHub owner name may have capitals).
    #[arg(long, env = env::REGISTRY, value_name = "REGISTRY")]
    pub registry: String,
    /// Image name under the registry (lowercased like --registry).
    #[arg(long, default_value = "slurm")]
    pub name: String,
    /// Also tag `{version}` [default: only on the support matrix's recommended toolchain]
    #[arg(long)]
    pub tag_version: bool,
    /// Also tag `latest` [default: only on the recommended toolchain, for the Slurm version whose
    /// channel is latest]
    #[arg(long)]
    pub tag_latest: bool,
    #[command(flatten)]
    pub matrix: MatrixFileArgs,
    /// The image to build on [default: the cell's base image]
    #[arg(long, value_name = "IMAGE")]
    pub base_image: Option<String>,
    /// Push the tags after building (login with SF_REGISTRY_TOKEN or GITHUB_TOKEN when set).
    #[arg(long)]
    pub push: bool,
    /// The registry speaks plain HTTP or has a self-signed certificate (local registries).
    #[arg(long)]
    pub insecure_registry: bool,
    /// Registry user for the login.
    #[arg(long, env = env::REGISTRY_USER, value_name = "USER")]
    pub registry_user: Option<String>,
    /// OCI source label.
    #[arg(
        long,
        default_value = "https://github.com/vantagecompute/slurm-factory"
    )]
    pub source: String,
    /// OCI revision label (the commit).
    #[arg(long, env = env::GITHUB_SHA, value_name = "SHA")]
    pub revision: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| run(cli, &Actions::from_env())),
        Err(code) => code,
    }
}

/// A failure with the logs kept for it.
struct Failed {
    error: anyhow::Error,
    logs: Option<PathBuf>,
}

impl From<anyhow::Error> for Failed {
    fn from(error: anyhow::Error) -> Self {
        Failed { error, logs: None }
    }
}

impl From<std::io::Error> for Failed {
    fn from(error: std::io::Error) -> Self {
        Failed {
            error: error.into(),
            logs: None,
        }
    }
}

/// Run with a given Actions context.
pub fn run(cli: Cli, gha: &Actions) -> Result<()> {
    let step = match &cli.command {
        Cmd::Build(_) => "sf-build build",
        Cmd::Pack(_) => "sf-build pack",
        Cmd::Test(_) => "sf-build test",
        Cmd::TestMirror(_) => "sf-build test-mirror",
        Cmd::Image(_) => "sf-build image",
    };
    let mut rec = Recorder::start(step);
    let outcome = match &cli.command {
        Cmd::Build(a) => cmd_build(a, gha, &mut rec),
        Cmd::Pack(a) => cmd_pack(a, gha, &mut rec),
        Cmd::Test(a) => cmd_test(a, gha, &mut rec),
        Cmd::TestMirror(a) => cmd_test_mirror(a, gha, &mut rec),
        Cmd::Image(a) => cmd_image(a, gha, &mut rec),
    };
    let dir = cli.results.results_dir.as_deref();
    match outcome {
        Ok(value) => {
            rec.finish(dir)?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
            Ok(())
        }
        Err(Failed { error, logs }) => {
            if let Some(l) = &logs {
                eprintln!("sf-build: logs and debug bundle kept in {}", l.display());
                let _ = gha.set_output("debug_bundle", &l.display().to_string());
            }
            // Bad input changes nothing, not even the results directory.
            if sf_core::exit::code_for(&error) != 2 {
                rec.fail(&error, logs.map(|l| l.display().to_string()));
                let _ = rec.finish(dir);
            }
            Err(error)
        }
    }
}

fn cache_dir(opts: &PackOpts) -> PathBuf {
    opts.cache_dir
        .clone()
        .unwrap_or_else(build::default_cache_dir)
}

fn gzip_options(opts: &PackOpts) -> GzOptions {
    let mut g = GzOptions {
        level: opts.level,
        ..Default::default()
    };
    if let Some(t) = opts.threads {
        g.threads = t.max(1);
    }
    g
}

/// Where the tarball goes: `--out`, else `{cache}/builds/{tarball file name}`.
fn tarball_out(cell: &sf_core::layout::Cell, opts: &PackOpts) -> Result<PathBuf> {
    Ok(match &opts.out {
        Some(o) => o.clone(),
        None => cache_dir(opts)
            .join("builds")
            .join(cell::tarball_name(cell)?),
    })
}

/// Refuse an existing tarball unless `--force`, before any work is done for it.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if !force && out.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "{} already exists; pass --force to replace it",
            out.display()
        )));
    }
    Ok(())
}

/// What the build image measured about itself (`logs/built-on.json`, written by build.sh).
fn built_in_image(env_dir: &Path) -> Provenance {
    let facts = std::fs::read(env_dir.join("logs/built-on.json")).ok();
    Provenance {
        built_on: facts.and_then(|b| serde_json::from_slice(&b).ok()),
        rehearsal: false,
    }
}

/// Where a view came from, for its BUILDINFO.json.
struct Provenance {
    built_on: Option<sf_archive::BuiltOn>,
    rehearsal: bool,
}

fn do_pack(
    cell: &sf_core::layout::Cell,
    view: &Path,
    env_dir: Option<&Path>,
    opts: &PackOpts,
    from: Provenance,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<serde_json::Value> {
    let out = tarball_out(cell, opts)?;
    let req = tarball::TarballRequest {
        cell,
        view: view.to_path_buf(),
        env_dir: env_dir.map(Path::to_path_buf),
        modulefile: opts.modulefile.clone(),
        build_prefixes: opts.build_prefixes.clone(),
        source_date_epoch: opts.source_date_epoch,
        source_commit: opts.source_commit.clone(),
        gzip: gzip_options(opts),
        built_on: from.built_on,
        rehearsal: from.rehearsal,
    };
    let input = tarball::pack_input(&req)?;
    let started = std::time::Instant::now();
    let report = sf_archive::pack(&input, &out, opts.force)?;
    rec.timing("pack", started.elapsed());
    let g = &report.gzip;
    gha.log(&format!(
        "sf-build: packed {} ({} entries, {} -> {} bytes, sha256 {}) in {:.1}s",
        out.display(),
        report.entries,
        g.uncompressed_size,
        g.compressed_size,
        g.sha256,
        started.elapsed().as_secs_f64()
    ));
    for link in &report.dangling_links {
        gha.warning(
            &format!("the symlink {link} points at nothing in the view (shipped as it is)"),
            None,
        );
    }
    rec.metric("tarball_bytes", g.compressed_size)
        .metric("view_bytes", g.uncompressed_size)
        .metric("entries", report.entries)
        .metric("dangling_links", report.dangling_links.len() as u64)
        .metric(
            "elf_relocated",
            report.buildinfo.relocation.elf_relocated.len() as u64,
        );
    rec.record.artifacts.push(Artifact {
        kind: "tarball".into(),
        path: Some(out.display().to_string()),
        size: Some(g.compressed_size),
        sha256: Some(g.sha256.clone()),
        ..Default::default()
    });
    gha.set_outputs(&[
        ("tarball", &out.display().to_string()),
        ("sha256", &g.sha256),
        ("size", &g.compressed_size.to_string()),
    ])?;
    Ok(json!({
        "tarball": out,
        "sha256": g.sha256,
        "size": g.compressed_size,
        "uncompressed_size": g.uncompressed_size,
        "entries": report.entries,
        "dangling_links": report.dangling_links,
        "buildinfo": report.buildinfo,
    }))
}

fn load_cell(a: &CellArg, rec: &mut Recorder) -> Result<sf_core::layout::Cell> {
    let c = cell::read(&a.cell)?;
    rec.record.cell = Some(c.id.clone());
    rec.record.cell_data = serde_json::to_value(&c).ok();
    Ok(c)
}

fn cmd_pack(a: &PackArgs, gha: &Actions, rec: &mut Recorder) -> Result<serde_json::Value, Failed> {
    let c = load_cell(&a.cell, rec)?;
    rec.input("view", a.view.display().to_string());
    // A rehearsal's view was built here: this host is what it was built on.
    let from = Provenance {
        built_on: a.rehearsal.then(sf_archive::BuiltOn::here),
        rehearsal: a.rehearsal,
    };
    Ok(do_pack(
        &c,
        &a.view,
        a.env_dir.as_deref(),
        &a.pack,
        from,
        gha,
        rec,
    )?)
}

fn cmd_build(
    a: &BuildArgs,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<serde_json::Value, Failed> {
    let c = load_cell(&a.cell, rec)?;
    rec.input("env_dir", a.env_dir.display().to_string());
    if !a.env_dir.is_dir() {
        return Err(bad_input(format!(
            "--env-dir {} is not a directory",
            a.env_dir.display()
        ))
        .into());
    }
    // What the pack after the build needs and is known now is checked now, not hours later.
    let packs = c.slurm_version.is_some() && !a.no_pack;
    if packs {
        check_out(&tarball_out(&c, &a.pack)?, a.pack.force)?;
        tarball::find_modulefile(&c, Some(&a.env_dir), a.pack.modulefile.as_deref())?;
    }
    let engine = a.engine.engine()?;
    let cache = cache_dir(&a.pack);
    let req = build::BuildRequest {
        cell: &c,
        env_dir: a.env_dir.clone(),
        cache_dir: cache.clone(),
        engine: &engine,
        run_args: a.engine.run_args(),
        keep: a.keep,
        remove_image: a.remove_image,
        user: match &a.user {
            Some(u) => parse_user(u)?,
            None => current_user(),
        },
        jobs: a.jobs,
    };
    build::check(&req)?;
    let started = std::time::Instant::now();
    let mut outcome = {
        let _g = gha.group(&format!("build {}", c.id));
        build::build(&req).map_err(|f| Failed {
            error: f.error,
            logs: f.bundle,
        })?
    };
    rec.timing("build", started.elapsed());
    let out_s = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    gha.set_outputs(&[
        ("work_dir", &outcome.work_dir.display().to_string()),
        ("view", &out_s(&outcome.view)),
        ("mirror", &outcome.mirror.display().to_string()),
        ("env_dir", &outcome.env_dir.display().to_string()),
        ("logs", &outcome.logs.display().to_string()),
        ("image", &outcome.image),
    ])?;
    rec.record.artifacts.push(Artifact {
        kind: "mirror".into(),
        path: Some(outcome.mirror.display().to_string()),
        ..Default::default()
    });
    let mut value = json!({});
    if packs {
        let view = outcome.view.clone().ok_or_else(|| Failed {
            error: anyhow::anyhow!(
                "the build of cell {} left no view at {}",
                c.id,
                outcome.work_dir.join("slurm/view").display()
            ),
            logs: Some(outcome.logs.clone()),
        })?;
        // The build ran and its mirror went into the runner's cache: whatever stops the pack
        // now (even content of the view it refuses) is a failure of this run, not bad input.
        let packed =
            do_pack(&c, &view, Some(&outcome.env_dir), &a.pack, built_in_image(&outcome.env_dir), gha, rec).map_err(|e| Failed {
                error: sf_core::exit::after_changes(
                    e,
                    format!(
                        "the build of cell {} finished (work directory {}), but its tarball could not be packed",
                        c.id,
                        outcome.work_dir.display()
                    ),
                ),
                logs: Some(outcome.logs.clone()),
            })?;
        value["tarball"] = packed;
    }
    // Only now: a failed pack keeps the whole work directory for a look.
    if !a.keep {
        build::remove_install_tree(&mut outcome);
    }
    value["build"] = serde_json::to_value(&outcome).context("describing the build")?;
    Ok(value)
}

fn cmd_test(a: &TestArgs, gha: &Actions, rec: &mut Recorder) -> Result<serde_json::Value, Failed> {
    let c = load_cell(&a.cell, rec)?;
    let module = cell::module_name(&c)?;
    let version = cell::expected_version(&c)?;
    rec.input("tarball", a.tarball.display().to_string())
        .input("local", a.local);
    if !a.tarball.is_file() {
        return Err(bad_input(format!(
            "the tarball {} does not exist",
            a.tarball.display()
        ))
        .into());
    }
    let engine = if a.local {
        None
    } else {
        Some(a.engine.engine()?)
    };
    let image = a.image.clone().unwrap_or_else(|| c.base_image.clone());
    let place = match &engine {
        None => tarball_test::Where::Local,
        Some(e) => tarball_test::Where::Container {
            engine: e,
            image: image.clone(),
            run_args: a.engine.run_args(),
        },
    };
    let scratch = tarball_test::scratch_dir(None)?;
    let started = std::time::Instant::now();
    let options = tarball_test::TestOptions {
        quick: a.quick,
        auth: a.auth,
    };
    rec.input("quick", a.quick);
    let outcome = refused_leaves_nothing(
        tarball_test::run(&a.tarball, &module, &version, &options, &place, &scratch),
        &scratch,
    )?;
    rec.timing("test", started.elapsed());
    rec.output("steps", outcome.steps());
    report_verdict(
        &outcome,
        &format!("the tarball test of {}", a.tarball.display()),
        scratch,
        gha,
        rec,
    )?;
    Ok(json!({
        "passed": true,
        "summary": outcome.summary,
        "module": module,
        "expected_version": version,
        "where": if a.local { "local".to_string() } else { image },
    }))
}

/// A refusal (bad input, exit 2) after the scratch folder was made removes it: refused input
/// leaves nothing behind. A failure of the work keeps it, as its logs.
fn refused_leaves_nothing<T>(r: Result<T>, scratch: &Path) -> Result<T> {
    if let Err(e) = &r {
        if sf_core::exit::code_for(e) == 2 {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
    r
}

/// Show a test script's log, set the `passed`/`summary` outputs, and fail with the scratch folder
/// kept as the logs when it did not pass (removed when it did).
fn report_verdict(
    outcome: &tarball_test::TestOutcome,
    what: &str,
    scratch: PathBuf,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<(), Failed> {
    let log = scratch.join("test.log");
    std::fs::write(&log, &outcome.log).with_context(|| format!("writing {}", log.display()))?;
    eprint!("{}", outcome.log);
    gha.set_outputs(&[
        ("passed", if outcome.passed { "true" } else { "false" }),
        ("summary", &outcome.summary),
    ])?;
    if !outcome.passed {
        return Err(Failed {
            error: anyhow::anyhow!("{what} failed: {}", outcome.summary),
            logs: Some(scratch),
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    rec.output("summary", &outcome.summary);
    Ok(())
}

fn cmd_test_mirror(
    a: &TestMirrorArgs,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<serde_json::Value, Failed> {
    let c = load_cell(&a.cell, rec)?;
    rec.input("env_dir", a.env_dir.display().to_string());
    // Everything about the input is checked before an engine is looked for or an image built.
    let mut checked = Vec::new();
    for m in &a.mirrors {
        rec.input("mirror", m.display().to_string());
        checked.push(mirror_test::check_mirror(m)?);
    }
    let lock = a.env_dir.join("spack.lock");
    if !lock.is_file() {
        return Err(bad_input(format!(
            "{} has no spack.lock: give --env-dir the directory the build ran with (sf-build build's env_dir output)",
            a.env_dir.display()
        ))
        .into());
    }
    let version = c
        .slurm_version
        .is_some()
        .then(|| cell::expected_version(&c))
        .transpose()?;
    let upstream = if a.no_upstream {
        Vec::new()
    } else if !a.upstream.is_empty() {
        a.upstream.clone()
    } else if c.version_mirror.is_some() {
        vec![c.deps_mirror.cdn_url.clone()]
    } else {
        Vec::new()
    };
    let engine = a.engine.engine()?;
    let scratch = tarball_test::scratch_dir(None)?;
    let image = match &a.image {
        Some(i) => i.clone(),
        None => refused_leaves_nothing(
            build::ensure_build_image(&engine, &c, &a.env_dir, &scratch.join("engine.log")),
            &scratch,
        )?,
    };
    let started = std::time::Instant::now();
    let outcome = {
        let _g = gha.group(&format!("test-mirror {}", c.id));
        refused_leaves_nothing(
            mirror_test::run(
                &mirror_test::MirrorTest {
                    engine: &engine,
                    image: image.clone(),
                    run_args: a.engine.run_args(),
                    lock,
                    mirrors: a.mirrors.clone(),
                    upstream: upstream.clone(),
                    version: version.clone(),
                },
                &scratch,
            ),
            &scratch,
        )?
    };
    rec.timing("test-mirror", started.elapsed());
    report_verdict(
        &outcome,
        &format!("the mirror test of cell {}", c.id),
        scratch,
        gha,
        rec,
    )?;
    Ok(json!({
        "passed": true,
        "summary": outcome.summary,
        "mirrors": checked,
        "upstream": upstream,
        "expected_version": version,
        "image": image,
    }))
}

fn cmd_image(
    a: &ImageArgs,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<serde_json::Value, Failed> {
    let mut c = load_cell(&a.cell, rec)?;
    if let Some(b) = &a.base_image {
        c.base_image = b.clone();
    }
    if !a.tarball.is_file() {
        return Err(bad_input(format!(
            "the tarball {} does not exist",
            a.tarball.display()
        ))
        .into());
    }
    let (version_tag, latest_tag) = image::moving_tags(&a.matrix.load()?, &c)?;
    let tags = image::tags(
        &c,
        &a.registry,
        &a.name,
        a.tag_version || version_tag,
        a.tag_latest || latest_tag,
    )?;
    let token = std::env::var(env::REGISTRY_TOKEN)
        .ok()
        .or_else(|| std::env::var(env::GITHUB_TOKEN).ok())
        .filter(|t| !t.is_empty());
    if let Some(t) = &token {
        gha.mask(t);
    }
    let engine = a.engine.engine()?;
    sf_archive::extract::check(&a.tarball)?;
    let sha256 = sha256_file(&a.tarball)?;
    let facts = image::ImageFacts {
        source: a.source.clone(),
        revision: a.revision.clone().unwrap_or_default(),
        created: sf_core::record::rfc3339(std::time::SystemTime::now()),
        tarball_name: a
            .tarball
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "slurm.tar.gz".into()),
        tarball_sha256: sha256.clone(),
    };
    let scratch = tarball_test::scratch_dir(None)?;
    let started = std::time::Instant::now();
    image::build(&engine, &c, &a.tarball, &facts, &tags, &scratch).map_err(|e| Failed {
        error: e,
        logs: Some(scratch.clone()),
    })?;
    rec.timing("image_build", started.elapsed());
    if a.push {
        let started = std::time::Instant::now();
        image::push(
            &engine,
            &tags,
            a.registry_user.as_deref(),
            token.as_deref(),
            a.insecure_registry,
        )
        .map_err(|e| Failed {
            error: e,
            logs: Some(scratch.clone()),
        })?;
        rec.timing("push", started.elapsed());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    for t in &tags {
        rec.record.artifacts.push(Artifact {
            kind: "image".into(),
            url: Some(t.clone()),
            ..Default::default()
        });
    }
    gha.set_outputs(&[("tags", &tags.join("\n")), ("tarball_sha256", &sha256)])?;
    Ok(json!({ "tags": tags, "pushed": a.push, "tarball_sha256": sha256 }))
}

fn sha256_file(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn parse_user(s: &str) -> Result<(u32, u32)> {
    s.split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| {
            bad_input(format!(
                "--user {s:?} is not UID:GID (numbers, e.g. 1001:1001)"
            ))
        })
}

/// The runner's uid and gid, for `--user` (files the build writes stay the runner's).
fn current_user() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    // The process's own /proc entry is owned by its effective uid and gid.
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}
