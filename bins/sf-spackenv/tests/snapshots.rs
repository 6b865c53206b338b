//! Every rendered file of the snapshot cells equals its reviewed copy under `tests/snapshots/`
//! (regenerate with `cargo run -p sf-spackenv --example regen-snapshots`, then review the diff).

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::snapshots::{snapshot_cells, snapshot_files, snapshot_root};

fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else {
            out.insert(path.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

#[test]
fn rendered_files_match_the_snapshots() {
    let root = snapshot_root();
    let cells = snapshot_cells();
    assert_eq!(
        cells
            .iter()
            .filter(|c| c.id().starts_with("version-"))
            .count(),
        18
    );
    assert_eq!(
        cells.iter().filter(|c| c.id().starts_with("deps-")).count(),
        7
    );
    let mut expected = BTreeSet::new();
    let mut mismatches = Vec::new();
    for cell in &cells {
        for file in snapshot_files(cell) {
            let rel = format!("{}/{}", cell.id(), file.rel_path);
            let on_disk = std::fs::read(root.join(&rel)).unwrap_or_default();
            if on_disk != file.bytes {
                mismatches.push(rel.clone());
            }
            expected.insert(rel);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} files differ from tests/snapshots (first: {:?}); if the change is intended, run \
         `cargo run -p sf-spackenv --example regen-snapshots` and review the diff",
        mismatches.len(),
        mismatches.first()
    );
    let mut present = BTreeSet::new();
    files_under(&root, &root, &mut present);
    let stale: Vec<_> = present.difference(&expected).collect();
    assert!(
        stale.is_empty(),
        "snapshots no cell renders any more: {stale:?}"
    );
}

#[test]
fn rendering_is_deterministic() {
    for cell in snapshot_cells() {
        assert_eq!(
            snapshot_files(&cell),
            snapshot_files(&cell),
            "{}",
            cell.id()
        );
    }
}
