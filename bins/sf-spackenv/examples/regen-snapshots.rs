//! Rewrite `tests/snapshots/` from the current templates and data files:
//! `cargo run -p sf-spackenv --example regen-snapshots`. Review the diff before committing it.

#[path = "../tests/support/snapshots.rs"]
mod snapshots;

fn main() -> std::io::Result<()> {
    let root = snapshots::snapshot_root();
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let cells = snapshots::snapshot_cells();
    for cell in &cells {
        for file in snapshots::snapshot_files(cell) {
            let path = root.join(cell.id()).join(&file.rel_path);
            std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
            std::fs::write(&path, &file.bytes)?;
        }
    }
    eprintln!(
        "wrote snapshots of {} cells into {}",
        cells.len(),
        root.display()
    );
    Ok(())
}
