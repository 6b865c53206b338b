//! The cells the snapshot tests cover and how their files are laid out under
//! `tests/snapshots/<cell id>/`; shared by the snapshot test and the `regen-snapshots` example.

use std::path::PathBuf;

use sf_core::layout::Layout;
use sf_core::matrix::{CellKey, ListArg, Pipeline, Selection, SupportMatrix};
use sf_spackenv::cell::{check, CheckedCell};
use sf_spackenv::plan::{plan, Options, PlannedFile};
use sf_spackenv::stack::Stack;

/// `tests/snapshots/`.
pub fn snapshot_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Every default cell of the version (18) and deps (6) pipelines, plus tarball cells that cover
/// the other architecture, GPU builds, a dnf toolchain and the legacy toolchain.
pub fn snapshot_cells() -> Vec<CheckedCell> {
    let m = SupportMatrix::embedded();
    let layout = Layout::default();
    let mut keys: Vec<CellKey> = Vec::new();
    for pipeline in [Pipeline::Version, Pipeline::Deps] {
        keys.extend(
            Selection::default()
                .expand(&m, pipeline)
                .expect("default selection"),
        );
    }
    for (v, tc, arch, build) in [
        ("25.11", "noble", "amd64", "cpu"),
        ("25.11", "noble", "arm64", "gpu"),
        ("24.11", "rockylinux9", "amd64", "gpu"),
        ("23.11", "focal", "amd64", "cpu"),
    ] {
        let sel = Selection {
            slurm_versions: ListArg::Named(vec![v.into()]),
            toolchains: ListArg::Named(vec![tc.into()]),
            archs: ListArg::Named(vec![arch.into()]),
            builds: ListArg::Named(vec![build.into()]),
            ..Default::default()
        };
        keys.extend(sel.expand(&m, Pipeline::Tarball).expect("tarball cell"));
    }
    let gpu_deps = Selection {
        toolchains: ListArg::Named(vec!["noble".into()]),
        builds: ListArg::Named(vec!["gpu".into()]),
        ..Default::default()
    };
    keys.extend(gpu_deps.expand(&m, Pipeline::Deps).expect("gpu deps cell"));
    keys.iter()
        .map(|k| check(&m, layout.cell(&m, k)).expect("a matrix cell checks"))
        .collect()
}

/// The build jobs the snapshots are rendered with (`--build-jobs 4`, a standard GitHub runner's
/// cores); the CLI's default is the machine's own cores.
pub const SNAPSHOT_BUILD_JOBS: u32 = 4;

/// The files of one cell, as the snapshot holds them.
pub fn snapshot_files(cell: &CheckedCell) -> Vec<PlannedFile> {
    let options = Options {
        build_jobs: SNAPSHOT_BUILD_JOBS,
    };
    plan(cell, &Stack::embedded(), &options)
        .expect("default cells render")
        .files
}
