//! A runner's local binary cache (seed 004's `~/.slurm-factory/buildcache/`), fed by each build.
//!
//! Every build pushes into a mirror of its own, so what gets signed and published is exactly that
//! cell's specs and parallel cells on one runner never write into each other's output. Afterwards
//! the run's mirror is merged into the shared cache, which later builds read as an unsigned
//! mirror: blobs are content-addressed and added create-only (a hard link when the file system
//! allows, else a copy renamed into place), spec manifests are replaced atomically, and the index
//! is read, extended and rewritten under a lock so two merges never drop each other's specs.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use sf_core::fsutil::random_hex;
use sf_core::layout::spack;

use crate::index::Index;
use crate::manifest::media_type;
use crate::mirror::{BlobStatus, Mirror};
use crate::spec::read_spec_blob;

/// What one merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Merged {
    /// Spec manifests copied in.
    pub specs: usize,
    /// Blobs added (the others were there already).
    pub blobs_added: usize,
    /// Specs the cache's index lists afterwards.
    pub indexed: usize,
}

/// The lock file guarding a cache's index (a dot file: never taken for a manifest or blob).
const LOCK_FILE: &str = ".sf-cache.lock";

/// Merge the unsigned layout-3 mirror `run` into the cache mirror `cache` (created if missing).
pub fn merge_into_cache(run: &Mirror, cache: &Path) -> Result<Merged> {
    run.require_v3()?;
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let cache = Mirror::open(cache)?;
    let lock = fs::File::create(cache.path(LOCK_FILE))
        .with_context(|| format!("creating {}", cache.path(LOCK_FILE).display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", cache.path(LOCK_FILE).display()))?;

    // Check the whole run first: a bad run adds nothing.
    let mut checks = Vec::new();
    for entry in run.spec_manifests()? {
        let check = run.check_spec_manifest(&entry)?;
        if !check.is_ok() {
            anyhow::bail!(
                "{} in {} is not complete: {}",
                entry.key,
                run.root().display(),
                check
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        checks.push(check);
    }
    let mut merged = Merged::default();
    let mut index = read_index(&cache)?;
    for check in checks {
        for rec in &check.file.manifest.data {
            if cache.check_blob(rec)? != BlobStatus::Ok {
                link_or_copy(&run.blob_path(rec)?, &cache.blob_path(rec)?)?;
                merged.blobs_added += 1;
            }
        }
        let key = &check.entry.key;
        cache.write_key(key, &fs::read(run.path(key))?)?;
        let spec_rec = check
            .file
            .manifest
            .record(media_type::SPEC)
            .context("a checked manifest has a spec record")?;
        index.add_spec(&read_spec_blob(&run.blob_path(spec_rec)?)?)?;
        merged.specs += 1;
    }
    let (bytes, manifest) = index.to_blob_and_manifest();
    cache.write_blob(
        &bytes,
        media_type::INDEX,
        crate::manifest::compression::NONE,
    )?;
    cache.write_manifest(spack::INDEX_MANIFEST, &manifest)?;
    cache.write_layout_json()?;
    merged.indexed = index.len();
    Ok(merged)
}

/// The cache's current index; none yet (or one that no longer reads) starts empty, since every
/// spec it listed is re-added from its manifest by the next merge that carries it.
fn read_index(cache: &Mirror) -> Result<Index> {
    let Some(file) = cache.read_manifest_opt(spack::INDEX_MANIFEST)? else {
        return Ok(Index::new());
    };
    let Some(rec) = file.manifest.record(media_type::INDEX) else {
        return Ok(Index::new());
    };
    if cache.check_blob(rec)? != BlobStatus::Ok {
        return Ok(Index::new());
    }
    let bytes = fs::read(cache.blob_path(rec)?)?;
    Ok(Index::parse(&bytes).unwrap_or_default())
}

/// Put `from` at `to` without ever exposing a partial file: a hard link if possible (blobs are
/// immutable), else a copy to a temporary name renamed into place.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().context("a blob path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match fs::hard_link(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(_) => {}
    }
    let tmp = dir.join(format!(".tmp-{}", random_hex(8)?));
    fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("renaming into {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Mirror {
        Mirror::open(sf_testkit::fixture("spack-v3-unsigned")).unwrap()
    }

    /// A run mirror holding only the named packages' manifests (and all fixture blobs).
    fn run_mirror(dir: &Path, packages: &[&str]) -> Mirror {
        let src = fixture();
        copy_dir(&src.path(spack::BLOBS_DIR), &dir.join(spack::BLOBS_DIR));
        for e in src.spec_manifests().unwrap() {
            if packages.contains(&e.name.as_str()) {
                let to = dir.join(&e.key);
                fs::create_dir_all(to.parent().unwrap()).unwrap();
                fs::copy(src.path(&e.key), to).unwrap();
            }
        }
        fs::create_dir_all(dir.join("v3")).unwrap();
        fs::copy(src.path(spack::LAYOUT_JSON), dir.join(spack::LAYOUT_JSON)).unwrap();
        Mirror::open(dir).unwrap()
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn two_runs_merge_into_one_index_and_a_rerun_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let a = run_mirror(&tmp.path().join("a"), &["greetdata", "libgreet"]);
        let b = run_mirror(&tmp.path().join("b"), &["greet"]);
        let cache = tmp.path().join("cache");

        let first = merge_into_cache(&a, &cache).unwrap();
        assert_eq!((first.specs, first.indexed), (2, 2));
        assert!(first.blobs_added >= 4, "{first:?}");
        let second = merge_into_cache(&b, &cache).unwrap();
        // greet's DAG pulls its dependencies into the index too; nothing from run a is lost.
        assert_eq!((second.specs, second.indexed), (1, 3));

        let c = Mirror::open(&cache).unwrap();
        let names: Vec<String> = c
            .spec_manifests()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["greet", "greetdata", "libgreet"]);
        for e in c.spec_manifests().unwrap() {
            assert!(c.check_spec_manifest(&e).unwrap().is_ok(), "{}", e.key);
        }
        let index = read_index(&c).unwrap();
        for h in [
            "vg6h5mxa7kdxvkzohnebjx3tcdjqufan",
            "ckrbas73k7j2juaix33wt23ixqfu2or2",
            "laaqxpl6kiffa27mif5bylcjualzweos",
        ] {
            assert!(index.in_buildcache(h), "{h} not in the cache's index");
        }
        let before = fs::read(c.path(spack::INDEX_MANIFEST)).unwrap();
        let again = merge_into_cache(&b, &cache).unwrap();
        assert_eq!(again.blobs_added, 0);
        assert_eq!(fs::read(c.path(spack::INDEX_MANIFEST)).unwrap(), before);
        // The run mirrors are untouched: each still holds only its own specs.
        assert_eq!(a.spec_manifests().unwrap().len(), 2);
        assert_eq!(b.spec_manifests().unwrap().len(), 1);
    }

    #[test]
    fn a_run_mirror_with_a_missing_blob_is_refused_and_the_cache_keeps_its_index() {
        let tmp = tempfile::tempdir().unwrap();
        let good = run_mirror(&tmp.path().join("good"), &["greetdata"]);
        let cache = tmp.path().join("cache");
        merge_into_cache(&good, &cache).unwrap();
        let before = fs::read(cache.join(spack::INDEX_MANIFEST)).unwrap();
        let names_before = Mirror::open(&cache).unwrap().spec_manifests().unwrap();

        let bad = run_mirror(&tmp.path().join("bad"), &["greet"]);
        let greet = bad.spec_manifests().unwrap().remove(0);
        let rec = bad
            .read_manifest(&greet.key)
            .unwrap()
            .manifest
            .record(media_type::TARBALL)
            .unwrap()
            .clone();
        fs::remove_file(bad.blob_path(&rec).unwrap()).unwrap();
        let err = merge_into_cache(&bad, &cache).unwrap_err();
        assert!(format!("{err:#}").contains("not complete"), "{err:#}");
        assert_eq!(fs::read(cache.join(spack::INDEX_MANIFEST)).unwrap(), before);
        assert_eq!(
            Mirror::open(&cache).unwrap().spec_manifests().unwrap(),
            names_before
        );
    }
}
