//! The real binary against real tools: gcc-built Slurm stand-ins, real Lmod, real tar/gzip,
//! shellcheck, and real Podman (runc, vfs storage) with a Debian base image made by debootstrap.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use assert_cmd::Command as Bin;
use serde_json::Value;

use sf_core::layout::{Cell, Layout};
use sf_core::matrix::{ListArg, Pipeline, Selection, SupportMatrix};
use sf_testkit::require_tool;

mod support;
use support::{base_image, podman, podman_args, sh, short_hash, with_engine, BASE_IMAGE};

const SLURM_VERSION: &str = "25.11";

/// Lmod is a shell function, not a command: its init script must be there.
fn require_lmod() {
    assert!(
        Path::new("/usr/share/lmod/lmod/init/bash").is_file(),
        "Lmod is not installed: `scripts/test.sh` installs it (scripts/deps/build.apt)"
    );
}

/// A real tarball cell for Slurm 25.11 on noble, as sf-matrix makes it.
fn cell() -> Cell {
    let m = SupportMatrix::embedded();
    let sel = Selection {
        slurm_versions: ListArg::Named(vec![SLURM_VERSION.into()]),
        toolchains: ListArg::Named(vec!["noble".into()]),
        ..Default::default()
    };
    let keys = sel.expand(&m, Pipeline::Tarball).unwrap();
    Layout::default().cell(&m, &keys[0])
}

fn slurm_full_version(c: &Cell) -> String {
    c.slurm_release
        .clone()
        .unwrap_or_else(|| SLURM_VERSION.to_string())
}

fn write_cell(dir: &Path, c: &Cell) -> PathBuf {
    let p = dir.join("cell.json");
    fs::write(&p, serde_json::to_vec_pretty(c).unwrap()).unwrap();
    p
}

/// The cell's relocatable modulefile, rendered by sf-spackenv exactly as a real run writes it.
fn modulefile_text(c: &Cell) -> String {
    let checked = sf_spackenv::cell::check(&SupportMatrix::embedded(), c.clone()).unwrap();
    sf_spackenv::render::modulefile(&checked)
        .unwrap()
        .expect("a Slurm cell has a modulefile")
}

/// Compile a libslurm stand-in, an `sinfo` that prints `slurm {version}` through it, and a plugin,
/// with RPATHs into `{install}/slurm-{version}-abcdefgh/lib`. Returns the files to put in a view:
/// (view-relative path, host path).
fn compile_slurm(work: &Path, install: &str, version: &str) -> Vec<(String, PathBuf)> {
    require_tool("gcc");
    let out = work.join("compiled");
    fs::create_dir_all(&out).unwrap();
    let libdir =
        format!("{install}/linux-ubuntu24.04-x86_64_v3/gcc-13.3.0/slurm-{version}-abcdefgh/lib");
    fs::write(
        out.join("slurm.c"),
        format!("const char *slurm_version_str(void) {{ return \"slurm {version}\"; }}\n"),
    )
    .unwrap();
    fs::write(
        out.join("sinfo.c"),
        "#include <stdio.h>\n#include <string.h>\nconst char *slurm_version_str(void);\n\
         int main(int c, char **v) { if (c > 1 && !strcmp(v[1], \"--version\")) { puts(slurm_version_str()); return 0; } return 2; }\n",
    )
    .unwrap();
    fs::write(out.join("plugin.c"), "const char *slurm_version_str(void);\nconst char *p(void) { return slurm_version_str(); }\n").unwrap();
    sh(Command::new("gcc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libslurm.so.1", "-o"])
        .arg(out.join("libslurm.so.1"))
        .arg(out.join("slurm.c")));
    std::os::unix::fs::symlink("libslurm.so.1", out.join("libslurm.so")).ok();
    let rpath = format!("-Wl,-rpath,{libdir}");
    sh(Command::new("gcc")
        .arg("-o")
        .arg(out.join("sinfo"))
        .arg(out.join("sinfo.c"))
        .arg(format!("-L{}", out.display()))
        .args(["-lslurm", &rpath]));
    sh(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out.join("auth_test.so"))
        .arg(out.join("plugin.c"))
        .arg(format!("-L{}", out.display()))
        .args(["-lslurm", &rpath]));
    vec![
        ("bin/sinfo".into(), out.join("sinfo")),
        ("lib/libslurm.so.1".into(), out.join("libslurm.so.1")),
        ("lib/slurm/auth_test.so".into(), out.join("auth_test.so")),
    ]
}

fn make_view(view: &Path, files: &[(String, PathBuf)]) {
    for (rel, src) in files {
        let dest = view.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(src, &dest).unwrap();
    }
    fs::create_dir_all(view.join("share/man/man1")).unwrap();
    fs::write(view.join("share/man/man1/sinfo.1"), ".TH SINFO 1\n").unwrap();
}

/// A padded host install root, like Spack's.
fn padded(base: &Path) -> String {
    format!(
        "{}/software/{}",
        base.display(),
        "__spack_path_placeholder__".repeat(4)
    )
}

fn bin() -> Bin {
    let mut b = Bin::cargo_bin("sf-build").unwrap();
    b.env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("SF_RESULTS_DIR");
    b
}

/// A view, cell and modulefile on this host; returns (cell file, view, modulefile, build prefix).
fn local_fixture(dir: &Path, break_it: bool) -> (PathBuf, PathBuf, PathBuf, String) {
    let c = cell();
    let prefix = padded(dir);
    let files = compile_slurm(dir, &prefix, &slurm_full_version(&c));
    let view = dir.join("view");
    let files: Vec<_> = files
        .into_iter()
        .filter(|(r, _)| !(break_it && r.starts_with("lib/libslurm")))
        .collect();
    make_view(&view, &files);
    let modulefile = dir.join("module.lua");
    fs::write(&modulefile, modulefile_text(&cell())).unwrap();
    (write_cell(dir, &c), view, modulefile, prefix)
}

fn pack(
    dir: &Path,
    cell: &Path,
    view: &Path,
    modulefile: &Path,
    prefix: &str,
    out: &Path,
) -> Value {
    let o = bin()
        .arg("pack")
        .arg("--cell")
        .arg(cell)
        .arg("--view")
        .arg(view)
        .arg("--modulefile")
        .arg(modulefile)
        .arg("--build-prefix")
        .arg(prefix)
        .arg("--out")
        .arg(out)
        .arg("--results-dir")
        .arg(dir.join("results"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pack failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A view built on this host (`--rehearsal`) says so, and records this host as what it was built
/// on, not the OS its cell's toolchain stands for.
#[test]
fn a_rehearsal_pack_records_what_it_was_really_built_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let out = tmp.path().join("slurm.tar.gz");
    let o = bin()
        .args(["pack", "--rehearsal", "--cell"])
        .arg(&cell)
        .arg("--view")
        .arg(&view)
        .arg("--modulefile")
        .arg(&modulefile)
        .arg("--build-prefix")
        .arg(&prefix)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let info = &v["buildinfo"];
    assert_eq!(info["rehearsal"], true);
    let os_release = fs::read_to_string("/etc/os-release").unwrap();
    let pretty = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap()
        .trim_matches('"');
    assert_eq!(info["built_on"]["os"], pretty);
    let glibc = sh(Command::new("getconf").arg("GNU_LIBC_VERSION"));
    assert_eq!(
        info["built_on"]["glibc"],
        glibc.trim().trim_start_matches("glibc ")
    );
    // The cell's own facts stay what the toolchain stands for.
    assert_eq!(info["os"], self::cell().os);
    // And the tarball carries the same record.
    let inside = sh(Command::new("tar")
        .arg("-xzOf")
        .arg(&out)
        .arg("BUILDINFO.json"));
    let inside: Value = serde_json::from_str(&inside).unwrap();
    assert_eq!(&inside["built_on"], &info["built_on"]);
}

#[test]
fn pack_and_test_locally_with_real_lmod() {
    require_lmod();
    require_tool("ldd");
    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let out = tmp.path().join("slurm.tar.gz");
    let v = pack(tmp.path(), &cell, &view, &modulefile, &prefix, &out);
    assert_eq!(v["tarball"], out.display().to_string());
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["buildinfo"]["slurm_version"], SLURM_VERSION);
    assert_eq!(v["buildinfo"]["toolchain"], "noble");
    // Not a rehearsal, and nobody measured where it was built: nothing claimed.
    assert!(v["buildinfo"].get("rehearsal").is_none(), "{v}");
    assert!(v["buildinfo"].get("built_on").is_none(), "{v}");
    assert_eq!(
        v["buildinfo"]["relocation"]["elf_relocated"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let listing = sh(Command::new("tar").arg("-tzf").arg(&out));
    for want in [
        "modules/slurm/25.11-noble.lua",
        "data/slurm_assets/slurm_install.sh",
        "data/slurm_assets/defaults/slurmd.service",
        "data/slurm_assets/slurm/topology.conf.template",
        "data/slurm_assets/mysql/slurm_acct_db.sql",
        "view/bin/sinfo",
        "BUILDINFO.json",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} missing from\n{listing}"
        );
    }
    // The build tree never existed on disk: the test passes on relocation alone.
    assert!(!tmp.path().join("software").exists());
    let o = bin()
        .args(["test", "--local", "--quick", "--cell"])
        .arg(&cell)
        .arg("--tarball")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "test failed: {stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains(&slurm_full_version(&self::cell())),
        "{v}"
    );
    assert!(
        stderr.contains("ELF files checked, 0 with missing"),
        "{stderr}"
    );
    // One record per step.
    assert_eq!(fs::read_dir(tmp.path().join("results")).unwrap().count(), 1);
}

#[test]
fn a_tarball_missing_a_library_fails_the_test() {
    require_lmod();
    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), true);
    let out = tmp.path().join("broken.tar.gz");
    pack(tmp.path(), &cell, &view, &modulefile, &prefix, &out);
    let results = tmp.path().join("results-test");
    let o = bin()
        .args(["test", "--local", "--quick", "--cell"])
        .arg(&cell)
        .arg("--tarball")
        .arg(&out)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAIL: sinfo --version failed"), "{stderr}");
    assert!(stderr.contains("libslurm.so.1 => not found"), "{stderr}");
    let rec: Value = serde_json::from_slice(
        &fs::read(
            fs::read_dir(&results)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["status"], "failed");
    assert!(Path::new(rec["error"]["logs"].as_str().unwrap())
        .join("test.log")
        .is_file());
}

#[test]
fn a_wrong_version_fails_the_test() {
    require_lmod();
    let tmp = tempfile::tempdir().unwrap();
    let (cell_file, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let out = tmp.path().join("t.tar.gz");
    pack(tmp.path(), &cell_file, &view, &modulefile, &prefix, &out);
    let mut c = cell();
    c.slurm_release = Some("24.11.6".into());
    let other = tmp.path().join("other.json");
    fs::write(&other, serde_json::to_vec(&c).unwrap()).unwrap();
    let o = bin()
        .args(["test", "--local", "--quick", "--cell"])
        .arg(&other)
        .arg("--tarball")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected Slurm 24.11.6"));
}

#[test]
fn a_refused_tarball_leaves_no_scratch_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch_base = tmp.path().join("tmp");
    fs::create_dir_all(&scratch_base).unwrap();
    let cell_file = tmp.path().join("cell.json");
    fs::write(&cell_file, serde_json::to_vec(&cell()).unwrap()).unwrap();
    let junk = tmp.path().join("junk.tar.gz");
    fs::write(&junk, b"not a gzip stream at all").unwrap();
    let o = bin()
        .args(["test", "--local", "--quick", "--cell"])
        .arg(&cell_file)
        .arg("--tarball")
        .arg(&junk)
        .env("TMPDIR", &scratch_base)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.tar.gz"));
    let left: Vec<_> = fs::read_dir(&scratch_base).unwrap().collect();
    assert!(left.is_empty(), "the refusal left {left:?}");
}

/// A real `--full-init` into scratch folders, as the invoking user (no user is created, nothing
/// of this host is touched): the configuration, the auth/slurm key and the units it writes, and
/// a second run that refuses to overwrite an edited configuration without --force.
#[test]
fn install_script_full_init_writes_a_working_configuration_and_keeps_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let out = tmp.path().join("t.tar.gz");
    pack(tmp.path(), &cell, &view, &modulefile, &prefix, &out);
    let x = tmp.path().join("deeper/extracted/here");
    fs::create_dir_all(&x).unwrap();
    sh(Command::new("tar").arg("-xzf").arg(&out).arg("-C").arg(&x));
    let script = x.join("data/slurm_assets/slurm_install.sh");
    // The stand-in view has no auth plugins: auth/slurm is refused until it has one.
    let o = Command::new(&script)
        .args(["--dry-run", "--full-init", "--auth", "slurm"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("this Slurm has no auth_slurm plugin"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::write(x.join("view/lib/slurm/auth_slurm.so"), b"").unwrap();
    let help = sh(Command::new(&script).arg("--help"));
    for opt in [
        "--full-init",
        "--auth munge|slurm|none",
        "--no-cgroup",
        "--state-dir",
        "--force",
    ] {
        assert!(help.contains(opt), "{opt} not in --help:\n{help}");
    }
    let user = sh(Command::new("id").arg("-un")).trim().to_string();
    let (conf, units, state) = (
        tmp.path().join("etc"),
        tmp.path().join("units"),
        tmp.path().join("state"),
    );
    let full_init = || {
        let mut c = Command::new(&script);
        c.args(["--prefix"])
            .arg(&x)
            .args([
                "--full-init",
                "--cluster-name",
                "sf-test",
                "--auth",
                "slurm",
            ])
            .args(["--no-cgroup", "--accounting", "none", "--slurm-user", &user])
            .args(["--ports", "16817,16818", "--conf-dir"])
            .arg(&conf)
            .arg("--systemd-dir")
            .arg(&units)
            .arg("--state-dir")
            .arg(&state);
        c
    };
    let said = sh(&mut full_init());
    assert!(said.contains("note: the tarball is already at"), "{said}");
    let slurm_conf = fs::read_to_string(conf.join("slurm.conf")).unwrap();
    for want in [
        "ClusterName=sf-test".to_string(),
        format!("SlurmUser={user}"),
        "SlurmctldPort=16817".into(),
        "SlurmdPort=16818".into(),
        "AuthType=auth/slurm".into(),
        "CredType=cred/slurm".into(),
        "ProctrackType=proctrack/linuxproc".into(),
        "TaskPlugin=task/none".into(),
        "JobAcctGatherType=jobacct_gather/none".into(),
        "AccountingStorageType=accounting_storage/none".into(),
        format!("PluginDir={}/view/lib/slurm", x.display()),
        format!("SlurmdSpoolDir={}/spool/slurmd", state.display()),
        format!("SlurmctldLogFile={}/log/slurmctld.log", state.display()),
    ] {
        assert!(
            slurm_conf.contains(&want),
            "{want} not in slurm.conf:\n{slurm_conf}"
        );
    }
    assert!(
        !slurm_conf.contains('@'),
        "a placeholder is left:\n{slurm_conf}"
    );
    let cgroup = fs::read_to_string(conf.join("cgroup.conf")).unwrap();
    assert!(cgroup.contains("CgroupPlugin=disabled"), "{cgroup}");
    let key = fs::metadata(conf.join("slurm.key")).unwrap();
    assert_eq!(key.len(), 1024);
    assert_eq!(key.mode() & 0o777, 0o600);
    let unit = fs::read_to_string(units.join("slurmd.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={}/view/sbin/slurmd", x.display()))
            && unit.contains(&format!("SLURM_CONF={}/slurm.conf", conf.display())),
        "{unit}"
    );
    for d in ["spool/slurmd", "spool/slurmctld", "log", "run"] {
        assert!(state.join(d).is_dir(), "{d}");
    }

    // An edited configuration survives a second --full-init without --force, which changes
    // nothing at all; with --force it is replaced.
    let edited = format!("{slurm_conf}# edited by the admin\n");
    fs::write(conf.join("slurm.conf"), &edited).unwrap();
    let key_before = fs::read(conf.join("slurm.key")).unwrap();
    let o = full_init().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("slurm.conf already exists; pass --force"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(conf.join("slurm.conf")).unwrap(), edited);
    assert_eq!(fs::read(conf.join("slurm.key")).unwrap(), key_before);
    // A dry run shows the whole plan, every conflict marked, and exits 2 without a "done:".
    let o = full_init().arg("--dry-run").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let (plan, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    for f in [
        conf.join("slurm.conf"),
        conf.join("slurm.key"),
        conf.join("slurmdbd.conf"),
        units.join("slurmd.service"),
        units.join("slurmdbd.service"),
    ] {
        assert!(
            plan.contains(&format!("[CONFLICT: {} exists", f.display())),
            "{} is not marked:\n{plan}",
            f.display()
        );
    }
    assert!(err.contains("the plan has 8 conflict(s)"), "{err}");
    assert!(!plan.contains("done:"), "{plan}");
    // The stand-in view has no daemons: the units that would start them are named.
    assert!(
        err.contains(&format!(
            "warning: slurmd.service starts {}/view/sbin/slurmd, which this tarball does not have",
            x.display()
        )),
        "{err}"
    );
    assert_eq!(fs::read_to_string(conf.join("slurm.conf")).unwrap(), edited);
    sh(full_init().arg("--force"));
    assert_eq!(
        fs::read_to_string(conf.join("slurm.conf")).unwrap(),
        slurm_conf
    );
    assert_ne!(fs::read(conf.join("slurm.key")).unwrap(), key_before);

    // Bad values are refused before anything is written.
    for (flag, value, says) in [
        ("--auth", "kerberos", "munge, slurm or none"),
        ("--accounting", "files", "slurmdbd or none"),
        ("--ports", "6817", "two port numbers"),
        ("--state-dir", "relative/dir", "absolute path"),
    ] {
        let o = Command::new(&script)
            .args(["--dry-run", "--full-init", flag, value])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{flag} {value}"
        );
    }
}

#[test]
fn install_script_passes_shellcheck_and_its_dry_run_describes_this_host() {
    require_tool("shellcheck");
    let root = sf_testkit::repo_root();
    sh(Command::new("shellcheck")
        .arg(root.join("data/slurm_assets/slurm_install.sh"))
        .arg(root.join("bins/sf-build/scripts/test-tarball.sh")));

    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let out = tmp.path().join("t.tar.gz");
    pack(tmp.path(), &cell, &view, &modulefile, &prefix, &out);
    let x = tmp.path().join("x");
    fs::create_dir(&x).unwrap();
    sh(Command::new("tar").arg("-xzf").arg(&out).arg("-C").arg(&x));
    let conf = tmp.path().join("etc-slurm");
    let units = tmp.path().join("units");
    let target = tmp.path().join("opt-slurm");
    let o = sh(Command::new(x.join("data/slurm_assets/slurm_install.sh"))
        .args([
            "--dry-run",
            "--full-init",
            "--cluster-name",
            "mycluster",
            "--prefix",
        ])
        .arg(&target)
        .arg("--conf-dir")
        .arg(&conf)
        .arg("--systemd-dir")
        .arg(&units));
    let host = sh(Command::new("hostname").arg("-s")).trim().to_string();
    let cpus = sh(&mut Command::new("nproc")).trim().to_string();
    for want in [
        format!(
            "would: copy {}/view to {}/view",
            x.display(),
            target.display()
        ),
        "ClusterName=mycluster".to_string(),
        format!("SlurmctldHost={host}"),
        format!("NodeName={host} CPUs={cpus} "),
        format!("PluginDir={}/view/lib/slurm", target.display()),
        format!("would: write {}/slurm.conf (mode 644)", conf.display()),
        format!("would: write {}/slurmdbd.conf (mode 600)", conf.display()),
        format!("would: write {}/slurmd.service", units.display()),
        format!("ExecStart={}/view/sbin/slurmd", target.display()),
        format!("Environment=SLURM_CONF={}/slurm.conf", conf.display()),
        "SwitchName=s0".to_string(),
    ] {
        assert!(o.contains(&want), "{want:?} not in dry run output:\n{o}");
    }
    let mem_mib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 95
        / 100
        / 1024;
    assert!(o.contains(&format!("RealMemory={mem_mib}")), "{o}");
    // A dry run changes nothing.
    assert!(!conf.exists() && !units.exists() && !target.exists());

    // A real install (no --full-init) copies view/ and modules/ to the prefix.
    sh(Command::new(x.join("data/slurm_assets/slurm_install.sh"))
        .arg("--prefix")
        .arg(&target));
    assert!(target.join("view/bin/sinfo").is_file());
    assert!(target.join("modules/slurm/25.11-noble.lua").is_file());
    // It refuses to overwrite, and to start with a bad cluster name, before doing anything.
    let o = Command::new(x.join("data/slurm_assets/slurm_install.sh"))
        .arg("--prefix")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let o = Command::new(x.join("data/slurm_assets/slurm_install.sh"))
        .args(["--dry-run", "--full-init", "--cluster-name", "Bad Name"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_input_is_exit_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let results = tmp.path().join("results");
    let run = |args: &[&str]| {
        let o = bin()
            .args(args)
            .arg("--results-dir")
            .arg(&results)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let c = cell.to_str().unwrap();
    let m = modulefile.to_str().unwrap();
    let out = tmp.path().join("o.tar.gz");
    let o = out.to_str().unwrap();
    // A missing view.
    let (code, err) = run(&[
        "pack",
        "--cell",
        c,
        "--view",
        "/nonexistent/view",
        "--modulefile",
        m,
        "--out",
        o,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/view"), "{err}");
    // No modulefile anywhere.
    let (code, err) = run(&[
        "pack",
        "--cell",
        c,
        "--view",
        view.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--env-dir") && err.contains("--modulefile"),
        "{err}"
    );
    // A deps cell has no tarball.
    let mut deps = self::cell();
    deps.slurm_version = None;
    deps.slurm_spack_version = None;
    deps.slurm_release = None;
    let deps_file = tmp.path().join("deps.json");
    fs::write(&deps_file, serde_json::to_vec(&deps).unwrap()).unwrap();
    let (code, err) = run(&[
        "pack",
        "--cell",
        deps_file.to_str().unwrap(),
        "--view",
        view.to_str().unwrap(),
        "--modulefile",
        m,
        "--out",
        o,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("deps cell"), "{err}");
    // A cell that is not JSON.
    let (code, _) = run(&[
        "pack",
        "--cell",
        m,
        "--view",
        view.to_str().unwrap(),
        "--modulefile",
        m,
        "--out",
        o,
    ]);
    assert_eq!(code, Some(2));
    // An existing tarball without --force.
    fs::write(&out, "old").unwrap();
    let (code, err) = run(&[
        "pack",
        "--cell",
        c,
        "--view",
        view.to_str().unwrap(),
        "--modulefile",
        m,
        "--build-prefix",
        &prefix,
        "--out",
        o,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--force"));
    assert_eq!(fs::read(&out).unwrap(), b"old");
    // An engine that is not installed (an empty PATH: nothing is).
    let e = bin()
        .args(["test", "--engine", "docker", "--cell", c, "--tarball", o])
        .arg("--results-dir")
        .arg(&results)
        .env("PATH", tmp.path().join("empty-path"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&e.stderr);
    assert_eq!(e.status.code(), Some(2), "{err}");
    assert!(
        err.contains("docker is not on PATH") && err.contains("apt-get install podman"),
        "{err}"
    );
    // A tarball that does not exist.
    let (code, _) = run(&[
        "test",
        "--local",
        "--cell",
        c,
        "--tarball",
        "/nonexistent.tar.gz",
    ]);
    assert_eq!(code, Some(2));
    assert!(!results.exists(), "bad input wrote a result record");
    // With --force the old file is replaced.
    let o2 = bin()
        .args([
            "pack",
            "--force",
            "--cell",
            c,
            "--view",
            view.to_str().unwrap(),
            "--modulefile",
            m,
            "--build-prefix",
            &prefix,
            "--out",
            o,
        ])
        .output()
        .unwrap();
    assert!(o2.status.success());
    sh(Command::new("gzip").arg("-t").arg(&out));
}

#[test]
fn build_checks_what_its_pack_needs_before_building() {
    // No engine on PATH: these must be refused before an engine is even looked for, let alone
    // before hours of build.
    let tmp = tempfile::tempdir().unwrap();
    let (cell, _view, modulefile, _prefix) = local_fixture(tmp.path(), false);
    let env = tmp.path().join("env");
    fs::create_dir_all(env.join("modules/slurm")).unwrap();
    fs::copy(&modulefile, env.join("modules/slurm/25.11-noble.lua")).unwrap();
    let cache = tmp.path().join("cache");
    let results = tmp.path().join("results");
    let out = tmp.path().join("old.tar.gz");
    fs::write(&out, "old").unwrap();
    let run = |extra: &[&str]| {
        let o = bin()
            .args(["build", "--engine", "docker", "--cell"])
            .arg(&cell)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--results-dir")
            .arg(&results)
            .args(extra)
            .env("PATH", tmp.path().join("empty-path"))
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let env_s = env.to_str().unwrap();
    // An existing --out without --force.
    let (code, err) = run(&["--env-dir", env_s, "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"old");
    // The default tarball path under the cache, too.
    let default_out = cache.join("builds/slurm-25.11-noble-software.tar.gz");
    fs::create_dir_all(default_out.parent().unwrap()).unwrap();
    fs::write(&default_out, "old").unwrap();
    let (code, err) = run(&["--env-dir", env_s]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&default_out.display().to_string()), "{err}");
    fs::remove_file(&default_out).unwrap();
    // A missing --modulefile, and an environment directory without one.
    let (code, err) = run(&["--env-dir", env_s, "--modulefile", "/nonexistent/m.lua"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/m.lua"), "{err}");
    fs::remove_file(env.join("modules/slurm/25.11-noble.lua")).unwrap();
    let (code, err) = run(&["--env-dir", env_s]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("has no modulefile"), "{err}");
    // None of that is needed without a pack: then the missing engine is what stops it.
    let (code, err) = run(&["--env-dir", env_s, "--no-pack"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("docker is not on PATH"), "{err}");
    assert!(!results.exists(), "bad input wrote a result record");
    assert!(
        !cache.join("builds/work").exists(),
        "bad input started a build"
    );
}

#[test]
fn every_base_image_names_its_registry() {
    // Podman on stock Debian and Ubuntu has no search registries for short names: `ubuntu:noble`
    // does not resolve there, `docker.io/library/ubuntu:noble` does, on every engine.
    for tc in SupportMatrix::embedded().toolchains {
        let first = tc.base_image.split('/').next().unwrap();
        assert!(
            tc.base_image.contains('/') && (first.contains('.') || first.contains(':')),
            "toolchain {}: {} does not name its registry",
            tc.name,
            tc.base_image
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The engine path: real Podman.

#[test]
fn test_in_a_clean_container_passes_on_a_good_tarball_and_fails_on_a_broken_one() {
    let image = base_image();
    let tmp = tempfile::tempdir().unwrap();
    for (broken, name) in [(false, "good"), (true, "broken")] {
        let dir = tmp.path().join(name);
        fs::create_dir(&dir).unwrap();
        let (cell, view, modulefile, prefix) = local_fixture(&dir, broken);
        let out = dir.join("slurm.tar.gz");
        pack(&dir, &cell, &view, &modulefile, &prefix, &out);
        let o = with_engine(
            bin()
                .args(["test", "--quick", "--image", image, "--cell"])
                .arg(&cell)
                .arg("--tarball")
                .arg(&out),
        )
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        if broken {
            assert_eq!(o.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("libslurm.so.1 => not found"), "{stderr}");
        } else {
            assert!(o.status.success(), "{stderr}");
            assert!(
                stderr.contains("module slurm/25.11-noble loaded"),
                "{stderr}"
            );
            assert!(
                stderr.contains("ELF files checked, 0 with missing"),
                "{stderr}"
            );
        }
    }
}

/// An environment directory like sf-spackenv's, for an image without Spack: the build script
/// copies prebuilt binaries into the padded install tree, assembles the view and the modules,
/// "pushes" a Spack-written unsigned mirror (the fixture) to the run's own mirror, and records
/// what it could see.
fn fake_env_dir(dir: &Path, fail: bool) -> PathBuf {
    let env = dir.join("env");
    fs::create_dir_all(env.join("payload")).unwrap();
    fs::create_dir_all(env.join("modules/slurm")).unwrap();
    let install = format!(
        "/opt/slurm/software/{}",
        "__spack_path_placeholder__".repeat(4)
    );
    for (rel, src) in compile_slurm(dir, &install, &slurm_full_version(&cell())) {
        let dest = env.join("payload").join(&rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(src, dest).unwrap();
    }
    fs::write(
        env.join("modules/slurm/25.11-noble.lua"),
        modulefile_text(&cell()),
    )
    .unwrap();
    fs::write(env.join("spack.yaml"), "spack:\n  specs: [slurm@25.11]\n").unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(sf_testkit::fixture("spack-v3-unsigned"))
        .arg(env.join("pushed-mirror"))
        .status()
        .unwrap();
    assert!(status.success());
    fs::write(
        env.join("Dockerfile"),
        format!(
            "FROM {BASE_IMAGE}\nRUN mkdir -p /opt/slurm-factory/env /opt/slurm-factory-cache /opt/slurm /home/build \\\n \
             && chmod 1777 /opt/slurm-factory/env /opt/slurm-factory-cache /opt/slurm /home/build\nENV HOME=/home/build\n"
        ),
    )
    .unwrap();
    let fail_line = if fail {
        "echo 'spack install: slurm failed to build' >\"$LOGS/install.log\"; exit 3"
    } else {
        ""
    };
    fs::write(
        env.join("build.sh"),
        format!(
            r#"#!/bin/bash
set -euo pipefail
LOGS=/opt/slurm-factory/env/logs
mkdir -p "$LOGS"
id -u >"$LOGS/uid"
env >"$LOGS/env.txt"
tr '\0' '\n' </proc/1/environ >"$LOGS/pid1-env.txt"
{fail_line}
pkg={install}/linux-ubuntu24.04-x86_64_v3/gcc-13.3.0/slurm-{v}-abcdefgh
mkdir -p "$pkg"
cp -r /opt/slurm-factory/env/payload/. "$pkg/"
mkdir -p /opt/slurm/view /opt/slurm/modules
cp -r "$pkg/." /opt/slurm/view/
cp -r /opt/slurm-factory/env/modules/. /opt/slurm/modules/
cp -r /opt/slurm-factory/env/pushed-mirror/. /opt/slurm-factory/mirror/
echo done >"$LOGS/done.log"
"#,
            v = slurm_full_version(&cell())
        ),
    )
    .unwrap();
    env
}

fn all_text_under(dir: &Path) -> String {
    let mut s = String::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            s.push_str(&all_text_under(&e.path()));
        } else if ft.is_file() {
            s.push_str(&String::from_utf8_lossy(&fs::read(e.path()).unwrap()));
        }
    }
    s
}

const SECRETS: [(&str, &str); 5] = [
    ("GPG_PRIVATE_KEY", "sekrit-key-4711"),
    ("GPG_PASSPHRASE", "sekrit-pass-4712"),
    ("AWS_SECRET_ACCESS_KEY", "sekrit-aws-4713"),
    ("AWS_SESSION_TOKEN", "sekrit-sts-4714"),
    ("GITHUB_TOKEN", "sekrit-gh-4715"),
];

#[test]
fn a_container_build_yields_a_working_tarball_owned_by_the_runner_and_sees_no_secret() {
    base_image();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env_dir(tmp.path(), false);
    let cache = tmp.path().join("cache");
    let cell = write_cell(tmp.path(), &cell());
    let results = tmp.path().join("results");
    let mut b = bin();
    b.args(["build", "--user", "4321:4321", "--cell"])
        .arg(&cell)
        .arg("--env-dir")
        .arg(&env)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--results-dir")
        .arg(&results)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (k, v) in SECRETS {
        b.env(k, v);
    }
    let o = with_engine(&mut b).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let work = PathBuf::from(v["build"]["work_dir"].as_str().unwrap());
    assert!(work.starts_with(cache.join("builds/work")));
    // The install tree went once the run succeeded; everything the run reports stays for the
    // steps after it.
    assert!(v["build"]["install_tree"].is_null(), "{}", v["build"]);
    assert!(!work.join("slurm/software").exists());
    assert!(stderr.contains("removed the install tree"), "{stderr}");
    for key in ["view", "modules", "mirror", "env_dir", "logs", "work_dir"] {
        let p = PathBuf::from(v["build"][key].as_str().unwrap());
        assert!(p.is_dir(), "{key}: {} is gone", p.display());
    }
    let logs = PathBuf::from(v["build"]["logs"].as_str().unwrap());
    assert_eq!(fs::read_to_string(logs.join("uid")).unwrap().trim(), "4321");
    // Everything the container wrote belongs to the uid/gid it ran as.
    for p in [
        work.join("slurm/view/bin/sinfo"),
        work.join("mirror/v3/layout.json"),
        logs.join("done.log"),
    ] {
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 4321), "{}", p.display());
    }
    // The run pushed to its own mirror, which was then merged into the runner's cache with an
    // index that lists its specs.
    assert_eq!(
        v["build"]["mirror"],
        work.join("mirror").display().to_string()
    );
    let run_mirror = sf_spack::Mirror::open(work.join("mirror")).unwrap();
    assert_eq!(run_mirror.spec_manifests().unwrap().len(), 3);
    assert_eq!(v["build"]["cache_merge"]["specs"], 3);
    assert_eq!(v["build"]["cache_merge"]["indexed"], 3);
    let shared = sf_spack::Mirror::open(cache.join("buildcache")).unwrap();
    assert_eq!(shared.spec_manifests().unwrap().len(), 3);
    assert!(shared
        .read_manifest_opt(sf_core::layout::spack::INDEX_MANIFEST)
        .unwrap()
        .is_some());
    // No secret reached the container, its logs, or the image.
    let seen = all_text_under(&work) + &all_text_under(&cache.join("buildcache"));
    let image = v["build"]["image"].as_str().unwrap();
    let inspect = sh(podman().args(["image", "inspect", image]));
    let history = sh(podman().args(["history", "--no-trunc", image]));
    for (k, secret) in SECRETS {
        assert!(!seen.contains(secret), "{k} leaked into the build");
        assert!(
            !inspect.contains(secret) && !history.contains(secret),
            "{k} leaked into the image"
        );
        assert!(!stderr.contains(secret), "{k} printed");
    }
    assert!(fs::read_to_string(logs.join("env.txt"))
        .unwrap()
        .contains("HOME=/home/build"));
    // The tarball was packed from the view and passes the test in a clean container.
    let tarball = PathBuf::from(v["tarball"]["tarball"].as_str().unwrap());
    assert_eq!(
        tarball,
        cache.join("builds/slurm-25.11-noble-software.tar.gz")
    );
    let o = with_engine(
        bin()
            .args(["test", "--quick", "--image", BASE_IMAGE, "--cell"])
            .arg(&cell)
            .arg("--tarball")
            .arg(&tarball),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A second run gets its own work directory and reuses the build image.
    let o = run_build(&cell, &env, &cache, None, &["--no-pack"]);
    assert!(o.status.success());
    let v2: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_ne!(v2["build"]["work_dir"], v["build"]["work_dir"]);
    assert_ne!(v2["build"]["mirror"], v["build"]["mirror"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("reusing the build image"));
    // The same packages again: the cache already has every blob.
    assert_eq!(v2["build"]["cache_merge"]["blobs_added"], 0);
    assert_eq!(v2["build"]["cache_merge"]["indexed"], 3);
    // --remove-image drops the build image after the run. A recipe of its own (so an image of
    // its own): other tests build from the shared one at the same time.
    let mut recipe = fs::read_to_string(env.join("Dockerfile")).unwrap();
    recipe.push_str("LABEL org.slurm-factory.test=remove-image\n");
    fs::write(env.join("Dockerfile"), recipe).unwrap();
    let o = run_build(&cell, &env, &cache, None, &["--no-pack", "--remove-image"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v3: Value = serde_json::from_slice(&o.stdout).unwrap();
    let own_image = v3["build"]["image"].as_str().unwrap();
    assert_ne!(own_image, image);
    let st = podman()
        .args(["image", "exists", own_image])
        .status()
        .unwrap();
    assert_eq!(
        st.code(),
        Some(1),
        "the build image {own_image} is still there"
    );
    let st = podman().args(["image", "exists", image]).status().unwrap();
    assert_eq!(
        st.code(),
        Some(0),
        "the shared build image {image} went too"
    );
}

#[test]
fn remove_image_leaves_an_image_another_build_is_running_on() {
    base_image();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env_dir(tmp.path(), false);
    // A recipe of its own, so an image of its own: other tests share the plain one.
    let mut recipe = fs::read_to_string(env.join("Dockerfile")).unwrap();
    recipe.push_str("LABEL org.slurm-factory.test=remove-image-in-use\n");
    fs::write(env.join("Dockerfile"), recipe).unwrap();
    let cache = tmp.path().join("cache");
    let cell = write_cell(tmp.path(), &cell());
    let build = |extra: &[&str]| {
        let flags: Vec<&str> = ["--no-pack"].iter().chain(extra).copied().collect();
        run_build(&cell, &env, &cache, None, &flags)
    };
    let o = build(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let image = v["build"]["image"].as_str().unwrap().to_string();
    // Another cell's build, still running on that image.
    let other = format!(
        "sf-test-other-cell-{}",
        short_hash(&tmp.path().display().to_string())
    );
    sh(podman()
        .args(["run", "-d", "--name", &other])
        .args([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ])
        .args([&image, "sleep", "600"]));
    let o = build(&["--remove-image"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Not there at all when a forced removal took it.
    let running = podman()
        .args(["inspect", "--format", "{{.State.Running}}", &other])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&running.stdout).into_owned();
    let _ = podman()
        .args(["rm", "--force", "--time", "0", &other])
        .output();
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        running.trim(),
        "true",
        "the other build was stopped: {stderr}"
    );
    assert!(stderr.contains("was not removed"), "{stderr}");
    // --keep keeps the install tree (and the container).
    let o = build(&["--keep"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let tree = PathBuf::from(v["build"]["install_tree"].as_str().unwrap());
    assert!(
        tree.is_dir() && tree.ends_with("slurm/software"),
        "{}",
        tree.display()
    );
    let all = sh(podman().args(["ps", "-a", "--format", "{{.ID}} {{.Image}}"]));
    let kept: Vec<&str> = all
        .lines()
        .filter(|l| l.ends_with(&format!("/{image}")) || l.ends_with(&format!(" {image}")))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(kept.len(), 1, "{all}");
    sh(podman().args(["rm", kept[0]]));
    // Once nothing uses it, --remove-image removes it.
    let o = build(&["--remove-image"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = podman().args(["image", "exists", &image]).status().unwrap();
    assert_eq!(st.code(), Some(1), "the build image {image} is still there");
}

#[test]
fn a_failed_container_build_keeps_a_debug_bundle() {
    base_image();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env_dir(tmp.path(), true);
    let cache = tmp.path().join("cache");
    let cell = write_cell(tmp.path(), &cell());
    let results = tmp.path().join("results");
    let o = run_build(&cell, &env, &cache, Some(&results), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let rec = only_record(&results);
    let bundle = PathBuf::from(rec["error"]["logs"].as_str().unwrap());
    assert!(stderr.contains(&bundle.display().to_string()), "{stderr}");
    assert!(fs::read_to_string(bundle.join("logs/install.log"))
        .unwrap()
        .contains("slurm failed to build"));
    for f in ["spack.yaml", "build.sh", "Dockerfile", "container.log"] {
        assert!(bundle.join(f).is_file(), "{f} missing from the bundle");
    }
    assert!(fs::read_to_string(bundle.join("container.log"))
        .unwrap()
        .contains("exit"));
    // A missing build script is bad input.
    fs::remove_file(env.join("build.sh")).unwrap();
    let o = run_build(&cell, &env, &cache, None, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no build.sh"));
}

/// `sf-build build` of a cell with an environment directory and a host cache on the test's
/// engine; `extra` flags (`--no-pack`, `--remove-image`...) and a results directory if given.
fn run_build(
    cell: &Path,
    env: &Path,
    cache: &Path,
    results: Option<&Path>,
    extra: &[&str],
) -> std::process::Output {
    let mut b = bin();
    b.args(["build", "--cell"])
        .arg(cell)
        .arg("--env-dir")
        .arg(env)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra);
    if let Some(r) = results {
        b.arg("--results-dir").arg(r);
    }
    with_engine(&mut b).output().unwrap()
}

/// The one result record a run wrote into `results`.
fn only_record(results: &Path) -> Value {
    let files: Vec<_> = fs::read_dir(results).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_slice(&fs::read(files[0].as_ref().unwrap().path()).unwrap()).unwrap()
}

#[test]
fn a_view_the_pack_refuses_after_the_build_fails_the_run_and_is_recorded() {
    base_image();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env_dir(tmp.path(), false);
    // The build leaves a symlink in the view that leaves it.
    let mut script = fs::read_to_string(env.join("build.sh")).unwrap();
    script.push_str("ln -s ../../../../etc /opt/slurm/view/etc-escape\n");
    fs::write(env.join("build.sh"), script).unwrap();
    let cache = tmp.path().join("cache");
    let cell = write_cell(tmp.path(), &cell());
    let results = tmp.path().join("results");
    let o = run_build(&cell, &env, &cache, Some(&results), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The build itself ran: a failure of the run (1), recorded with its logs, not bad input.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be packed"), "{stderr}");
    assert!(stderr.contains("escapes the view"), "{stderr}");
    let rec = only_record(&results);
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["error"]["exit_code"], 1);
    assert!(
        rec["error"]["chain"]
            .to_string()
            .contains("escapes the view"),
        "{rec}"
    );
    let logs = PathBuf::from(rec["error"]["logs"].as_str().unwrap());
    assert!(logs.join("done.log").is_file(), "{}", logs.display());
    assert!(!cache
        .join("builds/slurm-25.11-noble-software.tar.gz")
        .exists());
    // A failed run keeps its whole work directory, install tree included, for a look.
    let work = logs.parent().unwrap().parent().unwrap();
    assert!(work.join("slurm/software").is_dir(), "{}", work.display());
    assert!(work
        .join("slurm/view/etc-escape")
        .symlink_metadata()
        .is_ok());
}

/// A local registry (Debian's docker-registry) on a free port, storing under `dir`; a read-only
/// one answers like a registry but refuses every push.
fn start_registry(dir: &Path, read_only: bool) -> (std::process::Child, u16) {
    let registry_bin = require_tool("docker-registry");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n{}http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry").display(),
            if read_only {
                "  maintenance:\n    readonly:\n      enabled: true\n"
            } else {
                ""
            }
        ),
    )
    .unwrap();
    let registry = Command::new(registry_bin)
        .arg("serve")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (registry, port)
}

#[test]
fn the_slurm_image_is_built_with_labels_and_pushed_to_a_local_registry() {
    base_image();
    let tmp = tempfile::tempdir().unwrap();
    let (cell, view, modulefile, prefix) = local_fixture(tmp.path(), false);
    let tarball = tmp.path().join("slurm-25.11-noble-software.tar.gz");
    let packed = pack(tmp.path(), &cell, &view, &modulefile, &prefix, &tarball);

    let (mut registry, port) = start_registry(tmp.path(), false);
    // A namespace with capitals, as `${{ github.repository_owner }}` gives: it is lowercased.
    let given = format!("127.0.0.1:{port}/SF-Test");
    let reg = format!("127.0.0.1:{port}/sf-test");
    // The engine's credentials file, where the login puts the token.
    let auth = tmp.path().join("auth.json");
    let mut b = bin();
    b.args([
        "image",
        "--push",
        "--insecure-registry",
        "--base-image",
        BASE_IMAGE,
        "--revision",
        "0123abc",
        "--cell",
    ])
    .arg(&cell)
    .arg("--tarball")
    .arg(&tarball)
    .arg("--registry")
    .arg(&given)
    .env("SF_REGISTRY_TOKEN", "sekrit-registry-token")
    .env("REGISTRY_AUTH_FILE", &auth);
    let o = with_engine(&mut b).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let listed = Command::new("curl")
        .arg("-fsS")
        .arg(format!(
            "http://127.0.0.1:{port}/v2/sf-test/slurm/tags/list"
        ))
        .output();
    let _ = registry.kill();
    let _ = registry.wait();
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("sekrit-registry-token"));
    // Logged out again: the token does not stay in the credentials file.
    let creds = fs::read_to_string(&auth).unwrap_or_default();
    assert!(!creds.contains(&format!("127.0.0.1:{port}")), "{creds}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let main_tag = format!("{reg}/slurm:25.11-noble");
    // 25.11 on noble is the latest channel on the recommended toolchain: both moving tags, from
    // the support matrix without a flag.
    assert_eq!(
        v["tags"],
        serde_json::json!([
            main_tag,
            format!("{reg}/slurm:25.11"),
            format!("{reg}/slurm:latest")
        ])
    );
    let tags = String::from_utf8_lossy(&listed.unwrap().stdout).into_owned();
    assert!(
        tags.contains("\"25.11-noble\"")
            && tags.contains("\"25.11\"")
            && tags.contains("\"latest\""),
        "{tags}"
    );

    let labels: Value = serde_json::from_str(&sh(podman().args([
        "image",
        "inspect",
        "--format",
        "{{json .Labels}}",
        &main_tag,
    ])))
    .unwrap();
    assert_eq!(
        labels["org.opencontainers.image.version"],
        slurm_full_version(&self::cell())
    );
    assert_eq!(labels["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(labels["io.slurm-factory.toolchain"], "noble");
    assert_eq!(labels["io.slurm-factory.tarball.sha256"], packed["sha256"]);
    assert!(labels["org.opencontainers.image.source"]
        .as_str()
        .unwrap()
        .starts_with("https://github.com/"));
    // Slurm runs in the image, from PATH, without the module.
    let out = sh(podman().args([
        "run",
        "--rm",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=32768:32768",
        &main_tag,
        "sinfo",
        "--version",
    ]));
    assert_eq!(
        out.trim(),
        format!("slurm {}", slurm_full_version(&self::cell()))
    );

    // A push that fails (a read-only registry) logs out too, and fails the step.
    let ro_dir = tmp.path().join("read-only");
    fs::create_dir(&ro_dir).unwrap();
    let (mut ro, ro_port) = start_registry(&ro_dir, true);
    let mut b = bin();
    b.args([
        "image",
        "--push",
        "--insecure-registry",
        "--base-image",
        BASE_IMAGE,
        "--cell",
    ])
    .arg(&cell)
    .arg("--tarball")
    .arg(&tarball)
    .arg("--registry")
    .arg(format!("127.0.0.1:{ro_port}/sf-test"))
    .env("SF_REGISTRY_TOKEN", "sekrit-registry-token")
    .env("REGISTRY_AUTH_FILE", &auth);
    let o = with_engine(&mut b).output().unwrap();
    let _ = ro.kill();
    let _ = ro.wait();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pushing 127.0.0.1:"), "{stderr}");
    let creds = fs::read_to_string(&auth).unwrap_or_default();
    assert!(!creds.contains(&format!("127.0.0.1:{ro_port}")), "{creds}");
    let _ = Command::new("podman")
        .args(podman_args())
        .args([
            "rmi",
            "-f",
            &main_tag,
            &format!("{reg}/slurm:25.11"),
            &format!("{reg}/slurm:latest"),
            &format!("127.0.0.1:{ro_port}/sf-test/slurm:25.11-noble"),
            &format!("127.0.0.1:{ro_port}/sf-test/slurm:25.11"),
            &format!("127.0.0.1:{ro_port}/sf-test/slurm:latest"),
        ])
        .output();
}

// ---------------------------------------------------------------------------------------------
// test-mirror

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A build's environment directory as test-mirror reads it: the lock file and the recipe.
fn env_with_lock(dir: &Path) -> PathBuf {
    let env = dir.join("env");
    fs::create_dir_all(&env).unwrap();
    // The shape Spack v1.0 writes (`_meta.lockfile-version` 6); the container only needs a file.
    fs::write(
        env.join("spack.lock"),
        r#"{"_meta":{"file-type":"spack-lockfile","lockfile-version":6,"specfile-version":5},"spack":{"version":"1.0.2","type":"git","commit":"0"},"roots":[],"concrete_specs":{}}"#,
    )
    .unwrap();
    fs::write(env.join("Dockerfile"), format!("FROM {BASE_IMAGE}\n")).unwrap();
    env
}

#[test]
fn test_mirror_refuses_what_is_not_a_complete_signed_mirror_before_running_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let cell = write_cell(tmp.path(), &cell());
    let env = env_with_lock(tmp.path());
    let results = tmp.path().join("results");
    let signed = tmp.path().join("signed");
    copy_tree(&sf_testkit::fixture("spack-v3-signed"), &signed);
    let broken = tmp.path().join("broken");
    copy_tree(&signed, &broken);
    // greet's tarball blob goes missing.
    let m = sf_spack::Mirror::open(&broken).unwrap();
    let greet = m
        .spec_manifests()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "greet")
        .unwrap();
    let rec = m
        .read_manifest(&greet.key)
        .unwrap()
        .manifest
        .record(sf_spack::manifest::media_type::TARBALL)
        .unwrap()
        .clone();
    fs::remove_file(m.blob_path(&rec).unwrap()).unwrap();
    let keyless = tmp.path().join("keyless");
    copy_tree(&signed, &keyless);
    fs::remove_dir_all(keyless.join("v3/manifests/key")).unwrap();

    let unsigned = sf_testkit::fixture("spack-v3-unsigned");
    let legacy = sf_testkit::fixture("spack-v2-signed");
    let no_lock = tmp.path().join("no-lock");
    fs::create_dir(&no_lock).unwrap();
    let cases: [(&Path, &Path, &str); 6] = [
        (&unsigned, &env, "is not signed: sign the mirror first"),
        (&broken, &env, "is not complete"),
        (&keyless, &env, "publishes no key"),
        (&legacy, &env, "layout-2 mirror"),
        (Path::new("/nonexistent/mirror"), &env, "is not a directory"),
        (&signed, &no_lock, "has no spack.lock"),
    ];
    for (mirror, env_dir, says) in cases {
        // No engine is given: the checks come before one is looked for.
        let o = bin()
            .args(["test-mirror", "--cell"])
            .arg(&cell)
            .arg("--mirror")
            .arg(mirror)
            .arg("--env-dir")
            .arg(env_dir)
            .arg("--results-dir")
            .arg(&results)
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", mirror.display());
        assert!(err.contains(says), "{}: {err}", mirror.display());
    }
    assert!(!results.exists(), "bad input wrote a result record");
}

#[test]
fn test_mirror_runs_its_script_in_a_clean_container_with_the_mirror_mounted() {
    let image = base_image();
    let tmp = tempfile::tempdir().unwrap();
    let cell = write_cell(tmp.path(), &cell());
    let env = env_with_lock(tmp.path());
    let signed = tmp.path().join("signed");
    copy_tree(&sf_testkit::fixture("spack-v3-signed"), &signed);
    let results = tmp.path().join("results");
    let mut b = bin();
    b.args(["test-mirror", "--image", image, "--cell"])
        .arg(&cell)
        .arg("--mirror")
        .arg(&signed)
        .arg("--env-dir")
        .arg(&env)
        .arg("--results-dir")
        .arg(&results);
    for (k, v) in SECRETS {
        b.env(k, v);
    }
    let o = with_engine(&mut b).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The script found the lock file and the mirror's layout.json inside the container, then
    // stopped where a Spack-less image must stop: it says so, and the step fails with its logs kept.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAIL: spack is not on PATH in this image"),
        "{stderr}"
    );
    assert!(stderr.contains("the mirror test of cell"), "{stderr}");
    for (k, secret) in SECRETS {
        assert!(!stderr.contains(secret), "{k} printed");
    }
    let rec: Value = serde_json::from_slice(
        &fs::read(
            fs::read_dir(&results)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["step"], "sf-build test-mirror");
    assert_eq!(rec["status"], "failed");
    let kept = PathBuf::from(rec["error"]["logs"].as_str().unwrap());
    assert!(fs::read_to_string(kept.join("test.log"))
        .unwrap()
        .contains("spack is not on PATH"));
}

// ---------------------------------------------------------------------------------------------
// The engine path: real Docker (the dockerd scripts/test.sh starts, vfs storage).

fn docker() -> Command {
    require_tool("docker");
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", sf_testkit::docker_host());
    c
}

/// The same Debian base image, copied from the Podman test storage into the Docker engine once.
fn docker_base_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        base_image();
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sf-build-podman");
        let script = format!(
            "set -eo pipefail; docker image inspect {BASE_IMAGE} >/dev/null 2>&1 && exit 0; \
             podman {args} save --format docker-archive {BASE_IMAGE} | docker load >/dev/null",
            args = podman_args().join(" "),
        );
        sh(Command::new("flock")
            .arg(root.join("docker-base.lock"))
            .args(["bash", "-c", &script])
            .env("DOCKER_HOST", sf_testkit::docker_host()));
    });
    BASE_IMAGE
}

fn with_docker(b: &mut Bin) -> &mut Bin {
    b.args(["--engine", "docker"])
        .env("DOCKER_HOST", sf_testkit::docker_host())
}

#[test]
fn the_docker_engine_builds_tests_and_ships_the_image_too() {
    let image = docker_base_image();
    let tmp = tempfile::tempdir().unwrap();
    let env = fake_env_dir(tmp.path(), false);
    let cache = tmp.path().join("cache");
    let cell = write_cell(tmp.path(), &cell());

    // The build, as another uid, with secrets in our environment.
    let mut b = bin();
    b.args(["build", "--user", "4321:4321", "--cell"])
        .arg(&cell)
        .arg("--env-dir")
        .arg(&env)
        .arg("--cache-dir")
        .arg(&cache)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (k, v) in SECRETS {
        b.env(k, v);
    }
    let o = with_docker(&mut b).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let work = PathBuf::from(v["build"]["work_dir"].as_str().unwrap());
    let logs = PathBuf::from(v["build"]["logs"].as_str().unwrap());
    assert_eq!(fs::read_to_string(logs.join("uid")).unwrap().trim(), "4321");
    let m = fs::metadata(work.join("mirror/v3/layout.json")).unwrap();
    assert_eq!((m.uid(), m.gid()), (4321, 4321));
    assert_eq!(v["build"]["cache_merge"]["indexed"], 3);
    let build_image = v["build"]["image"].as_str().unwrap();
    let seen = all_text_under(&work);
    let inspect = sh(docker().args(["image", "inspect", build_image]));
    let history = sh(docker().args(["history", "--no-trunc", build_image]));
    for (k, secret) in SECRETS {
        assert!(!seen.contains(secret), "{k} leaked into the build");
        assert!(
            !inspect.contains(secret) && !history.contains(secret),
            "{k} leaked into the image"
        );
    }
    // No container is left behind.
    let left = sh(docker().args(["ps", "-a", "--format", "{{.Names}}"]));
    assert!(!left.contains("sf-build-"), "{left}");

    // The packed tarball passes the test in a clean Docker container; a broken one fails.
    let tarball = PathBuf::from(v["tarball"]["tarball"].as_str().unwrap());
    let o = with_docker(
        bin()
            .args(["test", "--quick", "--image", image, "--cell"])
            .arg(&cell)
            .arg("--tarball")
            .arg(&tarball),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let broken_dir = tmp.path().join("broken");
    fs::create_dir(&broken_dir).unwrap();
    let (bcell, bview, bmod, bprefix) = local_fixture(&broken_dir, true);
    let broken = broken_dir.join("slurm.tar.gz");
    pack(&broken_dir, &bcell, &bview, &bmod, &bprefix, &broken);
    let o = with_docker(
        bin()
            .args(["test", "--quick", "--image", image, "--cell"])
            .arg(&bcell)
            .arg("--tarball")
            .arg(&broken),
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("libslurm.so.1 => not found"), "{stderr}");

    // The Slurm image, built and pushed with Docker, runs sinfo from PATH.
    let (mut registry, port) = start_registry(tmp.path(), false);
    let reg = format!("127.0.0.1:{port}/sf-docker");
    let mut b = bin();
    b.args(["image", "--push", "--base-image", image, "--cell"])
        .arg(&cell)
        .arg("--tarball")
        .arg(&tarball)
        .arg("--registry")
        .arg(&reg)
        .env("SF_REGISTRY_TOKEN", "sekrit-registry-token");
    let o = with_docker(&mut b).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let listed = Command::new("curl")
        .arg("-fsS")
        .arg(format!(
            "http://127.0.0.1:{port}/v2/sf-docker/slurm/tags/list"
        ))
        .output();
    let _ = registry.kill();
    let _ = registry.wait();
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("sekrit-registry-token"));
    let tags = String::from_utf8_lossy(&listed.unwrap().stdout).into_owned();
    assert!(tags.contains("\"25.11-noble\""), "{tags}");
    let main_tag = format!("{reg}/slurm:25.11-noble");
    let out = sh(docker().args(["run", "--rm", &main_tag, "sinfo", "--version"]));
    assert_eq!(
        out.trim(),
        format!("slurm {}", slurm_full_version(&self::cell()))
    );
    let _ = docker()
        .args([
            "rmi",
            "-f",
            &main_tag,
            &format!("{reg}/slurm:25.11"),
            &format!("{reg}/slurm:latest"),
            build_image,
        ])
        .output();
}
