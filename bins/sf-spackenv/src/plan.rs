//! The plan for one cell: every file sf-spackenv would write, rendered in memory first. `--dry-run`
//! prints it, `--print` picks one file from it, and [`Plan::write`] puts all of it on disk.
//!
//! Writing is all or nothing: each file goes to a temporary file beside its destination, and only
//! when every one of them is complete are they renamed into place. If the output directory cannot
//! be written, nothing is left behind, not even the directories this run created.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sf_core::exit::ResultExt;
use sf_core::fsutil::AtomicFile;
use sha2::{Digest, Sha256};

use crate::cell::CheckedCell;
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
}

impl FileKind {
    /// The name `--print` takes and the JSON/record use.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::SpackYaml => "spack.yaml",
            FileKind::Dockerfile => "dockerfile",
            FileKind::BuildScript => "build-script",
            FileKind::Modulefile => "modulefile",
        }
    }

    /// The `GITHUB_OUTPUT` name of the file's path.
    pub fn output_name(self) -> &'static str {
        match self {
            FileKind::SpackYaml => "spack_yaml",
            FileKind::Dockerfile => "dockerfile",
            FileKind::BuildScript => "build_script",
            FileKind::Modulefile => "modulefile",
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

impl Plan {
    pub fn file(&self, kind: FileKind) -> Option<&PlannedFile> {
        self.files.iter().find(|f| f.kind == kind)
    }

    /// Write every file under `out`, all or nothing. Returns the written paths, in plan order.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        let mut dirs = CreatedDirs::default();
        let staged = self.stage(out, &mut dirs);
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                dirs.remove_all();
                return Err(e);
            }
        };
        let mut written = Vec::new();
        for (file, tmp, dest) in staged {
            tmp.commit()
                .with_context(|| format!("moving {} into place", dest.display()))?;
            if file.executable {
                set_executable(&dest)?;
            }
            written.push(dest);
        }
        Ok(written)
    }

    /// Create the directories and complete temporary files; nothing is visible yet.
    fn stage<'a>(
        &'a self,
        out: &Path,
        dirs: &mut CreatedDirs,
    ) -> Result<Vec<(&'a PlannedFile, AtomicFile, PathBuf)>> {
        let unwritable = |what: &str| format!("--out {}: cannot write {what}", out.display());
        dirs.create(out).bad_input(unwritable("the directory"))?;
        let mut staged = Vec::new();
        for file in &self.files {
            let dest = out.join(&file.rel_path);
            if let Some(parent) = dest.parent() {
                dirs.create(parent).bad_input(unwritable(&file.rel_path))?;
            }
            let mut tmp = AtomicFile::create(&dest).bad_input(unwritable(&file.rel_path))?;
            tmp.write_all(&file.bytes)
                .with_context(|| format!("writing {}", dest.display()))?;
            staged.push((file, tmp, dest));
        }
        Ok(staged)
    }
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> Result<()> {
    Ok(())
}
