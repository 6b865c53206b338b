//! The rendered recipes pass the real linters: every distinct Dockerfile passes `hadolint` with the
//! repository's `.hadolint.yaml`, every build script passes `shellcheck`, every modulefile passes
//! `luac -p`, and no modulefile holds Jinja syntax (Spack renders it as a template).

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use sf_spackenv::plan::FileKind;
use sf_testkit::{repo_root, require_tool};
use support::snapshots::{snapshot_cells, snapshot_files};

/// Distinct files of one kind across the snapshot cells, keyed by content, with a cell that has it.
fn distinct(kind: FileKind) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    for cell in snapshot_cells() {
        for f in snapshot_files(&cell) {
            if f.kind == kind {
                out.entry(f.bytes).or_insert_with(|| cell.id().to_string());
            }
        }
    }
    out
}

/// Run `tool args... FILE` on each file; collect the failures with their output.
fn lint_each(tool: &str, args: &[&str], kind: FileKind, suffix: &str) -> usize {
    let bin = require_tool(tool);
    let dir = tempfile::tempdir().unwrap();
    let files = distinct(kind);
    let mut failures = Vec::new();
    for (i, (bytes, cell)) in files.iter().enumerate() {
        let path = dir.path().join(format!("{i}-{cell}{suffix}"));
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new(&bin)
            .args(args)
            .arg(&path)
            .current_dir(repo_root())
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{cell}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{tool} failed:\n{}",
        failures.join("\n")
    );
    files.len()
}

#[test]
fn dockerfiles_pass_hadolint() {
    let config = repo_root().join(".hadolint.yaml");
    let n = lint_each(
        "hadolint",
        &["--no-color", "--config", config.to_str().unwrap()],
        FileKind::Dockerfile,
        ".Dockerfile",
    );
    // One recipe per toolchain in the snapshot cells (the six defaults and focal).
    assert_eq!(n, 7);
}

#[test]
fn hadolint_config_gives_a_reason_for_every_ignored_rule() {
    let text = std::fs::read_to_string(repo_root().join(".hadolint.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        if let Some(rule) = line.trim().strip_prefix("- DL") {
            rules += 1;
            assert!(
                i > 0 && lines[i - 1].trim().starts_with('#'),
                "ignored rule DL{rule} has no reason above it"
            );
        }
    }
    assert!(rules > 0);
}

#[test]
fn build_scripts_pass_shellcheck() {
    let n = lint_each(
        "shellcheck",
        &["--shell=bash", "--severity=style"],
        FileKind::BuildScript,
        ".sh",
    );
    assert!(n >= 2, "deps and Slurm cells give different scripts");
}

#[test]
fn modulefiles_pass_luac_and_hold_no_jinja() {
    let luac = if which("luac5.3") { "luac5.3" } else { "luac" };
    let n = lint_each(luac, &["-p"], FileKind::Modulefile, ".lua");
    assert!(n >= 18);
    for bytes in distinct(FileKind::Modulefile).keys() {
        let text = String::from_utf8_lossy(bytes);
        for jinja in ["{{", "{%", "{#"] {
            assert!(!text.contains(jinja), "a modulefile holds {jinja}");
        }
    }
}

fn which(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}

#[test]
fn no_secret_reaches_the_image_or_the_build() {
    for (bytes, cell) in distinct(FileKind::Dockerfile) {
        let text = String::from_utf8(bytes).unwrap();
        for line in text.lines().map(str::trim) {
            assert!(
                !line.starts_with("ARG "),
                "{cell}: the build image takes no build arguments: {line}"
            );
            for word in [
                "type=secret",
                "GPG",
                "AWS_",
                "TOKEN",
                "PASSPHRASE",
                "PRIVATE",
            ] {
                assert!(
                    !line.to_uppercase().contains(&word.to_uppercase()),
                    "{cell}: {line}"
                );
            }
        }
    }
    for (bytes, cell) in distinct(FileKind::BuildScript) {
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("buildcache push --unsigned"),
            "{cell} pushes unsigned"
        );
        for word in ["gpg ", "GPG_", "AWS_", "--key"] {
            assert!(!text.contains(word), "{cell}: {word}");
        }
    }
}
