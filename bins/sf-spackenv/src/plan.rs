//! The plan for one cell: every file sf-spackenv would write, rendered in memory first. `--dry-run`
//! prints it, `--print` picks one file from it, and [`Plan::write`] puts all of it on disk.
//!
//! Writing is all or nothing: each file goes to a temporary file beside its destination, and only
//! when every one of them is complete are they renamed into place, each replaced file kept aside
//! until the whole write (and whatever the caller announces about it) has succeeded. If anything
//! fails, the output directory is put back as it was: no new, partial or temporary files, the
//! files it held restored, and the directories this run created removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sf_core::exit::ResultExt;
use sf_core::fsutil::{AtomicFile, Undoable};
use sha2::{Digest, Sha256};

use crate::cell::CheckedCell;
use crate::inputs;
use crate::render;
use crate::spack_yaml;
use crate::stack::Stack;

/// The kinds of file a cell gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum FileKind {
    /// The Spack environment.
    #[value(name = "spack.yaml")]
    #[serde(rename = "spack.yaml")]
    SpackYaml,
    /// The build image's recipe.
    #[value(name = "dockerfile")]
    #[serde(rename = "dockerfile")]
    Dockerfile,
    /// The script the build container runs.
    #[value(name = "build-script")]
    #[serde(rename = "build-script")]
    BuildScript,
    /// The relocatable Slurm modulefile (not for deps cells).
    #[value(name = "modulefile")]
    #[serde(rename = "modulefile")]
    Modulefile,
    /// An air-gapped input of the image build (a local archive or wheel), under `inputs/`.
    #[value(name = "input")]
    #[serde(rename = "input")]
    Input,
    /// The host inputs sf-build mounts (a local source mirror): `local-inputs.json`.
    #[value(name = "local-inputs")]
    #[serde(rename = "local-inputs")]
    LocalInputs,
}

impl FileKind {
    /// The name `--print` takes and the JSON/record use.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::SpackYaml => "spack.yaml",
            FileKind::Dockerfile => "dockerfile",
            FileKind::BuildScript => "build-script",
            FileKind::Modulefile => "modulefile",
            FileKind::Input => "input",
            FileKind::LocalInputs => "local-inputs",
        }
    }

    /// The `GITHUB_OUTPUT` name of the file's path.
    pub fn output_name(self) -> &'static str {
        match self {
            FileKind::SpackYaml => "spack_yaml",
            FileKind::Dockerfile => "dockerfile",
            FileKind::BuildScript => "build_script",
            FileKind::Modulefile => "modulefile",
            FileKind::Input => "inputs_dir",
            FileKind::LocalInputs => "local_inputs",
        }
    }
}

/// One file of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    pub kind: FileKind,
    /// Path relative to the output directory.
    pub rel_path: String,
    pub bytes: Vec<u8>,
    /// Written with mode 0755.
    pub executable: bool,
}

impl PlannedFile {
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }
}

/// Every file for one cell.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cell: CheckedCell,
    pub files: Vec<PlannedFile>,
}

/// What shapes the files besides the cell and the data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Parallel build jobs: spack.yaml's `config:build_jobs` and the build script's default.
    pub build_jobs: u32,
}

impl Options {
    /// The cores of the machine this runs on (1 when they cannot be told).
    pub fn this_machines_cores() -> u32 {
        std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1)
    }
}

/// Render every file of a cell.
pub fn plan(cell: &CheckedCell, stack: &Stack, options: &Options) -> Result<Plan> {
    let mut files = vec![
        PlannedFile {
            kind: FileKind::SpackYaml,
            rel_path: "spack.yaml".into(),
            bytes: spack_yaml::render(cell, stack, options).into_bytes(),
            executable: false,
        },
        PlannedFile {
            kind: FileKind::Dockerfile,
            rel_path: "Dockerfile".into(),
            bytes: render::dockerfile(cell, stack)?.into_bytes(),
            executable: false,
        },
        PlannedFile {
            kind: FileKind::BuildScript,
            rel_path: "build.sh".into(),
            bytes: render::build_script(cell, options)?.into_bytes(),
            executable: true,
        },
    ];
    if let (Some(text), Some(path)) = (render::modulefile(cell)?, render::modulefile_path(cell)) {
        files.push(PlannedFile {
            kind: FileKind::Modulefile,
            rel_path: path,
            bytes: text.into_bytes(),
            executable: false,
        });
    }
    for input in inputs::stage(stack)? {
        files.push(PlannedFile {
            kind: FileKind::Input,
            rel_path: input.rel_path,
            bytes: input.bytes,
            executable: false,
        });
    }
    if let Some(dir) = stack.local_source_mirror() {
        let local = sf_core::container::LocalInputs {
            source_mirror: Some(dir),
        };
        let mut bytes = serde_json::to_vec_pretty(&local).expect("serialises");
        bytes.push(b'\n');
        files.push(PlannedFile {
            kind: FileKind::LocalInputs,
            rel_path: sf_core::container::LOCAL_INPUTS_FILE.into(),
            bytes,
            executable: false,
        });
    }
    Ok(Plan {
        cell: cell.clone(),
        files,
    })
}

/// Directories created by this run, removed again (deepest first) if the run fails.
#[derive(Default)]
struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// `create_dir_all`, remembering which directories did not exist before.
    fn create(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d)?;
            self.0.push(d);
        }
        Ok(())
    }

    fn remove_all(&mut self) {
        for d in self.0.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Every file of one write. Until [`Batch::finish`], dropping it puts the output directory back
/// as it was: placed files undone (previous ones restored, new ones removed), temporary files and
/// created directories gone.
#[derive(Default)]
struct Batch {
    /// Complete, not visible yet.
    staged: Vec<AtomicFile>,
    /// In place, in plan order, each keeping the file it replaced until the write is decided.
    placed: Vec<Undoable>,
    dirs: CreatedDirs,
}

impl Batch {
    /// Put every staged file in place; on the first failure, stop (dropping the batch undoes the
    /// ones placed so far). A destination the user can fix (a directory in the way, no
    /// permission) is bad input; anything else (a failing disk) is a failure of the work.
    fn place(&mut self, out: &Path) -> Result<()> {
        for f in std::mem::take(&mut self.staged) {
            let dest = f.dest().to_path_buf();
            match f.commit_undoable() {
                Ok(placed) => self.placed.push(placed),
                Err(e) => {
                    let what = format!(
                        "--out {}: cannot put {} in place",
                        out.display(),
                        dest.display()
                    );
                    return if user_can_fix(&e) {
                        Err(e).bad_input(what)
                    } else {
                        Err(anyhow::Error::new(e).context(what))
                    };
                }
            }
        }
        Ok(())
    }

    /// Keep the new files: drop the replaced ones and forget the created directories. A
    /// replaced file that stays behind is a warning: the new files are all in place.
    fn finish(mut self) {
        for f in self.placed.drain(..) {
            if let Err(e) = f.keep() {
                sf_core::gha::Actions::from_env().warning(&format!("sf-spackenv: {e}"), None);
            }
        }
        self.dirs.0.clear();
    }
}

/// Errors that come from what is at `--out` rather than from the machine.
fn user_can_fix(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::IsADirectory
            | K::NotADirectory
            | K::DirectoryNotEmpty
            | K::PermissionDenied
            | K::ReadOnlyFilesystem
    )
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Latest first, then the temporary files, then the (by now empty) directories.
        while let Some(f) = self.placed.pop() {
            if let Err(e) = f.undo() {
                // The run's error goes out as usual; this says where a replaced file was left.
                sf_core::gha::Actions::from_env().warning(&format!("sf-spackenv: {e}"), None);
            }
        }
        self.staged.clear();
        self.dirs.remove_all();
    }
}

impl Plan {
    pub fn file(&self, kind: FileKind) -> Option<&PlannedFile> {
        self.files.iter().find(|f| f.kind == kind)
    }

    /// Write every file under `out`, all or nothing. Returns the written paths, in plan order.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        self.write_then(out, |_| Ok(()))
    }

    /// Write every file under `out`, then run `announce` with their paths (in plan order) while
    /// the write can still be undone: if any file cannot be put in place, or `announce` fails,
    /// the output directory is left exactly as it was and the error is returned.
    pub fn write_then(
        &self,
        out: &Path,
        announce: impl FnOnce(&[PathBuf]) -> Result<()>,
    ) -> Result<Vec<PathBuf>> {
        let mut batch = Batch::default();
        self.stage(out, &mut batch)?;
        batch.place(out)?;
        let written: Vec<PathBuf> = batch
            .placed
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect();
        announce(&written)?;
        batch.finish();
        Ok(written)
    }

    /// Create the directories and complete temporary files; nothing is visible yet.
    fn stage(&self, out: &Path, batch: &mut Batch) -> Result<()> {
        let unwritable = |what: &str| format!("--out {}: cannot write {what}", out.display());
        batch
            .dirs
            .create(out)
            .bad_input(unwritable("the directory"))?;
        for file in &self.files {
            let dest = out.join(&file.rel_path);
            if let Some(parent) = dest.parent() {
                batch
                    .dirs
                    .create(parent)
                    .bad_input(unwritable(&file.rel_path))?;
            }
            let mode = if file.executable { 0o755 } else { 0o644 };
            let mut tmp =
                AtomicFile::create_with_mode(&dest, mode).bad_input(unwritable(&file.rel_path))?;
            tmp.write_all(&file.bytes)
                .with_context(|| format!("writing {}", dest.display()))?;
            #[cfg(unix)]
            if file.executable {
                // The umask may have taken bits off at creation.
                tmp.set_mode(0o755)
                    .with_context(|| format!("making {} executable", dest.display()))?;
            }
            // Flushed here, once: every file is on disk before any is put in place, and placing
            // does not flush again.
            tmp.sync_all()
                .with_context(|| format!("writing {}", dest.display()))?;
            batch.staged.push(tmp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::layout::Layout;
    use sf_core::matrix::{CellKey, Pipeline, SupportMatrix};

    fn plan_for(v: &str, tc: &str) -> Plan {
        let m = SupportMatrix::embedded();
        let key = CellKey {
            pipeline: Pipeline::Tarball,
            slurm_version: Some(m.slurm_version(v).unwrap()),
            toolchain: m.toolchain_name(tc).unwrap(),
            arch: m.arch_name("amd64").unwrap(),
            build: m.build_kind("cpu").unwrap(),
        };
        let cell = crate::cell::check(&m, Layout::default().cell(&m, &key)).unwrap();
        plan(&cell, &Stack::embedded(), &Options { build_jobs: 2 }).unwrap()
    }

    /// Every file under `dir` with its bytes, hidden ones included.
    fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
        fn walk(d: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    let rel = p.strip_prefix(base).unwrap().display().to_string();
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn a_failed_announcement_restores_the_previous_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let first = plan_for("25.11", "noble");
        first.write(&out).unwrap();
        let before = contents(&out);
        assert_eq!(before.len(), 4);

        // Another cell's files into the same folder, but the announcement fails after every
        // file is in place: the first cell's files come back, nothing else stays.
        let second = plan_for("24.11", "jammy");
        let mut seen = Vec::new();
        let e = second
            .write_then(&out, |paths| {
                seen = paths.to_vec();
                assert!(
                    paths.iter().all(|p| p.is_file()),
                    "all in place when announced"
                );
                Err(anyhow::anyhow!("cannot announce"))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "cannot announce");
        assert_eq!(seen.len(), 4);
        assert_eq!(contents(&out), before);

        // Without the failure the second cell's files replace the first's, leaving no backups.
        let written = second.write(&out).unwrap();
        let after = contents(&out);
        let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "Dockerfile",
                "build.sh",
                "modules/slurm/24.11-jammy.lua",
                "modules/slurm/25.11-noble.lua",
                "spack.yaml"
            ]
        );
        assert_eq!(written.len(), 4);
    }

    #[test]
    fn a_rename_that_fails_midway_undoes_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        // A directory where build.sh (the third file) goes: spack.yaml and the Dockerfile are
        // renamed into place first, then build.sh's rename fails.
        std::fs::create_dir_all(out.join("build.sh")).unwrap();
        std::fs::write(out.join("build.sh/keep"), "mine").unwrap();
        std::fs::write(out.join("spack.yaml"), "the old environment").unwrap();
        let p = plan_for("25.11", "noble");
        assert_eq!(p.files[2].rel_path, "build.sh");
        let e = p.write(&out).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2);
        assert!(format!("{e:#}").contains("build.sh"), "{e:#}");
        assert_eq!(
            contents(&out),
            vec![
                ("build.sh/keep".to_string(), b"mine".to_vec()),
                ("spack.yaml".to_string(), b"the old environment".to_vec()),
            ]
        );
        assert!(!out.join("modules").exists(), "a created folder is removed");
    }

    #[test]
    fn a_placing_failure_that_is_not_the_users_is_exit_1_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("spack.yaml"), "the old environment").unwrap();
        std::fs::write(out.join("build.sh"), "the old script").unwrap();
        let p = plan_for("25.11", "noble");
        let mut batch = Batch::default();
        p.stage(&out, &mut batch).unwrap();
        // build.sh's temporary file vanishes after staging, as on a failing disk: its rename
        // fails after spack.yaml and the Dockerfile are in place and build.sh is backed up.
        let tmp = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(".build.sh.") && n.ends_with(".tmp")
            })
            .expect("build.sh is staged");
        std::fs::remove_file(tmp).unwrap();
        let e = batch.place(&out).unwrap_err();
        assert_eq!(batch.placed.len(), 2);
        drop(batch);
        assert_eq!(sf_core::exit::code_for(&e), 1, "{e:#}");
        assert!(format!("{e:#}").contains("build.sh"), "{e:#}");
        assert_eq!(
            contents(&out),
            vec![
                ("build.sh".to_string(), b"the old script".to_vec()),
                ("spack.yaml".to_string(), b"the old environment".to_vec()),
            ]
        );
        assert!(!out.join("modules").exists(), "a created folder is removed");
    }

    #[test]
    fn a_file_that_cannot_be_staged_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        // A file where the modulefile's folder goes: the first three files are staged, then the
        // fourth cannot be, before anything was put in place.
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("modules"), "not a folder").unwrap();
        std::fs::write(out.join("spack.yaml"), "the old environment").unwrap();
        let p = plan_for("25.11", "noble");
        assert_eq!(p.files[3].kind, FileKind::Modulefile);
        let e = p.write(&out).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2);
        assert_eq!(
            contents(&out),
            vec![
                ("modules".to_string(), b"not a folder".to_vec()),
                ("spack.yaml".to_string(), b"the old environment".to_vec()),
            ]
        );
    }
}
