//! Air-gapped build inputs: local archives of Spack and of the package repositories, and Python
//! wheels for Spack's solver, checked here and put into the build context (`inputs/` next to the
//! Dockerfile), where the image takes them instead of cloning GitHub or asking the package index.
//!
//! Everything is checked before anything is written, so a wrong input is bad input (exit 2) that
//! names the input and what was expected: the sha256 given beside the archive, one top folder,
//! Spack of the pinned release, a repository of the pinned namespace where the stack says it is.
//! The Dockerfile checks each archive's sha256 again when it unpacks it.

use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sf_core::bad_input;
use sha2::{Digest, Sha256};

use crate::stack::{LocalArchive, RepoPin, Stack};

/// Where the inputs are in the build context, and (under [`CONTEXT_MOUNT`]) in the image build.
pub const INPUTS_DIR: &str = "inputs";
/// Where the Dockerfile copies the build context's `inputs/` to while it builds.
pub const CONTEXT_MOUNT: &str = "/tmp/sf-inputs";

/// One file of the build context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedInput {
    /// Relative to the output directory (`inputs/...`).
    pub rel_path: String,
    pub bytes: Vec<u8>,
}

/// The archive's name in the build context.
pub fn spack_archive_name() -> String {
    format!("{INPUTS_DIR}/spack.tar.gz")
}

/// The archive's name in the build context.
pub fn repo_archive_name(repo: &RepoPin) -> String {
    format!("{INPUTS_DIR}/repo-{}.tar.gz", repo.namespace)
}

/// The wheels' folder in the build context.
pub fn wheels_dir() -> String {
    format!("{INPUTS_DIR}/wheels")
}

/// What an archive must hold, besides its sha256.
enum Expect<'a> {
    /// Spack of this version: `bin/spack` and `lib/spack/spack/__init__.py` saying so.
    Spack { version: &'a str },
    /// A package repository of this namespace at `path` (its `repo.yaml`).
    Repo { namespace: &'a str, path: &'a str },
}

fn read_checked(what: &str, a: &LocalArchive) -> Result<Vec<u8>> {
    let bytes = fs::read(&a.file).map_err(|e| {
        bad_input(format!(
            "{what}: cannot read the archive {}: {e}",
            a.file.display()
        ))
    })?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != a.sha256.as_str() {
        return Err(bad_input(format!(
            "{what}: the archive {} has sha256 {got}, expected {} (the sha256 given beside it)",
            a.file.display(),
            a.sha256
        )));
    }
    Ok(bytes)
}

/// Walk the archive once: one top folder, and what `expect` asks for inside it.
fn check_contents(what: &str, file: &Path, bytes: &[u8], expect: &Expect) -> Result<()> {
    let not_archive = |e: std::io::Error| {
        bad_input(format!(
            "{what}: {} is not a gzip-compressed tar archive ({e})",
            file.display()
        ))
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut top: Option<String> = None;
    let mut found: Option<String> = None;
    let wanted = match expect {
        Expect::Spack { .. } => "lib/spack/spack/__init__.py".to_string(),
        Expect::Repo { path, .. } => format!("{path}/repo.yaml"),
    };
    let mut has_bin_spack = false;
    for entry in archive.entries().map_err(not_archive)? {
        let mut entry = entry.map_err(not_archive)?;
        let path = entry.path().map_err(not_archive)?.into_owned();
        let text = path.to_string_lossy().into_owned();
        if text == "pax_global_header" {
            continue; // git archive's commit id record
        }
        let mut parts = text.splitn(2, '/');
        let first = parts.next().unwrap_or_default().to_string();
        let rest = parts.next().unwrap_or_default().trim_end_matches('/');
        match &top {
            None => top = Some(first.clone()),
            Some(t) if *t != first => {
                return Err(bad_input(format!(
                    "{what}: {} holds more than one top folder ({t}/ and {first}/); expected the tree of one commit under one folder, as `git archive --prefix=NAME/` writes it",
                    file.display()
                )))
            }
            Some(_) => {}
        }
        if rest == "bin/spack" {
            has_bin_spack = true;
        }
        if rest == wanted {
            let mut s = String::new();
            entry.read_to_string(&mut s).map_err(not_archive)?;
            found = Some(s);
        }
    }
    let top = top.unwrap_or_default();
    match expect {
        Expect::Spack { version } => {
            let declared = found.as_deref().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("__version__ = "))
                    .map(|v| v.trim().trim_matches('"').to_string())
            });
            match declared {
                Some(v) if v == *version && has_bin_spack => Ok(()),
                Some(v) if has_bin_spack => Err(bad_input(format!(
                    "{what}: {} is Spack {v}; the stack pins Spack {version}",
                    file.display()
                ))),
                _ => Err(bad_input(format!(
                    "{what}: {} holds no Spack ({top}/bin/spack and {top}/{wanted} expected)",
                    file.display()
                ))),
            }
        }
        Expect::Repo { namespace, path } => {
            let Some(text) = found else {
                return Err(bad_input(format!(
                    "{what}: {} has no package repository at {top}/{path} (no repo.yaml there); the stack's repos entry names that path",
                    file.display()
                )));
            };
            let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
            let got = doc["repo"]["namespace"].as_str().unwrap_or("(none)");
            if got == *namespace {
                Ok(())
            } else {
                Err(bad_input(format!(
                    "{what}: the repository at {top}/{path} in {} has namespace {got}, expected {namespace}",
                    file.display()
                )))
            }
        }
    }
}

fn wheels(dir: &Path) -> Result<Vec<StagedInput>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| {
        bad_input(format!(
            "python wheels: cannot read the directory {}: {e}",
            dir.display()
        ))
    })?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".whl") || !entry.file_type()?.is_file() {
            continue;
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
        {
            return Err(bad_input(format!(
                "python wheels: {name:?} in {} is not a wheel file name",
                dir.display()
            )));
        }
        let bytes = fs::read(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.push(StagedInput {
            rel_path: format!("{}/{name}", wheels_dir()),
            bytes,
        });
    }
    out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    if !out.iter().any(|w| {
        w.rel_path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .starts_with("clingo-")
    }) {
        return Err(bad_input(format!(
            "python wheels: {} holds no clingo wheel (Spack's solver); fill it with `pip download --dest DIR clingo` for the image's Python",
            dir.display()
        )));
    }
    Ok(out)
}

/// Check every local input the stack names and return the files of the build context, in a
/// fixed order (the same inputs give the same bytes).
pub fn stage(stack: &Stack) -> Result<Vec<StagedInput>> {
    let mut out = Vec::new();
    if let Some(a) = &stack.spack.archive {
        let bytes = read_checked("spack", a)?;
        check_contents(
            "spack",
            &a.file,
            &bytes,
            &Expect::Spack {
                version: stack.spack.version(),
            },
        )?;
        out.push(StagedInput {
            rel_path: spack_archive_name(),
            bytes,
        });
    }
    for r in &stack.repos {
        if let Some(a) = &r.archive {
            let what = format!("repo {}", r.namespace);
            let bytes = read_checked(&what, a)?;
            check_contents(
                &what,
                &a.file,
                &bytes,
                &Expect::Repo {
                    namespace: &r.namespace,
                    path: &r.path,
                },
            )?;
            out.push(StagedInput {
                rel_path: repo_archive_name(r),
                bytes,
            });
        }
    }
    if let Some(dir) = &stack.python_wheels {
        out.extend(wheels(dir)?);
    }
    if let Some(dir) = stack.local_source_mirror() {
        if !dir.is_dir() {
            return Err(bad_input(format!(
                "source_mirror: {} is not a directory (a local source mirror in `spack mirror create` layout was expected)",
                dir.display()
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::LocalInputArgs;
    use sf_core::exit::code_for;
    use std::path::PathBuf;

    /// A .tar.gz holding `files` under `top/`.
    fn archive(dir: &Path, name: &str, top: &str, files: &[(&str, &str)]) -> (PathBuf, String) {
        let path = dir.join(name);
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (rel, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{top}/{rel}"), text.as_bytes())
                .unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        let sha = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
        (path, sha)
    }

    const SPACK_INIT: &str = "__version__ = \"1.0.2\"\nspack_version = __version__\n";

    fn spack_files(version_file: &str) -> Vec<(&'static str, String)> {
        vec![
            ("bin/spack", "#!/bin/sh\n".to_string()),
            ("lib/spack/spack/__init__.py", version_file.to_string()),
        ]
    }

    fn with(args: LocalInputArgs) -> Result<Vec<StagedInput>> {
        stage(&args.apply(Stack::embedded())?)
    }

    fn args(pairs: &[(&str, &Path, &str)]) -> LocalInputArgs {
        LocalInputArgs {
            archives: pairs
                .iter()
                .map(|(n, p, _)| format!("{n}={}", p.display()))
                .collect(),
            archive_sha256s: pairs.iter().map(|(n, _, s)| format!("{n}={s}")).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn good_archives_are_staged_in_a_fixed_order() {
        let d = tempfile::tempdir().unwrap();
        let files = spack_files(SPACK_INIT);
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let (spack, s1) = archive(d.path(), "spack.tar.gz", "spack", &refs);
        let (repo, s2) = archive(
            d.path(),
            "b.tar.gz",
            "spack-packages",
            &[(
                "repos/spack_repo/builtin/repo.yaml",
                "repo:\n  namespace: builtin\n  api: v2.2\n",
            )],
        );
        let staged = with(args(&[("builtin", &repo, &s2), ("spack", &spack, &s1)])).unwrap();
        let names: Vec<&str> = staged.iter().map(|s| s.rel_path.as_str()).collect();
        assert_eq!(names, ["inputs/spack.tar.gz", "inputs/repo-builtin.tar.gz"]);
        assert_eq!(staged[0].bytes, fs::read(&spack).unwrap());
    }

    #[test]
    fn wrong_archives_are_bad_input_naming_what_was_expected() {
        let d = tempfile::tempdir().unwrap();
        let files = spack_files(SPACK_INIT);
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let (spack, sha) = archive(d.path(), "spack.tar.gz", "spack", &refs);
        let other = "0".repeat(64);

        let cases: Vec<(LocalInputArgs, &str)> = vec![
            (
                args(&[("spack", &spack, &other)]),
                "expected 0000000000000000000000000000000000000000000000000000000000000000",
            ),
            (
                LocalInputArgs {
                    archives: vec![format!("spack={}", spack.display())],
                    ..Default::default()
                },
                "give --archive-sha256 spack=HEX",
            ),
            (
                args(&[("spock", &spack, &sha)]),
                "valid: spack, slurm_factory, builtin",
            ),
            (
                args(&[("builtin", &spack, &sha)]),
                "no package repository at spack/repos/spack_repo/builtin",
            ),
        ];
        for (a, expected) in cases {
            let e = with(a).unwrap_err();
            assert_eq!(code_for(&e), 2, "{e:#}");
            assert!(format!("{e:#}").contains(expected), "{e:#}");
        }

        let old = spack_files("__version__ = \"0.23.1\"\n");
        let refs: Vec<(&str, &str)> = old.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let (old, sha) = archive(d.path(), "old.tar.gz", "spack", &refs);
        let e = with(args(&[("spack", &old, &sha)])).unwrap_err();
        assert!(
            format!("{e:#}").contains("is Spack 0.23.1; the stack pins Spack 1.0.2"),
            "{e:#}"
        );

        let (none, sha) = archive(d.path(), "none.tar.gz", "x", &[("README", "hi\n")]);
        let e = with(args(&[("spack", &none, &sha)])).unwrap_err();
        assert!(format!("{e:#}").contains("holds no Spack"), "{e:#}");

        let (repo, sha) = archive(
            d.path(),
            "r.tar.gz",
            "r",
            &[(
                "spack_repo/slurm_factory/repo.yaml",
                "repo:\n  namespace: someone_else\n",
            )],
        );
        let e = with(args(&[("slurm_factory", &repo, &sha)])).unwrap_err();
        assert!(
            format!("{e:#}").contains("has namespace someone_else, expected slurm_factory"),
            "{e:#}"
        );

        let two = d.path().join("two.tar.gz");
        let (a, _) = archive(d.path(), "a.tar.gz", "a", &refs);
        fs::copy(&a, &two).unwrap();
        let mut bytes = fs::read(&a).unwrap();
        bytes.truncate(bytes.len() / 2);
        fs::write(&two, &bytes).unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        let e = with(args(&[("spack", &two, &sha)])).unwrap_err();
        assert_eq!(code_for(&e), 2);
        assert!(
            format!("{e:#}").contains("not a gzip-compressed tar"),
            "{e:#}"
        );
    }

    #[test]
    fn wheels_need_clingo_and_a_source_mirror_must_exist() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("cffi-2.0-py3-none-any.whl"), b"w").unwrap();
        let a = LocalInputArgs {
            python_wheels: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let e = with(a).unwrap_err();
        assert!(format!("{e:#}").contains("holds no clingo wheel"), "{e:#}");
        fs::write(d.path().join("clingo-5.8.3-cp311-cp311-x.whl"), b"c").unwrap();
        let a = LocalInputArgs {
            python_wheels: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let staged = with(a).unwrap();
        assert_eq!(staged.len(), 2);
        assert!(staged[0].rel_path.starts_with("inputs/wheels/cffi-"));

        let a = LocalInputArgs {
            source_mirror: Some(d.path().join("missing").display().to_string()),
            ..Default::default()
        };
        let e = with(a).unwrap_err();
        assert_eq!(code_for(&e), 2);
        assert!(format!("{e:#}").contains("is not a directory"), "{e:#}");
    }
}
