//! A real Spack v1.0.2 in every test run, offline.
//!
//! The inputs are local copies of the pinned trees (Spack, the builtin repository and the
//! project's `slurm_factory` repository) and clingo wheels, gathered by
//! `scripts/offline-inputs.sh` into `$SF_OFFLINE_DIR` (else `~/.slurm-factory/offline`); the test
//! command runs it. Without them these tests fail and say how to provide them: they are never
//! skipped.
//!
//! - Every real cell's environment, exactly as sf-spackenv writes it with only the repository
//!   locations (and the unreachable mirrors and install paths) swapped for this host's, is
//!   concretized by the real Spack on this host; the version cells must reuse every hash of the
//!   deps cell.
//! - A real containerised build through `sf-build build` (Podman, runc, vfs, no network) of a
//!   test stack: the rehearsal stack (`data/rehearsal`: the real Slurm 24.11.5 with the OS's
//!   libraries) plus the tests' own small packages (`tests/spack-test-repos`), then signing, the clean-container mirror test, publishing, a
//!   fresh Spack client installing from the published mirror, the tarball and its test, and a
//!   rebuild that builds nothing from source.
//!
//! Work that several tests need (the host Spack, a cell's concretization) is done once per run
//! under the run directory (`$SF_TEST_RUN_DIR`, else one per nextest run), behind a file lock.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use assert_cmd::cargo::cargo_bin;
use serde_json::Value;
use serde_yaml::Value as Yaml;

use sf_testkit::{repo_root, require_tool};
use support::{base_image, podman_args, BASE_IMAGE};

// ---------------------------------------------------------------------------------------------
// The run directory, the offline inputs and a report the test command prints.

fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("SF_TEST_RUN_DIR") {
            Some(d) => PathBuf::from(d),
            // nextest runs each test in its own process, all children of one runner.
            None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "real-spack-run-{}",
                std::os::unix::process::parent_id()
            )),
        };
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn report(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir().join("report.txt"))
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Hold an exclusive lock on `path` while `f` runs: one process does shared work, the others
/// wait and then find it done.
fn locked<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let out = f();
    drop(file);
    out
}

/// The offline inputs: what `scripts/offline-inputs.sh` wrote into `inputs.env`.
struct Offline {
    /// NAME -> (archive, sha256) for spack and each pinned repository.
    archives: BTreeMap<String, (PathBuf, String)>,
    wheels: PathBuf,
    /// A Spack source mirror holding the Slurm release the rehearsal stack builds (from Debian).
    test_sources: PathBuf,
}

fn offline() -> &'static Offline {
    static OFFLINE: OnceLock<Offline> = OnceLock::new();
    OFFLINE.get_or_init(|| {
        let dir = std::env::var_os("SF_OFFLINE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("SLURM_FACTORY_CACHE_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".slurm-factory")
                    });
                cache.join("offline")
            });
        let env_file = dir.join("inputs.env");
        let text = fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "the real-Spack tests need the offline inputs and found no {} ({e}). Run \
                 `scripts/offline-inputs.sh` (the test command does): it archives the pinned \
                 commits of data/spack-stack.yaml from GitHub, or from bare clones given with \
                 --git-dir NAME=DIR where GitHub is out of reach, and fetches clingo's wheels",
                env_file.display()
            )
        });
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let pairs = |key: &str| -> BTreeMap<String, String> {
            vars.get(key)
                .unwrap_or_else(|| panic!("{} has no {key}", env_file.display()))
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sums = pairs("SF_ARCHIVE_SHA256S");
        let archives = pairs("SF_ARCHIVES")
            .into_iter()
            .map(|(k, v)| {
                let sha = sums[&k].clone();
                let path = PathBuf::from(v);
                assert!(
                    path.is_file(),
                    "{} is gone: run scripts/offline-inputs.sh",
                    path.display()
                );
                (k, (path, sha))
            })
            .collect();
        let test_sources = PathBuf::from(vars["SF_REHEARSAL_SOURCE_MIRROR"]);
        assert!(
            test_sources.join("_source-cache").is_dir(),
            "{} holds no Slurm source: run scripts/offline-inputs.sh",
            test_sources.display()
        );
        Offline {
            wheels: PathBuf::from(vars["SF_PYTHON_WHEELS"]),
            archives,
            test_sources,
        }
    })
}

fn sh_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 60)
    );
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn untar(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    sh_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(archive)
            .arg("-C")
            .arg(into)
            .arg("--strip-components=1"),
    );
}

// ---------------------------------------------------------------------------------------------
// Spack on this host.

struct HostSpack {
    root: PathBuf,
    config: PathBuf,
    /// NAMESPACE -> the package repository's directory.
    repos: BTreeMap<String, PathBuf>,
}

/// The stack's repositories as `namespace -> path inside the tree`.
fn stack_repo_paths(stack: &Path) -> Vec<(String, String)> {
    let doc: Yaml = serde_yaml::from_str(&fs::read_to_string(stack).unwrap()).unwrap();
    doc["repos"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["namespace"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The real Spack, unpacked from the offline archive with the pinned repositories (and the
/// tests' own), configured like the build image: nothing to bootstrap from, the OS compiler found.
fn host_spack() -> &'static HostSpack {
    static SPACK: OnceLock<HostSpack> = OnceLock::new();
    SPACK.get_or_init(|| {
        require_tool("tar");
        let clingo = Command::new("python3")
            .args(["-c", "import clingo"])
            .output()
            .unwrap();
        assert!(
            clingo.status.success(),
            "python3 cannot import clingo, Spack's solver: scripts/test.sh installs it (scripts/deps/spack.pip)"
        );
        let off = offline();
        let root = run_dir().join("host-spack");
        let config = root.join("config");
        let mut repos = BTreeMap::new();
        for (ns, path) in stack_repo_paths(&repo_root().join("data/spack-stack.yaml")) {
            repos.insert(ns.clone(), root.join("repos").join(&ns).join(path));
        }
        for (ns, path) in stack_repo_paths(&test_stack()) {
            if ns != "builtin" {
                repos.insert(
                    format!("test_{ns}"),
                    root.join("test-repos").join(path),
                );
            }
        }
        locked(&run_dir().join("host-spack.lock"), || {
            if root.join("ready").exists() {
                return;
            }
            let _ = fs::remove_dir_all(&root);
            untar(&off.archives["spack"].0, &root.join("spack"));
            for (name, (archive, _)) in &off.archives {
                if name != "spack" {
                    untar(archive, &root.join("repos").join(name));
                }
            }
            untar(&test_repos_archive().0, &root.join("test-repos"));
            fs::create_dir_all(&config).unwrap();
            let mut yaml = String::from("repos::\n");
            for ns in ["slurm_factory", "builtin"] {
                yaml.push_str(&format!("  {ns}: {}\n", repos[ns].display()));
            }
            fs::write(config.join("repos.yaml"), yaml).unwrap();
            fs::write(config.join("bootstrap.yaml"), "bootstrap:\n  sources:: []\n").unwrap();
            fs::write(
                config.join("config.yaml"),
                format!(
                    "config:\n  build_stage::\n  - {stage}\n  misc_cache: {misc}\n  source_cache: {src}\n",
                    stage = root.join("stage").display(),
                    misc = root.join("misc").display(),
                    src = root.join("sources").display()
                ),
            )
            .unwrap();
            let h = HostSpack {
                root: root.clone(),
                config: config.clone(),
                repos: BTreeMap::new(),
            };
            sh_ok(h.spack().args(["compiler", "find"]));
            fs::write(root.join("ready"), "").unwrap();
        });
        HostSpack {
            root,
            config,
            repos,
        }
    })
}

impl HostSpack {
    /// `spack` with only this host's test configuration: no user or system scope.
    fn spack(&self) -> Command {
        let mut c = Command::new(self.root.join("spack/bin/spack"));
        c.arg("-C")
            .arg(&self.config)
            .env("SPACK_DISABLE_LOCAL_CONFIG", "1")
            .env("SPACK_USER_CACHE_PATH", self.root.join("user-cache"))
            .env("SPACK_PYTHON", "python3");
        c
    }
}

// ---------------------------------------------------------------------------------------------
// Concretizing the real cells.

/// One concretized cell: its concrete specs (hash -> name@version) and how long it took.
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Concretized {
    specs: BTreeMap<String, String>,
    roots: Vec<String>,
    seconds: f64,
}

/// sf-spackenv's spack.yaml with only what cannot work on this host swapped: the image's
/// repository paths for this host's copies, the published mirrors (out of reach) for none, and
/// the container's install and cache paths for the run's.
fn for_this_host(spack_yaml: &str, h: &HostSpack, scratch: &Path) -> String {
    let mut text = spack_yaml.to_string();
    for (ns, dir) in &h.repos {
        if !ns.starts_with("test_") {
            let image_dir = format!(
                "/opt/spack-repos/{ns}/{}",
                dir.strip_prefix(h.root.join("repos").join(ns))
                    .unwrap()
                    .display()
            );
            assert!(text.contains(&image_dir), "{image_dir} not in\n{text}");
            text = text.replace(&image_dir, &dir.display().to_string());
        }
    }
    let mut doc: Yaml = serde_yaml::from_str(&text).unwrap();
    let spack = doc["spack"].as_mapping_mut().unwrap();
    spack.remove("mirrors");
    spack.insert("mirrors:".into(), Yaml::Mapping(Default::default()));
    let config = spack.get_mut("config").unwrap().as_mapping_mut().unwrap();
    config.insert(
        "install_tree".into(),
        serde_yaml::from_str(&format!(
            "{{root: {}, padded_length: 128}}",
            scratch.join("install").display()
        ))
        .unwrap(),
    );
    config.remove("source_cache");
    config.remove("misc_cache");
    // Spack writes the (empty) view when it concretizes: never into this host's /opt.
    if let Some(root) = spack
        .get_mut("view")
        .and_then(|v| v.get_mut("default"))
        .and_then(|d| d.get_mut("root"))
    {
        *root = scratch.join("view").display().to_string().into();
    }
    serde_yaml::to_string(&doc)
        .unwrap()
        .replacen("'mirrors:': {}", "mirrors:: {}", 1)
        .replacen("'repos:':", "repos::", 1)
        .replacen("'hierarchy:':", "hierarchy::", 1)
}

/// Concretize a real cell (sf-spackenv flags) once per run; later callers get the result.
fn concretized(name: &str, flags: &[&str]) -> Concretized {
    let h = host_spack();
    let dir = run_dir().join("cells").join(name);
    fs::create_dir_all(&dir).unwrap();
    let result = dir.join("concretized.json");
    locked(&dir.join("lock"), || {
        if let Ok(bytes) = fs::read(&result) {
            return serde_json::from_slice(&bytes).unwrap();
        }
        let env = dir.join("env");
        sh_ok(
            Command::new(cargo_bin("sf-spackenv"))
                .args(flags)
                .args(["--toolchain", "noble", "--build-jobs", "2", "--out"])
                .arg(&env)
                .env_remove("GITHUB_ACTIONS"),
        );
        let written = fs::read_to_string(env.join("spack.yaml")).unwrap();
        fs::write(env.join("spack.yaml"), for_this_host(&written, h, &dir)).unwrap();
        let c = concretize(&env);
        report(&format!(
            "real Spack: {name} concretized on this host to {} specs in {:.0} s",
            c.specs.len(),
            c.seconds
        ));
        fs::write(&result, serde_json::to_vec(&c).unwrap()).unwrap();
        c
    })
}

/// `spack concretize` an environment directory; a failure shows Spack's own words (which name
/// the spec).
fn concretize(env: &Path) -> Concretized {
    let start = Instant::now();
    let out = host_spack()
        .spack()
        .arg("-e")
        .arg(env)
        .args(["concretize", "--force"])
        .output()
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    fs::write(
        env.join("concretize.log"),
        [&out.stdout[..], &out.stderr[..]].concat(),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "spack concretize of {} failed:\n{}",
        env.display(),
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
    let lock: Value = serde_json::from_slice(&fs::read(env.join("spack.lock")).unwrap()).unwrap();
    let specs = lock["concrete_specs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(hash, s)| {
            (
                hash.clone(),
                format!(
                    "{}@{}",
                    s["name"].as_str().unwrap(),
                    s["version"].as_str().unwrap_or("?")
                ),
            )
        })
        .collect();
    let roots = lock["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"].as_str().unwrap().to_string())
        .collect();
    Concretized {
        specs,
        roots,
        seconds,
    }
}

/// Every deps hash must be in the version cell: the version build then reuses the deps mirror
/// for all of them.
fn assert_version_reuses_deps(deps: (&str, &[&str]), version: (&str, &[&str])) {
    let d = concretized(deps.0, deps.1);
    let v = concretized(version.0, version.1);
    let missing: Vec<&String> = d
        .specs
        .iter()
        .filter(|(h, _)| !v.specs.contains_key(*h))
        .map(|(_, s)| s)
        .collect();
    report(&format!(
        "real Spack: {} finds {}/{} of {}'s specs ({} specs of its own)",
        version.0,
        d.specs.len() - missing.len(),
        d.specs.len(),
        deps.0,
        v.specs.len() - (d.specs.len() - missing.len())
    ));
    assert!(
        missing.is_empty(),
        "{} would rebuild what {} built, with other hashes: {missing:?}",
        version.0,
        deps.0
    );
    assert!(
        !d.specs.values().any(|s| s.starts_with("openmpi@")),
        "the deps cell builds an openmpi the version cells do not use"
    );
    assert!(
        v.roots
            .iter()
            .any(|r| r.starts_with("slurm_factory.slurm@") || r.starts_with("slurm@")),
        "{:?}",
        v.roots
    );
}

const DEPS_CPU: (&str, &[&str]) = ("deps-noble-amd64-cpu", &["--pipeline", "deps"]);
const DEPS_GPU: (&str, &[&str]) = (
    "deps-noble-amd64-gpu",
    &["--pipeline", "deps", "--build", "gpu"],
);

#[test]
fn real_spack_version_25_11_cpu_reuses_every_deps_hash() {
    assert_version_reuses_deps(
        DEPS_CPU,
        (
            "version-25.11-noble-amd64-cpu",
            &["--pipeline", "version", "--slurm-version", "25.11"],
        ),
    );
}

#[test]
fn real_spack_version_24_11_cpu_reuses_every_deps_hash() {
    assert_version_reuses_deps(
        DEPS_CPU,
        (
            "version-24.11-noble-amd64-cpu",
            &["--pipeline", "version", "--slurm-version", "24.11"],
        ),
    );
}

#[test]
fn real_spack_version_23_11_cpu_reuses_every_deps_hash() {
    assert_version_reuses_deps(
        DEPS_CPU,
        (
            "version-23.11-noble-amd64-cpu",
            &["--pipeline", "version", "--slurm-version", "23.11"],
        ),
    );
}

#[test]
fn real_spack_version_25_11_gpu_reuses_every_deps_hash() {
    let v = (
        "version-25.11-noble-amd64-gpu",
        &[
            "--pipeline",
            "version",
            "--slurm-version",
            "25.11",
            "--build",
            "gpu",
        ][..],
    );
    assert_version_reuses_deps(DEPS_GPU, v);
    let c = concretized(v.0, v.1);
    for gpu in ["cuda@", "rocm-smi-lib@"] {
        assert!(c.specs.values().any(|s| s.starts_with(gpu)), "no {gpu}");
    }
}

#[test]
fn real_spack_names_a_pin_that_does_not_exist() {
    // The pins the stack had before: munge 0.5.16 exists in no repository.
    let h = host_spack();
    let dir = run_dir().join("cells/bad-pin");
    let stack = dir.join("stack.yaml");
    fs::create_dir_all(&dir).unwrap();
    let text = fs::read_to_string(repo_root().join("data/spack-stack.yaml")).unwrap();
    assert!(text.contains("{ name: munge, version: 0.5.15 }"));
    fs::write(
        &stack,
        text.replace(
            "{ name: munge, version: 0.5.15 }",
            "{ name: munge, version: 0.5.16 }",
        ),
    )
    .unwrap();
    let env = dir.join("env");
    sh_ok(
        Command::new(cargo_bin("sf-spackenv"))
            .args(["--pipeline", "deps", "--toolchain", "noble", "--stack-file"])
            .arg(&stack)
            .arg("--out")
            .arg(&env)
            .env_remove("GITHUB_ACTIONS"),
    );
    let written = fs::read_to_string(env.join("spack.yaml")).unwrap();
    fs::write(env.join("spack.yaml"), for_this_host(&written, h, &dir)).unwrap();
    let out = h
        .spack()
        .arg("-e")
        .arg(&env)
        .args(["concretize", "--force"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("munge"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// A real containerised build of the test stack.

/// The test stack: the rehearsal stack (data/rehearsal: the real Slurm with the OS's libraries)
/// plus the tests' own `sf_test` repository, whose two packages the deps cell builds. Written
/// once per run.
fn test_stack() -> PathBuf {
    let out = run_dir().join("spack-test-stack.yaml");
    locked(&run_dir().join("test-stack.lock"), || {
        if out.is_file() {
            return;
        }
        let text = fs::read_to_string(repo_root().join("data/rehearsal/spack-stack.yaml")).unwrap();
        let mut doc: Yaml = serde_yaml::from_str(&text).unwrap();
        let repos = doc["repos"].as_sequence_mut().unwrap();
        let mut sf_test = repos[0].clone();
        assert_eq!(sf_test["namespace"], Yaml::from("slurm_factory"));
        sf_test["namespace"] = "sf_test".into();
        sf_test["path"] = "spack_repo/sf_test".into();
        repos.insert(1, sf_test);
        doc["dependencies"] = serde_yaml::from_str(
            "[{ name: sf-hello-lib, version: \"1.0\" }, { name: sf-hello, version: \"1.0\" }]",
        )
        .unwrap();
        let tmp = out.with_extension("tmp");
        fs::write(&tmp, serde_yaml::to_string(&doc).unwrap()).unwrap();
        fs::rename(&tmp, &out).unwrap();
    });
    out
}

/// The rehearsal Slurm recipe and the tests' package repository as one archive of the kind the stack takes, made once per
/// run (gzip without a timestamp, so the same tree gives the same sha256).
fn test_repos_archive() -> (PathBuf, String) {
    let out = run_dir().join("sf-test-repos.tar.gz");
    locked(&run_dir().join("test-repos.lock"), || {
        if !out.is_file() {
            let tmp = out.with_extension("tmp");
            sh_ok(Command::new("bash").arg("-c").arg(format!(
                "set -o pipefail; tar --sort=name --owner=0 --group=0 --numeric-owner \
                 --mtime=@0 --transform 's,^,sf-test-repos/,' -c -C {rehearsal} \
                 spack_repo/slurm_factory -C {tests} spack_repo/sf_test | gzip -n >{tmp}",
                rehearsal = repo_root().join("data/rehearsal").display(),
                tests = repo_root().join("tests/spack-test-repos").display(),
                tmp = tmp.display()
            )));
            fs::rename(&tmp, &out).unwrap();
        }
    });
    let sha = sh_ok(Command::new("sha256sum").arg(&out));
    let sha = String::from_utf8_lossy(&sha.stdout)[..64].to_string();
    (out, sha)
}

/// The Slurm release the tests build (the one Debian's source package carries).
const TEST_SLURM: &str = "24.11";
const TEST_SLURM_RELEASE: &str = "24.11.5";

/// The rehearsal matrix: Debian 12 on the locally made base image, Slurm 24.11 at 24.11.5.
fn test_matrix() -> PathBuf {
    repo_root().join("data/rehearsal/matrix.yaml")
}

fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("SF_RESULTS_DIR")
        .output()
        .unwrap()
}

fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}",
        o.status,
        tail(&String::from_utf8_lossy(&o.stderr), 80)
    );
    o
}

/// The engine flags every sf-build call of these tests takes: Podman on vfs and squashed image
/// builds. (Builds add no network; a test cluster needs one, if only to resolve its host.)
fn engine(c: &mut Command) -> &mut Command {
    c.args(["--engine", "podman"]);
    for a in podman_args() {
        c.arg(format!("--engine-arg={a}"));
    }
    c.args([
        "--run-arg=--ulimit=nofile=20000:20000",
        "--run-arg=--ulimit=nproc=32768:32768",
        "--image-build-arg=--squash-all",
        "--image-build-arg=--layers=false",
    ])
}

const BUILD_UID: u32 = 4242;

struct Built {
    cell: PathBuf,
    json: Value,
    stderr: String,
    work: PathBuf,
}

impl Built {
    /// A path of the build's output (`build.KEY` of sf-build's JSON).
    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(
            self.json["build"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: {}", self.json)),
        )
    }
    /// Packages Spack built from source in this run, from its own output.
    fn built_from_source(&self) -> BTreeSet<String> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("==> "))
            .filter_map(|l| l.strip_suffix(": Executing phase: 'install'"))
            .map(str::to_string)
            .collect()
    }
}

/// sf-matrix, sf-spackenv (the test stack, every tree from its local archive) and sf-build build
/// for one cell of the test matrix.
fn build_cell(dir: &Path, cache: &Path, pipeline: &str, extra: &[&str]) -> Built {
    let off = offline();
    let matrix = test_matrix();
    let mut m = Command::new(cargo_bin("sf-matrix"));
    m.args([
        "--pipeline",
        pipeline,
        "--toolchains",
        "bookworm",
        "--matrix-file",
    ])
    .arg(&matrix);
    if pipeline != "deps" {
        m.args(["--slurm-versions", TEST_SLURM]);
    }
    let cell = dir.join(format!("{pipeline}.json"));
    fs::write(&cell, ok("sf-matrix", run(&mut m)).stdout).unwrap();

    let (repos, repos_sha) = test_repos_archive();
    let mut archives = vec![];
    let mut sums = vec![];
    for name in ["spack", "builtin"] {
        let (p, s) = &off.archives[name];
        archives.push(format!("{name}={}", p.display()));
        sums.push(format!("{name}={s}"));
    }
    for ns in ["slurm_factory", "sf_test"] {
        archives.push(format!("{ns}={}", repos.display()));
        sums.push(format!("{ns}={repos_sha}"));
    }
    let env = dir.join(format!("{pipeline}-env"));
    ok(
        "sf-spackenv",
        run(Command::new(cargo_bin("sf-spackenv"))
            .arg("--cell")
            .arg(&cell)
            .arg("--matrix-file")
            .arg(&matrix)
            .arg("--stack-file")
            .arg(test_stack())
            .arg("--out")
            .arg(&env)
            .args(["--build-jobs", "2"])
            .env("SF_ARCHIVES", archives.join(","))
            .env("SF_ARCHIVE_SHA256S", sums.join(","))
            .env("SF_PYTHON_WHEELS", &off.wheels)
            .env("SF_SOURCE_MIRROR", &off.test_sources)),
    );

    let start = Instant::now();
    let o = run(engine(
        Command::new(cargo_bin("sf-build"))
            .args(["build", "--user"])
            .arg(format!("{BUILD_UID}:{BUILD_UID}"))
            .arg("--run-arg=--passwd=false")
            .arg("--run-arg=--network=none")
            .arg("--cell")
            .arg(&cell)
            .arg("--env-dir")
            .arg(&env)
            .arg("--cache-dir")
            .arg(cache)
            .args(extra),
    ));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let o = ok(&format!("sf-build build of the {pipeline} cell"), o);
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let work = PathBuf::from(
        json["build"]["work_dir"]
            .as_str()
            .unwrap_or_else(|| panic!("{json}")),
    );
    let built = Built {
        cell,
        json,
        stderr,
        work,
    };
    report(&format!(
        "real Spack: sf-build build of the test {pipeline} cell took {:.0} s; built from source: {:?}",
        start.elapsed().as_secs_f64(),
        built.built_from_source()
    ));
    built
}

fn mirror_specs(mirror: &Path) -> BTreeSet<String> {
    sf_spack::Mirror::open(mirror)
        .unwrap()
        .spec_manifests()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn real_spack_builds_the_test_stack_in_a_container_and_everything_after_it_works() {
    require_tool("podman");
    base_image();
    let dir = run_dir().join("container-build");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache");

    // The deps cell: everything from source, as the runner's uid, pushed unsigned.
    let deps = build_cell(&dir, &cache, "deps", &[]);
    let deps_mirror = deps.path("mirror");
    assert_eq!(
        mirror_specs(&deps_mirror),
        names(&[
            "compiler-wrapper",
            "gcc-runtime",
            "sf-hello",
            "sf-hello-lib"
        ])
    );
    assert!(
        deps.built_from_source().contains("sf-hello-lib"),
        "{:?}",
        deps.built_from_source()
    );
    assert_eq!(fs::metadata(&deps_mirror).unwrap().uid(), BUILD_UID);

    // The tarball cell after it: only Slurm is built (the real one, from its release source in
    // the local source mirror); the rest comes from the runner's cache.
    let tarball = build_cell(&dir, &cache, "tarball", &[]);
    assert_eq!(tarball.built_from_source(), names(&["slurm"]));
    let view = tarball.path("view");
    for f in [
        "bin/sinfo",
        "bin/srun",
        "bin/sbatch",
        "bin/scontrol",
        "sbin/slurmctld",
        "sbin/slurmd",
        "lib/libslurm.so",
        "lib/slurm/auth_none.so",
        // built only with libjwt (the OS's, an external of the rehearsal stack); it also
        // serves cred/slurm
        "lib/slurm/auth_slurm.so",
        "lib/slurm/select_cons_tres.so",
    ] {
        assert!(
            view.join(f).exists(),
            "{f} is not in the view {}",
            view.display()
        );
    }
    assert!(!view.is_symlink());
    let modulefile = tarball
        .path("modules")
        .join(format!("slurm/{TEST_SLURM}-bookworm.lua"));
    assert!(
        walk(&tarball.path("modules"))
            .iter()
            .any(|p| p.ends_with(format!("slurm/{TEST_SLURM}-bookworm.lua"))),
        "no modulefile {} under {:?}",
        modulefile.display(),
        walk(&tarball.path("modules"))
    );
    let tarball_file = PathBuf::from(
        tarball.json["tarball"]["tarball"]
            .as_str()
            .unwrap_or_else(|| panic!("no tarball: {}", tarball.json)),
    );
    assert!(tarball_file.is_file());
    // What the build image measured about itself, not what the matrix expects.
    let info = &tarball.json["tarball"]["buildinfo"];
    assert_eq!(
        (
            info["built_on"]["os"].as_str(),
            info["built_on"]["glibc"].as_str()
        ),
        (Some("Debian GNU/Linux 12 (bookworm)"), Some("2.36")),
        "{info}"
    );
    assert!(info.get("rehearsal").is_none(), "{info}");
    // The run's mirror holds the whole environment (what Slurm links to and was built with),
    // so it installs on its own.
    assert_eq!(
        mirror_specs(&tarball.path("mirror")),
        names(&[
            "compiler-wrapper",
            "gcc-runtime",
            "sf-hello",
            "sf-hello-lib",
            "slurm"
        ])
    );

    // Signed outside the build, tested in a clean container with signature checks on.
    let key = dir.join("key");
    fs::create_dir_all(&key).unwrap();
    ok(
        "sf-sign key generate",
        run(Command::new(cargo_bin("sf-sign"))
            .args(["key", "generate", "--out"])
            .arg(key.join("secret.asc"))
            .arg("--public-out")
            .arg(key.join("public.asc"))
            .args([
                "--uid",
                "Real Spack test <test@example.invalid>",
                "--expires",
                "1d",
            ])
            .env_remove("GPG_PASSPHRASE")),
    );
    for m in [&deps_mirror, &tarball.path("mirror")] {
        ok(
            "sf-sign mirror",
            run(Command::new(cargo_bin("sf-sign"))
                .arg("mirror")
                .arg(m)
                .arg("--key-file")
                .arg(key.join("secret.asc"))),
        );
    }
    let t = ok(
        "sf-build test-mirror",
        run(engine(
            Command::new(cargo_bin("sf-build"))
                .args(["test-mirror", "--no-upstream", "--cell"])
                .arg(&tarball.cell)
                .arg("--mirror")
                .arg(&deps_mirror)
                .arg("--mirror")
                .arg(tarball.path("mirror"))
                .arg("--env-dir")
                .arg(tarball.path("env_dir")),
        )),
    );
    let said = String::from_utf8_lossy(&t.stderr);
    assert!(said.contains("PASS: "), "{said}");
    assert!(
        said.contains(&format!("slurm {TEST_SLURM_RELEASE}")),
        "{said}"
    );

    // Published to a file:// bucket (each mirror where the layout puts it), installed from there
    // by a fresh Spack on this host: Slurm from its version mirror, its dependencies from deps.
    let bucket = dir.join("bucket");
    let published = [
        (deps_mirror.clone(), bucket.join("bookworm/slurm/deps")),
        (
            tarball.path("mirror"),
            bucket.join(format!("bookworm/slurm/{TEST_SLURM}")),
        ),
    ];
    for (m, dest) in &published {
        ok(
            "sf-publish mirror",
            run(Command::new(cargo_bin("sf-publish"))
                .arg("mirror")
                .arg(m)
                .arg(format!("file://{}", dest.display()))
                .arg("--create")
                .arg("--cert")
                .arg(key.join("public.asc"))),
        );
    }
    let slurm = install_from_published(&[&published[0].1, &published[1].1], "slurm", &dir);
    // Slurm's clients want a configuration even for --version.
    let conf = dir.join("client/slurm.conf");
    fs::write(
        &conf,
        "ClusterName=c\nSlurmctldHost=localhost\nAuthType=auth/none\nCredType=cred/none\nNodeName=localhost CPUs=1\nPartitionName=p Nodes=ALL\n",
    )
    .unwrap();
    let sinfo = sh_ok(
        Command::new(slurm.join("bin/sinfo"))
            .arg("--version")
            .env("SLURM_CONF", &conf),
    );
    assert_eq!(
        String::from_utf8_lossy(&sinfo.stdout),
        format!("slurm {TEST_SLURM_RELEASE}\n")
    );
    let hello = install_from_published(&[&published[0].1], "sf-hello", &dir);
    let said = sh_ok(&mut Command::new(hello.join("bin/sf-hello")));
    assert_eq!(
        String::from_utf8_lossy(&said.stdout),
        "hello from libsfhello\n"
    );
    // The absolute path in a data file was relocated to this host's install tree.
    let recorded = fs::read_to_string(hello.join("share/sf_hello/lib-prefix.txt")).unwrap();
    assert!(
        recorded.starts_with(&dir.join("client/install").display().to_string()),
        "{recorded}"
    );

    // The tarball the build packed runs a one-node cluster from another prefix: in a clean
    // container of the base image, and on this host (--local: as the invoking user, on free
    // ports, everything in a scratch folder).
    for place in [&["--image", BASE_IMAGE][..], &["--local"][..]] {
        let start = Instant::now();
        let t = ok(
            &format!("sf-build test {place:?}"),
            run(engine(
                Command::new(cargo_bin("sf-build"))
                    .arg("test")
                    .args(place)
                    // Slurm's own authentication with a generated key (no munge here).
                    .args(["--auth", "slurm"])
                    .arg("--cell")
                    .arg(&tarball.cell)
                    .arg("--tarball")
                    .arg(&tarball_file),
            )),
        );
        let said = String::from_utf8_lossy(&t.stderr);
        for want in [
            format!("sinfo --version: slurm {TEST_SLURM_RELEASE}"),
            ", 0 with missing libraries".to_string(),
            "(from slurmd -C)".to_string(),
            "auth/slurm, proctrack/linuxproc".to_string(),
            "==> cluster: srun -N1 hostname".to_string(),
            "a one-node cluster ran srun and sbatch jobs from /".to_string(),
        ] {
            assert!(said.contains(&want), "{want:?} not in:\n{said}");
        }
        report(&format!(
            "real Slurm: the cluster test {place:?} of a {} MB tarball took {:.0} s",
            fs::metadata(&tarball_file).unwrap().len() / 1_000_000,
            start.elapsed().as_secs_f64()
        ));
    }

    // The same cell again on the same cache: nothing is built from source.
    let again_out = dir.join("again.tar.gz");
    let again = build_cell(
        &dir,
        &cache,
        "tarball",
        &["--out", again_out.to_str().unwrap()],
    );
    assert!(again_out.is_file());
    assert_eq!(
        again.built_from_source(),
        BTreeSet::new(),
        "{}",
        tail(&again.stderr, 40)
    );
    assert_ne!(
        again.work, tarball.work,
        "each run has a work directory of its own"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// What a user does with the published mirrors: a Spack of their own trusts the keys they
/// publish and installs a package by hash with signature checks on, from binaries only. Returns
/// the install prefix.
fn install_from_published(mirrors: &[&Path], package: &str, dir: &Path) -> PathBuf {
    let h = host_spack();
    let client = dir.join("client");
    let config = client.join("config");
    fs::create_dir_all(&config).unwrap();
    let mut repos = String::from("repos::\n");
    for ns in ["test_slurm_factory", "test_sf_test", "builtin"] {
        repos.push_str(&format!(
            "  {}: {}\n",
            ns.trim_start_matches("test_"),
            h.repos[ns].display()
        ));
    }
    fs::write(config.join("repos.yaml"), repos).unwrap();
    let mut yaml = String::from("mirrors::\n");
    for (i, m) in mirrors.iter().enumerate() {
        yaml.push_str(&format!(
            "  published-{i}:\n    url: file://{}\n    binary: true\n    source: false\n    signed: true\n",
            m.display()
        ));
    }
    fs::write(config.join("mirrors.yaml"), yaml).unwrap();
    fs::write(
        config.join("config.yaml"),
        format!(
            "config:\n  install_tree:\n    root: {}\n",
            client.join("install").display()
        ),
    )
    .unwrap();
    let spack = |args: &[&str]| -> Output {
        let mut c = h.spack();
        c.arg("-C")
            .arg(&config)
            .env("SPACK_GNUPGHOME", client.join("gnupg"))
            .args(args);
        ok(&format!("spack {args:?}"), run(&mut c))
    };
    spack(&["buildcache", "keys", "--install", "--trust"]);
    // --allarch: the mirror's target (x86_64_v3) need not be this host's own.
    let list = spack(&["buildcache", "list", "--long", "--allarch", package]);
    let text = String::from_utf8_lossy(&list.stdout);
    let hash = text
        .split_whitespace()
        .find(|w| {
            w.len() == 7
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .unwrap_or_else(|| panic!("no {package} in the published mirrors: {text}"));
    spack(&["install", "--cache-only", &format!("/{hash}")]);
    let loc = spack(&["location", "--install-dir", &format!("/{hash}")]);
    PathBuf::from(String::from_utf8_lossy(&loc.stdout).trim())
}
