//! One streaming pass over a tarball before it is published: its sha256, and proof that it is
//! what it claims to be (a complete gzip stream, a tar whose members [`extract`](crate::extract)
//! would accept, and its `BUILDINFO.json`), so a 0-byte or random-bytes file with a valid
//! signature is refused before anything is uploaded.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use sf_core::bad_input;

use crate::extract::check_members;
pub use crate::pack::BUILDINFO;

/// A `BUILDINFO.json` larger than this is no build record.
const BUILDINFO_MAX: u64 = 4 << 20;

/// What one pass over a tarball found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// Of the file's bytes, as they are on disk.
    pub sha256: String,
    pub size: u64,
    pub members: u64,
    /// The bytes of `BUILDINFO.json`.
    pub buildinfo: Vec<u8>,
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Read `tarball` once: its sha256, every member checked, the gzip stream read to its end
/// (every member's CRC and length checked, nothing after it), and `BUILDINFO.json` kept. Bad
/// input (exit 2) when it is not a complete, safe tarball with a build record.
pub fn inspect(tarball: &Path) -> Result<Inspection> {
    let file = File::open(tarball).map_err(|e| {
        bad_input(format!(
            "cannot open the tarball {}: {e}",
            tarball.display()
        ))
    })?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Err(bad_input(format!(
            "{} is empty (0 bytes): no tarball",
            tarball.display()
        )));
    }
    let hashing = Hashing {
        inner: file,
        hash: Sha256::new(),
        size: 0,
    };
    let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, hashing));
    let mut ar = tar::Archive::new(gz);
    let mut buildinfo = None;
    let members = check_members(tarball, &mut ar, |name, entry| {
        if name == BUILDINFO {
            let mut bytes = Vec::new();
            entry
                .take(BUILDINFO_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| bad_input(format!("{} is corrupt: {e}", tarball.display())))?;
            if bytes.len() as u64 > BUILDINFO_MAX {
                return Err(bad_input(format!(
                    "{}: its {BUILDINFO} is larger than {} MiB",
                    tarball.display(),
                    BUILDINFO_MAX >> 20
                )));
            }
            buildinfo = Some(bytes);
        }
        Ok(())
    })?;
    // The tar ends at its zero blocks; what follows must still be the gzip stream's own end
    // (padding, the last member's CRC): a truncated or extended file is refused.
    let mut gz = ar.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(|e| {
        bad_input(format!(
            "{} is not a complete gzip stream: {e}",
            tarball.display()
        ))
    })?;
    let mut hashing = gz.into_inner().into_inner();
    io::copy(&mut hashing, &mut io::sink())?;
    if members == 0 {
        return Err(bad_input(format!(
            "{} is an empty tar archive",
            tarball.display()
        )));
    }
    let Some(buildinfo) = buildinfo else {
        return Err(bad_input(format!(
            "{} has no {BUILDINFO}: it is not a tarball sf-build packed",
            tarball.display()
        )));
    };
    Ok(Inspection {
        sha256: hex::encode(hashing.hash.finalize()),
        size: hashing.size,
        members,
        buildinfo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tgz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            // The name written raw: the builder itself refuses `..`, which is the point here.
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn inspect_bytes(bytes: &[u8]) -> Result<Inspection> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.tar.gz");
        std::fs::write(&f, bytes).unwrap();
        inspect(&f)
    }

    fn refusal(bytes: &[u8]) -> String {
        let e = inspect_bytes(bytes).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn a_good_tarball_gives_its_sha256_and_build_record() {
        let bytes = tgz(&[
            ("view/bin/x", b"x"),
            (BUILDINFO, b"{\"toolchain\":\"noble\"}"),
        ]);
        let i = inspect_bytes(&bytes).unwrap();
        assert_eq!(i.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(i.size, bytes.len() as u64);
        assert_eq!(i.members, 2);
        assert_eq!(i.buildinfo, b"{\"toolchain\":\"noble\"}");
    }

    #[test]
    fn what_is_no_complete_safe_tarball_is_refused() {
        let good = tgz(&[("view/bin/x", b"x"), (BUILDINFO, b"{}")]);
        assert!(refusal(b"").contains("empty (0 bytes)"));
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        refusal(&noise);
        // Cut short: the last member's end is missing.
        assert!(refusal(&good[..good.len() - 6]).contains("gzip"));
        // Extended: bytes after the gzip stream.
        let mut longer = good.clone();
        longer.extend_from_slice(b"trailing bytes");
        refusal(&longer);
        assert!(refusal(&tgz(&[("view/bin/x", b"x")])).contains("no BUILDINFO.json"));
        assert!(refusal(&tgz(&[("../escape", b"x"), (BUILDINFO, b"{}")])).contains(".."));
    }
}
