//! The rendered Slurm modulefile under real Lmod (`apt-get install lmod`): each check runs
//! `bash -c 'source .../lmod/init/bash; module use ...; module load ...'` in a child with a clean
//! environment, so nothing here touches this process's environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sf_core::layout::Layout;
use sf_core::matrix::{CellKey, Pipeline, SupportMatrix};
use sf_spackenv::cell::check;
use sf_spackenv::render::modulefile;

const LMOD_INIT: &str = "/usr/share/lmod/lmod/init/bash";

/// A module tree holding the modulefiles of two Slurm versions for noble.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        assert!(Path::new(LMOD_INIT).is_file(), "Lmod is not installed ({LMOD_INIT} is missing): `scripts/test.sh` installs it (scripts/deps/spackenv.apt)");
        let dir = tempfile::tempdir().unwrap();
        let m = SupportMatrix::embedded();
        for v in ["25.11", "24.11"] {
            let key = CellKey {
                pipeline: Pipeline::Tarball,
                slurm_version: Some(m.slurm_version(v).unwrap()),
                toolchain: m.toolchain_name("noble").unwrap(),
                arch: m.arch_name("amd64").unwrap(),
                build: m.build_kind("cpu").unwrap(),
            };
            let cell = check(&m, Layout::default().cell(&m, &key)).unwrap();
            let text = modulefile(&cell).unwrap().unwrap();
            let path = dir
                .path()
                .join("modules/slurm")
                .join(format!("{v}-noble.lua"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Tree { dir }
    }

    fn modules(&self) -> PathBuf {
        self.dir.path().join("modules")
    }

    /// A fake Slurm prefix: bin/sinfo and the usual folders.
    fn prefix(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        for d in ["bin", "sbin", "lib", "share/man"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        let sinfo = p.join("bin/sinfo");
        std::fs::write(&sinfo, "#!/bin/sh\necho slurm 25.11.4\n").unwrap();
        std::fs::set_permissions(&sinfo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        p
    }

    /// Run a shell snippet after initialising Lmod and adding the tree, with `env` set.
    fn run(&self, env: &[(&str, &str)], script: &str) -> Output {
        let full = format!(
            "source {LMOD_INIT}\nmodule use {}\n{script}",
            self.modules().display()
        );
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(full)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

/// stdout, and stderr with whitespace runs collapsed (Lmod wraps its messages to the terminal).
fn text(o: &Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&o.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (String::from_utf8_lossy(&o.stdout).into_owned(), stderr)
}

/// `name=value` lines printed by the snippets below.
fn var(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_string()
}

const PRINT_VARS: &str = r#"
echo "PATH=$PATH"
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
echo "MANPATH=${MANPATH:-}"
echo "SLURM_ROOT=${SLURM_ROOT:-}"
echo "SLURM_CONF=${SLURM_CONF:-}"
"#;

#[test]
fn loading_with_a_prefix_sets_the_environment() {
    let t = Tree::new();
    let prefix = t.prefix("custom/place");
    let p = prefix.display().to_string();
    let out = t.run(
        &[("SLURM_INSTALL_PREFIX", &p)],
        &format!("module load slurm/25.11-noble || exit 9\n{PRINT_VARS}\nsinfo"),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        var(&stdout, "PATH").split(':').next(),
        Some(format!("{p}/bin").as_str()),
        "{stdout}"
    );
    assert!(
        var(&stdout, "PATH")
            .split(':')
            .any(|d| d == format!("{p}/sbin")),
        "{stdout}"
    );
    assert_eq!(
        var(&stdout, "LD_LIBRARY_PATH").split(':').next(),
        Some(format!("{p}/lib").as_str()),
        "{stdout}"
    );
    assert!(
        var(&stdout, "MANPATH")
            .split(':')
            .any(|d| d == format!("{p}/share/man")),
        "{stdout}"
    );
    assert_eq!(var(&stdout, "SLURM_ROOT"), p);
    assert_eq!(var(&stdout, "SLURM_CONF"), "/etc/slurm/slurm.conf");
    assert!(
        stdout.contains("slurm 25.11.4"),
        "the prefix's sinfo runs from PATH: {stdout}"
    );
}

#[test]
fn an_existing_slurm_conf_is_kept_and_unload_restores_everything() {
    let t = Tree::new();
    let p = t.prefix("pfx").display().to_string();
    let script = format!(
        "before=$PATH\nmodule load slurm/25.11-noble || exit 9\necho \"LOADED_CONF=$SLURM_CONF\"\nmodule unload slurm/25.11-noble\n\
         {PRINT_VARS}\n[ \"$PATH\" = \"$before\" ] && echo PATH_RESTORED"
    );
    let out = t.run(
        &[
            ("SLURM_INSTALL_PREFIX", &p),
            ("SLURM_CONF", "/srv/site/slurm.conf"),
        ],
        &script,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(var(&stdout, "LOADED_CONF"), "/srv/site/slurm.conf");
    assert_eq!(
        var(&stdout, "SLURM_CONF"),
        "/srv/site/slurm.conf",
        "restored after unload"
    );
    assert_eq!(var(&stdout, "SLURM_ROOT"), "");
    assert!(stdout.contains("PATH_RESTORED"), "{stdout}");
}

#[test]
fn without_the_variable_the_fallback_prefix_is_used() {
    let t = Tree::new();
    let out = t.run(&[], "module show slurm/25.11-noble 2>&1\nmodule load slurm/25.11-noble; echo \"LOAD_STATUS=$?\"");
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("\"SLURM_ROOT\",\"/opt/slurm/view\""),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("/opt/slurm/view/bin"), "{stdout}");
    // Nothing is installed at the fallback here, so loading must refuse, naming it.
    assert_ne!(var(&stdout, "LOAD_STATUS"), "0", "{stdout}\n{stderr}");
    assert!(
        stderr.contains("/opt/slurm/view holds no Slurm"),
        "{stderr}"
    );
}

#[test]
fn an_empty_prefix_is_an_lmod_error() {
    let t = Tree::new();
    let empty = t.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = empty.display().to_string();
    let out = t.run(
        &[("SLURM_INSTALL_PREFIX", &e)],
        &format!("module load slurm/25.11-noble; echo \"LOAD_STATUS=$?\"\n{PRINT_VARS}"),
    );
    let (stdout, stderr) = text(&out);
    assert_ne!(var(&stdout, "LOAD_STATUS"), "0");
    assert!(
        stderr.contains("Lmod has detected the following error"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{e} holds no Slurm")), "{stderr}");
    assert_eq!(
        var(&stdout, "SLURM_ROOT"),
        "",
        "a failed load changes nothing"
    );

    let out = t.run(
        &[("SLURM_INSTALL_PREFIX", "")],
        "module load slurm/25.11-noble; echo \"LOAD_STATUS=$?\"",
    );
    let (stdout, stderr) = text(&out);
    assert_ne!(var(&stdout, "LOAD_STATUS"), "0");
    assert!(
        stderr.contains("SLURM_INSTALL_PREFIX is set but empty"),
        "{stderr}"
    );
}

/// What `module -t list` prints after the `LIST` line (the snippets send it to stdout), so
/// module names quoted in Lmod's messages are not mistaken for loaded modules.
fn loaded(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip_while(|l| *l != "LIST")
        .map(str::trim)
        .filter(|l| l.starts_with("slurm/") || l.starts_with("site-slurm/"))
        .map(str::to_string)
        .collect()
}

/// Print the loaded modules for [`loaded`].
const LIST: &str = "echo LIST\nmodule -t list 2>&1";

/// A second module tree, as a site might have, with its own Slurm module under another name that
/// declares the same Lmod family. Lmod only keeps one of them loaded if our modulefile declares the
/// family too: a `conflict("slurm")` alone names modules called `slurm`, not `site-slurm`.
fn site_tree(t: &Tree) -> PathBuf {
    let dir = t.dir.path().join("site-modules");
    std::fs::create_dir_all(dir.join("site-slurm")).unwrap();
    std::fs::write(
        dir.join("site-slurm/1.0.lua"),
        "family(\"slurm\")\nsetenv(\"SITE_SLURM\", \"1\")\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_site_slurm_module_of_another_name_is_swapped_out() {
    let t = Tree::new();
    let p = t.prefix("pfx").display().to_string();
    let site = site_tree(&t).display().to_string();
    // Ours after the site's, then the site's after ours: Lmod swaps the family member each time.
    for (first, second) in [
        ("site-slurm/1.0", "slurm/25.11-noble"),
        ("slurm/25.11-noble", "site-slurm/1.0"),
    ] {
        let out = t.run(
            &[("SLURM_INSTALL_PREFIX", &p)],
            &format!(
                "module use {site}\nmodule load {first} || exit 9\nmodule load {second} || exit 8\n\
                 {LIST}\necho \"SLURM_ROOT=${{SLURM_ROOT:-}}\""
            ),
        );
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "{first} then {second}: {stdout}\n{stderr}"
        );
        assert_eq!(
            loaded(&out),
            vec![second],
            "{first} then {second}: {stdout}\n{stderr}"
        );
        let want_root = if second.starts_with("slurm/") {
            p.as_str()
        } else {
            ""
        };
        assert_eq!(var(&stdout, "SLURM_ROOT"), want_root, "{stdout}");
    }
}

#[test]
fn without_auto_swap_a_second_slurm_family_module_is_refused() {
    let t = Tree::new();
    let p = t.prefix("pfx").display().to_string();
    let site = site_tree(&t).display().to_string();
    let out = t.run(
        &[("SLURM_INSTALL_PREFIX", &p), ("LMOD_AUTO_SWAP", "no")],
        &format!(
            "module use {site}\nmodule load site-slurm/1.0 || exit 9\n\
             module load slurm/25.11-noble; echo \"LOAD_STATUS=$?\"\n{LIST}"
        ),
    );
    let (stdout, stderr) = text(&out);
    assert_ne!(var(&stdout, "LOAD_STATUS"), "0", "{stdout}\n{stderr}");
    assert!(
        stderr.contains("You can only have one slurm module loaded at a time"),
        "{stderr}"
    );
    assert_eq!(loaded(&out), vec!["site-slurm/1.0"], "{stdout}\n{stderr}");
}

/// Two versions of our own module: Lmod swaps same-name modules by itself, so this holds with or
/// without the family line; the tests above are the ones that need it.
#[test]
fn only_one_slurm_is_loaded_at_a_time() {
    let t = Tree::new();
    let p = t.prefix("pfx").display().to_string();
    let out = t.run(
        &[("SLURM_INSTALL_PREFIX", &p)],
        &format!("module load slurm/25.11-noble || exit 9\nmodule load slurm/24.11-noble\n{LIST}"),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(
        loaded(&out),
        vec!["slurm/24.11-noble"],
        "{stdout}\n{stderr}"
    );
}
