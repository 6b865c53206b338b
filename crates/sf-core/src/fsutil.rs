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
/// removed if dropped uncommitted.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
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
        })
    }

    /// Where the file goes.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Set the mode of the file being written, past the umask (e.g. 0755 for a script).
    #[cfg(unix)]
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.file
            .as_ref()
            .expect("open until commit")
            .set_permissions(fs::Permissions::from_mode(mode))
    }

    /// Flush what was written so far to disk ([`AtomicFile::commit`] does it too), so a caller
    /// can tell a failed write from a failed rename.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.as_ref().expect("open until commit").sync_all()
    }

    /// Flush to disk and move into place.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("committed once");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.dest)
    }

    /// Move into place like [`AtomicFile::commit`], but keep the file (or link) the destination
    /// held beside it until [`Undoable::keep`], so a caller placing several files can put every
    /// one back if a later step fails. A directory at the destination is left alone and makes
    /// the rename fail. On failure the destination is as it was and the temporary file gone.
    pub fn commit_undoable(self) -> io::Result<Undoable> {
        let file = self.file.as_ref().expect("committed once");
        file.sync_all()?;
        let backup = match fs::symlink_metadata(&self.dest) {
            Ok(m) if !m.is_dir() => {
                let backup = beside(&self.dest, "old")?;
                fs::rename(&self.dest, &backup)?;
                Some(backup)
            }
            _ => None,
        };
        // Dropping `self` from here on removes the temporary file unless it was renamed.
        if let Err(e) = fs::rename(&self.tmp, &self.dest) {
            if let Some(b) = &backup {
                let _ = fs::rename(b, &self.dest);
            }
            return Err(e);
        }
        let mut placed = self;
        placed.file = None;
        Ok(Undoable {
            dest: placed.dest.clone(),
            backup,
            settled: false,
        })
    }
}

/// A file [`AtomicFile::commit_undoable`] put in place. Until [`Undoable::keep`], dropping it (or
/// [`Undoable::undo`]) puts back what the destination held: the previous file, or nothing.
#[derive(Debug)]
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

    /// Keep the new file and drop the previous one.
    pub fn keep(mut self) {
        self.settled = true;
        if let Some(b) = self.backup.take() {
            let _ = fs::remove_file(b);
        }
    }

    /// Put back what the destination held before.
    pub fn undo(mut self) {
        self.restore();
    }

    fn restore(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        match self.backup.take() {
            // The rename replaces the new file in one step: the path never lacks a file.
            Some(b) => {
                let _ = fs::rename(b, &self.dest);
            }
            None => {
                let _ = fs::remove_file(&self.dest);
            }
        }
    }
}

impl Drop for Undoable {
    fn drop(&mut self) {
        self.restore();
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
        self.file.as_mut().expect("open until commit").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
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
        placed.undo();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);

        // Dropped undecided: the same.
        drop(undoable(&dest, b"new").unwrap());
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);

        // Where there was no file, undoing leaves none.
        let fresh = dir.path().join("fresh.txt");
        undoable(&fresh, b"new").unwrap().undo();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"old".to_vec())]);
    }

    #[test]
    fn a_kept_commit_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        undoable(&dest, b"new").unwrap().keep();
        assert_eq!(listing(dir.path()), [("out.txt".into(), b"new".to_vec())]);
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
        let f = AtomicFile::create_with_mode(&dest, 0o600).unwrap();
        f.set_mode(0o755).unwrap();
        f.commit().unwrap();
        let mode = fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
