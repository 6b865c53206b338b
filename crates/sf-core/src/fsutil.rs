//! Files written whole or not at all.
//!
//! Every output a step leaves (records, signatures, checksums, rendered recipes) goes through a
//! temporary file in the same directory and a rename, so a reader never sees half a file and a
//! failure leaves the old file, if any, in place.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = AtomicFile::create(path)?;
    tmp.write_all(bytes)?;
    tmp.commit()
}

/// A file being written beside its final path; renamed into place by [`AtomicFile::commit`],
/// removed if dropped, or committed without being renamed into place.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Nothing written or changed since [`AtomicFile::sync_all`]: committing need not flush again.
    synced: bool,
    /// Renamed into place: there is no temporary file left to remove.
    placed: bool,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> io::Result<Self> {
        Self::create_with_mode(dest, 0o666)
    }

    /// Like [`AtomicFile::create`], but readable and writable by the owner only (mode 0600) from
    /// the first byte on, for secret keys: the mode is set when the file is made, not after.
    pub fn create_private(dest: &Path) -> io::Result<Self> {
        Self::create_with_mode(dest, 0o600)
    }

    /// Like [`AtomicFile::create`] with the mode the file is made with (the umask applies, as
    /// with any new file; [`AtomicFile::set_mode`] sets it exactly).
    pub fn create_with_mode(dest: &Path, mode: u32) -> io::Result<Self> {
        let tmp = beside(dest, "tmp")?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let file = options.open(&tmp)?;
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
            synced: false,
            placed: false,
        })
    }

    /// Where the file goes.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Set the mode of the file being written, past the umask (e.g. 0755 for a script).
    #[cfg(unix)]
    pub fn set_mode(&mut self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.synced = false;
        self.file
            .as_ref()
            .expect("open until commit")
            .set_permissions(fs::Permissions::from_mode(mode))
    }

    /// Flush what was written so far to disk, so a caller can tell a failed write from a failed
    /// rename. Committing flushes only what was written or changed after this.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.file.as_ref().expect("open until commit").sync_all()?;
        self.synced = true;
        Ok(())
    }

    /// Flush to disk, unless [`AtomicFile::sync_all`] already did, so each file is flushed once.
    fn sync_once(&mut self) -> io::Result<()> {
        if self.synced {
            Ok(())
        } else {
            self.sync_all()
        }
    }

    /// Flush to disk and move into place.
    pub fn commit(mut self) -> io::Result<()> {
        self.sync_once()?;
        drop(self.file.take());
        fs::rename(&self.tmp, &self.dest)?;
        self.placed = true;
        Ok(())
    }

    /// Move into place like [`AtomicFile::commit`], but keep the file (or link) the destination
    /// held beside it until [`Undoable::keep`], so a caller placing several files can put every
    /// one back if a later step fails. A directory at the destination is left alone and makes
    /// the rename fail. On failure the destination is as it was and the temporary file gone.
    ///
    /// The destination always holds a file: the old one is kept under a second name (a hard
    /// link) and the new one renamed over it in one step. Only where the file system cannot link
    /// is the old file renamed aside first, leaving a moment with nothing at the destination.
    #[must_use = "dropping the Undoable undoes the commit; call keep() to keep the new file"]
    pub fn commit_undoable(self) -> io::Result<Undoable> {
        self.commit_undoable_with(|old, backup| fs::hard_link(old, backup), |_| {})
    }

    /// [`AtomicFile::commit_undoable`] with the way the backup link is made and a look at the
    /// directory just before the new file replaces the old, for tests.
    fn commit_undoable_with(
        mut self,
        link: impl FnOnce(&Path, &Path) -> io::Result<()>,
        before_swap: impl FnOnce(Option<&Path>),
    ) -> io::Result<Undoable> {
        self.sync_once()?;
        // Only "nothing there" means there is nothing to keep: any other error (a permission, a
        // failing disk) would make an undo delete the new file and lose the old one.
        let backup = match fs::symlink_metadata(&self.dest) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(keep_aside(&self.dest, link)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        before_swap(backup.as_ref().map(|b| b.path.as_path()));
        // Closed before the rename; a failed rename leaves the temporary file to `drop`.
        drop(self.file.take());
        if let Err(e) = fs::rename(&self.tmp, &self.dest) {
            return match backup {
                Some(b) => Err(b.put_back(&self.dest, e)),
                None => Err(e),
            };
        }
        self.placed = true;
        Ok(Undoable {
            dest: self.dest.clone(),
            backup: backup.map(|b| b.path),
            settled: false,
        })
    }
}

/// The file the destination held, under a hidden name beside it.
struct Backup {
    path: PathBuf,
    /// A second link to the file still at the destination, rather than the file moved away.
    linked: bool,
}

/// Give `dest`'s file a second, hidden name; where links are not supported, rename it there.
fn keep_aside(
    dest: &Path,
    link: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<Backup> {
    let path = beside(dest, "old")?;
    match link(dest, &path) {
        Ok(()) => Ok(Backup { path, linked: true }),
        // File systems without hard links (FAT, some network mounts) or a file that takes no
        // more links; a permission error here means the rename below fails the same way.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::CrossesDevices
                    | io::ErrorKind::TooManyLinks
            ) =>
        {
            fs::rename(dest, &path)?;
            Ok(Backup {
                path,
                linked: false,
            })
        }
        Err(e) => Err(e),
    }
}

impl Backup {
    /// After the new file could not be put in place: leave the old one at `dest` as it was and
    /// return `failed`, or, if that cannot be done, an error saying where the old file is.
    fn put_back(self, dest: &Path, failed: io::Error) -> io::Error {
        if self.linked {
            // The old file never left `dest`: only the second name goes, and if it stays, it is
            // a stray link, not a lost file.
            match fs::remove_file(&self.path) {
                Ok(()) => failed,
                Err(e) => io::Error::new(
                    failed.kind(),
                    format!(
                        "{failed}; a second link to {} is left at {}: {e}",
                        dest.display(),
                        self.path.display()
                    ),
                ),
            }
        } else {
            match fs::rename(&self.path, dest) {
                Ok(()) => failed,
                // Not the caller's input any more: the old file is under another name.
                Err(e) => io::Error::other(format!(
                    "{failed}; the file {} held could not be put back and is at {}: {e}",
                    dest.display(),
                    self.path.display()
                )),
            }
        }
    }
}

/// A file [`AtomicFile::commit_undoable`] put in place. Until [`Undoable::keep`], dropping it (or
/// [`Undoable::undo`]) puts back what the destination held: the previous file, or nothing. A
/// drop that cannot put it back warns on stderr where the previous file is.
#[derive(Debug)]
#[must_use = "dropping an Undoable undoes the commit; call keep() to keep the new file"]
pub struct Undoable {
    dest: PathBuf,
    /// Where the previous file waits while the caller is undecided.
    backup: Option<PathBuf>,
    settled: bool,
}

impl Undoable {
    /// Where the file was put.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// Keep the new file and drop the previous one. The new file is in place either way; the
    /// error says where a previous file that could not be removed was left.
    pub fn keep(mut self) -> io::Result<()> {
        self.settled = true;
        match self.backup.take() {
            Some(b) => match fs::remove_file(&b) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{} is in place, but the file it replaced is left at {}: {e}",
                        self.dest.display(),
                        b.display()
                    ),
                )),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Put back what the destination held before. The error, if it cannot, says where the
    /// previous file is.
    pub fn undo(mut self) -> io::Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> io::Result<()> {
        if self.settled {
            return Ok(());
        }
        self.settled = true;
        match self.backup.take() {
            // The rename replaces the new file in one step: the path never lacks a file.
            Some(b) => fs::rename(&b, &self.dest).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot put back the file {} held; it is at {}: {e}",
                        self.dest.display(),
                        b.display()
                    ),
                )
            }),
            None => match fs::remove_file(&self.dest) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove the new file {}: {e}", self.dest.display()),
                )),
                _ => Ok(()),
            },
        }
    }
}

impl Drop for Undoable {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            // Nobody is left to return this to, and the user must learn where their file is.
            crate::gha::Actions::from_env().warning(&e.to_string(), None);
        }
    }
}

/// A hidden, unique name beside `dest`: `.NAME.HEX.WHAT`.
fn beside(dest: &Path, what: &str) -> io::Result<PathBuf> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok(dir.join(format!(
        ".{}.{}.{what}",
        name.to_string_lossy(),
        random_hex(6)?
    )))
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.synced = false;
        self.file.as_mut().expect("open until commit").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// `n` random bytes as lowercase hex: unique names for temporary files, records and delimiters.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(io::Error::other)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_files_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(&dest, b"whole").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
    }

    #[test]
    fn a_commit_that_cannot_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory that is not empty cannot be replaced by a file.
        let dest = dir.path().join("out.txt");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("inside"), b"kept").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        assert!(f.commit().is_err());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["out.txt"], "only the directory is left");
        assert_eq!(fs::read(dest.join("inside")).unwrap(), b"kept");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("key.asc");
        let mut f = AtomicFile::create_private(&dest).unwrap();
        f.write_all(b"secret").unwrap();
        f.commit().unwrap();
        let mode = fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Names and bytes of every file in `dir`, hidden ones included.
    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = if p.is_file() {
                    fs::read(&p).unwrap()
                } else {
                    Vec::new()
                };
                (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        v.sort();
        v
    }

    fn undoable(dest: &Path, bytes: &[u8]) -> io::Result<Undoable> {
        let mut f = AtomicFile::create(dest)?;
        f.write_all(bytes)?;
        f.commit_undoable()
    }

    #[test]
    fn an_undone_commit_puts_the_previous_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        let placed = undoable(&dest, b"new").unwrap();
        assert_eq!(placed.path(), dest);
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(listing(dir.path()).len(), 2, "the old file waits beside it");
        placed.undo().unwrap();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);

        // Dropped undecided: the same.
        drop(undoable(&dest, b"new").unwrap());
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);

        // Where there was no file, undoing leaves none.
        let fresh = dir.path().join("fresh.txt");
        undoable(&fresh, b"new").unwrap().undo().unwrap();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);
    }

    #[test]
    fn a_kept_commit_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        undoable(&dest, b"new").unwrap().keep().unwrap();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"new".to_vec())]);
    }

    #[test]
    fn a_previous_file_that_cannot_be_removed_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        let placed = undoable(&dest, b"new").unwrap();
        // Something that remove_file refuses, even to root, stands where the backup was.
        let backup = placed.backup.clone().expect("a backup of the old file");
        fs::remove_file(&backup).unwrap();
        fs::create_dir(&backup).unwrap();
        let e = placed.keep().unwrap_err().to_string();
        assert!(
            e.contains("out.txt is in place") && e.contains(&backup.display().to_string()),
            "{e}"
        );
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[cfg(unix)]
    fn inode(p: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(p).unwrap();
        (m.ino(), m.nlink())
    }

    /// Stands in for a file system without hard links (FAT, some network mounts), which cannot
    /// be mounted here.
    fn no_links(_: &Path, _: &Path) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn staged(dest: &Path, bytes: &[u8]) -> AtomicFile {
        let mut f = AtomicFile::create(dest).unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[cfg(unix)]
    #[test]
    fn the_destination_holds_the_old_file_until_the_new_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        let (old_ino, _) = inode(&dest);
        let mut seen = None;
        let placed = staged(&dest, b"new")
            .commit_undoable_with(
                |a, b| fs::hard_link(a, b),
                |backup| {
                    // Just before the swap: the old file is still at the destination, and the
                    // backup is a second name for it, not a copy and not a moved file.
                    let backup = backup.expect("a backup of the old file").to_path_buf();
                    assert_eq!(fs::read(&dest).unwrap(), b"old");
                    assert_eq!(inode(&dest), (old_ino, 2));
                    assert_eq!(inode(&backup), (old_ino, 2));
                    seen = Some(backup);
                },
            )
            .unwrap();
        let backup = seen.expect("looked before the swap");
        // Right after: the new file at the destination, the old one only under the backup name.
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_ne!(inode(&dest).0, old_ino);
        assert_eq!(inode(&backup), (old_ino, 1));
        assert_eq!(fs::read(&backup).unwrap(), b"old");
        placed.keep().unwrap();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"new".to_vec())]);

        // The public commit works the same way.
        let placed = undoable(&dest, b"newer").unwrap();
        assert_eq!(listing(dir.path()).len(), 2);
        placed.keep().unwrap();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"newer".to_vec())]);
    }

    #[test]
    fn without_hard_links_the_old_file_is_renamed_aside_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        let placed = staged(&dest, b"new")
            .commit_undoable_with(no_links, |backup| {
                assert_eq!(fs::read(backup.unwrap()).unwrap(), b"old");
                assert!(!dest.exists(), "renamed aside, not linked");
            })
            .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        placed.undo().unwrap();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);
    }

    #[test]
    fn a_swap_that_fails_after_the_backup_leaves_the_old_file_in_place() {
        for (how, link) in [
            (
                "linked",
                (|a: &Path, b: &Path| fs::hard_link(a, b)) as fn(&Path, &Path) -> _,
            ),
            ("renamed aside", no_links),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out.txt");
            fs::write(&dest, b"old").unwrap();
            let f = staged(&dest, b"new");
            // The temporary file vanishes: the backup is made, then the final rename fails.
            fs::remove_file(&f.tmp).unwrap();
            let mut backed_up = false;
            let e = f
                .commit_undoable_with(link, |b| backed_up = b.is_some())
                .unwrap_err();
            assert!(backed_up, "{how}");
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{how}: {e}");
            assert_eq!(
                listing(dir.path()),
                [("out.txt".into(), b"old".to_vec())],
                "{how}: no .old or .tmp file left"
            );
        }
    }

    #[test]
    fn a_destination_that_cannot_be_examined_stops_the_commit_before_anything_moves() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("out.txt"), b"old").unwrap();
        // A trailing slash on a file's path: looking it up fails with "not a directory", which
        // is not "nothing there". Treated as nothing there, an undo would delete the new file.
        let dest = PathBuf::from(format!("{}/out.txt/", dir.path().display()));
        let mut swapped = false;
        let e = staged(&dest, b"new")
            .commit_undoable_with(|a, b| fs::hard_link(a, b), |_| swapped = true)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory, "{e}");
        assert!(!swapped, "nothing was moved");
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);
    }

    #[test]
    fn an_undo_that_cannot_restore_says_where_the_old_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        let placed = undoable(&dest, b"new").unwrap();
        // Something puts a full directory where the file was: the old file cannot go back.
        fs::remove_file(&dest).unwrap();
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("theirs"), b"x").unwrap();
        let e = placed.undo().unwrap_err();
        let backup = listing(dir.path())
            .into_iter()
            .find(|(n, _)| n.ends_with(".old"))
            .expect("the old file is kept");
        assert_eq!(backup.1, b"old");
        assert!(e.to_string().contains(&backup.0), "{e}");
    }

    #[test]
    fn a_synced_file_is_not_flushed_again_unless_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(&dir.path().join("out.txt")).unwrap();
        assert!(!f.synced);
        f.write_all(b"a").unwrap();
        f.sync_all().unwrap();
        assert!(f.synced, "commit skips the flush");
        f.write_all(b"b").unwrap();
        assert!(!f.synced, "written after the flush");
        f.sync_all().unwrap();
        #[cfg(unix)]
        {
            f.set_mode(0o600).unwrap();
            assert!(!f.synced, "changed after the flush");
        }
        f.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("out.txt")).unwrap(), b"ab");
    }

    #[test]
    fn a_directory_in_the_way_fails_the_commit_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep"), b"mine").unwrap();
        assert!(undoable(&dest, b"new").is_err());
        assert_eq!(listing(dir.path()), [("out".into(), Vec::new())]);
        assert_eq!(fs::read(dest.join("keep")).unwrap(), b"mine");
    }

    #[cfg(unix)]
    #[test]
    fn set_mode_goes_past_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("run.sh");
        let mut f = AtomicFile::create_with_mode(&dest, 0o600).unwrap();
        f.set_mode(0o755).unwrap();
        f.commit().unwrap();
        let mode = fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
