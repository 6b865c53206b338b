//! Making signatures: detached ASCII-armoured signatures of streams and files (`.asc`, what
//! `gpg --detach-sign --armor` writes) and cleartext signatures (what `gpg --clearsign` writes,
//! and what Spack expects a signed spec manifest to be).
//!
//! Files are read in large blocks straight into the hash, so signing costs about one hashing pass
//! and memory stays flat whatever the size; signature files are written to a temporary file and
//! renamed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sequoia_openpgp as openpgp;

use openpgp::armor;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use sf_core::fsutil::AtomicFile;

use crate::key::SigningKey;

/// Read size: large enough that system calls are noise next to hashing, small enough that the
/// block the kernel copies in is still in the CPU cache when it is hashed. Measured on 1 GiB
/// (RSA-4096, SHA-512): 4 MiB blocks cost about 20% more CPU than 128 KiB ones, mostly in the
/// kernel's copy; 128 KiB is on par with `openssl dgst -sha512`.
pub(crate) const BLOCK: usize = 128 << 10;

/// A file and the signature made for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedFile {
    pub path: PathBuf,
    pub signature: PathBuf,
    /// Bytes signed.
    pub size: u64,
}

/// Write a detached, ASCII-armoured signature of everything `data` yields into `out`. Returns the
/// number of bytes signed.
///
/// One thread reads and hashes in turn. A reader thread overlapping the two was tried and was
/// slower on a busy machine: every block handed over waits for the other thread to be scheduled.
pub fn sign_detached(
    key: &SigningKey,
    mut data: impl Read,
    out: &mut (dyn Write + Send + Sync),
) -> Result<u64> {
    let message = Message::new(out);
    let message = Armorer::new(message).kind(armor::Kind::Signature).build()?;
    let mut signer = Signer::new(message, key.keypair())?
        .detached()
        .hash_algo(key.hash_algorithm())?
        .build()?;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the data to sign"),
        };
        signer.write_all(&buf[..n])?;
        total += n as u64;
    }
    signer.finalize()?;
    Ok(total)
}

/// The signature path of a file: `PATH.asc`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".asc");
    PathBuf::from(s)
}

/// Sign a file into `PATH.asc`, atomically (an old signature stays until the new one is whole).
pub fn sign_file(key: &SigningKey, path: &Path) -> Result<SignedFile> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let sig_path = signature_path(path);
    let mut out = AtomicFile::create(&sig_path)
        .with_context(|| format!("creating {}", sig_path.display()))?;
    let size = sign_detached(key, file, &mut out)
        .with_context(|| format!("signing {}", path.display()))?;
    out.commit()
        .with_context(|| format!("writing {}", sig_path.display()))?;
    Ok(SignedFile {
        path: path.to_path_buf(),
        signature: sig_path,
        size,
    })
}

/// A detached armoured signature of bytes in memory.
pub fn sign_bytes(key: &SigningKey, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    sign_detached(key, data, &mut out)?;
    Ok(out)
}

/// The cleartext-signed form of a text: one `Hash:` header, the text as given (dash-escaped where
/// a line starts with `-`), then the signature. Like gpg, the line break before the signature
/// armour is framing, so a text without a final newline (Spack's manifests) is signed as is.
///
/// The framework cannot carry trailing spaces or tabs on a line (they are not signed), nor a
/// carriage return, so such text is refused rather than signed as something else.
pub fn clearsign(key: &SigningKey, text: &[u8]) -> Result<Vec<u8>> {
    if let Some(n) = text
        .split(|b| *b == b'\n')
        .position(|l| l.ends_with(b" ") || l.ends_with(b"\t") || l.contains(&b'\r'))
    {
        return Err(sf_core::bad_input(format!(
            "line {} ends with whitespace or holds a carriage return, which a cleartext signature cannot keep",
            n + 1
        )));
    }
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let mut signer = Signer::new(message, key.keypair())?
            .cleartext()
            .hash_algo(key.hash_algorithm())?
            .build()?;
        signer.write_all(text)?;
        signer.finalize()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;

    fn key() -> SigningKey {
        let (cert, _) = CertBuilder::general_purpose(Some("t")).generate().unwrap();
        let material = cert.as_tsk().armored().to_vec().unwrap();
        SigningKey::load(&material, None, None).unwrap()
    }

    #[test]
    fn cleartext_has_one_hash_header_and_the_text_untouched() {
        let k = key();
        let body = b"{\n\"version\":3,\n\"data\":[]\n}";
        let out = String::from_utf8(clearsign(&k, body).unwrap()).unwrap();
        let expected_head = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{\n\"version\":3,\n\"data\":[]\n}\n-----BEGIN PGP SIGNATURE-----\n";
        assert!(out.starts_with(expected_head), "{out}");
        assert!(out.trim_end().ends_with("-----END PGP SIGNATURE-----"));
        assert_eq!(out.matches("Hash:").count(), 1);
    }

    #[test]
    fn dashes_are_escaped_and_unsignable_text_refused() {
        let k = key();
        let out = String::from_utf8(clearsign(&k, b"-x\nok").unwrap()).unwrap();
        assert!(
            out.contains("\n\n- -x\nok\n-----BEGIN PGP SIGNATURE-----"),
            "{out}"
        );
        assert!(clearsign(&k, b"a \nb").is_err());
        assert!(clearsign(&k, b"a\r\nb").is_err());
    }

    #[test]
    fn detached_signatures_are_armoured_and_files_get_asc_beside_them() {
        let k = key();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.tar.gz");
        std::fs::write(&p, vec![7u8; 10_000_000]).unwrap();
        let s = sign_file(&k, &p).unwrap();
        assert_eq!(s.signature, dir.path().join("a.tar.gz.asc"));
        assert_eq!(s.size, 10_000_000);
        let text = std::fs::read_to_string(&s.signature).unwrap();
        assert!(text.starts_with("-----BEGIN PGP SIGNATURE-----"), "{text}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
        assert!(sign_file(&k, &dir.path().join("missing")).is_err());
        assert!(!dir.path().join("missing.asc").exists());
    }
}
