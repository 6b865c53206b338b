//! Key files: `key generate` makes a new signing key into a private file (a local rehearsal's
//! throwaway key, or a first set-up's real one), and `key export` writes the public certificate of
//! the signing key, so a build job can ship it beside what it signed and a later job can verify.
//!
//! Only fingerprints and paths are printed; the secret key goes to its file and nowhere else.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use sf_core::bad_input;
use sf_core::fsutil::AtomicFile;
use sf_core::gha::Actions;
use sf_core::record::{rfc3339, Artifact, Recorder};
use sf_pgp::{Cipher, NewKey, Validity};

use crate::{keys, KeyArgs, Outcome};

/// The user ID of a generated key when none is given.
pub const DEFAULT_UID: &str = "Slurm Factory signing key";

/// What `key generate` was asked for.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub out: PathBuf,
    pub public_out: Option<PathBuf>,
    pub uid: String,
    pub cipher: Cipher,
    pub expires: Validity,
    pub force: bool,
    pub passphrase_file: Option<PathBuf>,
}

/// Make a new key and write its secret key (mode 0600) and, if asked, its certificate.
pub fn generate(
    req: &GenerateRequest,
    secrets: &keys::SecretEnv,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<Outcome> {
    let mut targets = vec![(&req.out, "--out")];
    if let Some(p) = &req.public_out {
        if same_path(p, &req.out) {
            return Err(bad_input(format!(
                "--public-out and --out are the same file {}; the certificate and the secret key need two files",
                p.display()
            )));
        }
        targets.push((p, "--public-out"));
    }
    for (path, flag) in &targets {
        check_target(path, flag, req.force)?;
    }
    let passphrase = keys::passphrase(req.passphrase_file.as_deref(), secrets, gha)?;
    let protected = passphrase.is_some();
    rec.input("uid", &req.uid)
        .input("cipher", req.cipher.as_str())
        .input("protected", protected);

    let key = NewKey::generate(&req.uid, req.cipher, req.expires, passphrase)?;
    let fingerprint = key.fingerprint();
    gha.log(&format!(
        "generated {} key {fingerprint} (signing key {})",
        req.cipher,
        key.signing_key()
    ));

    let mut secret_file = AtomicFile::create_private(&req.out)
        .with_context(|| format!("creating {}", req.out.display()))?;
    secret_file.write_all(&key.secret_key_armored()?)?;
    secret_file
        .commit()
        .with_context(|| format!("writing {}", req.out.display()))?;
    rec.record.artifacts.push(Artifact {
        kind: "secret-key".into(),
        path: Some(req.out.display().to_string()),
        ..Default::default()
    });
    if let Some(p) = &req.public_out {
        write_public(p, &key.public_key_armored()?, &fingerprint.to_string(), rec)?;
    }

    let out = req.out.display().to_string();
    let public = req.public_out.as_ref().map(|p| p.display().to_string());
    let mut outputs = vec![
        ("fingerprint".to_string(), fingerprint.to_string()),
        ("secret-key".to_string(), out.clone()),
    ];
    if let Some(p) = &public {
        outputs.push(("public-key".to_string(), p.clone()));
    }
    Ok(Outcome {
        json: json!({
            "fingerprint": fingerprint.as_str(),
            "signing_key": key.signing_key().as_str(),
            "cipher": req.cipher.as_str(),
            "uid": req.uid,
            "expires": key.expires().map(rfc3339),
            "protected": protected,
            "secret_key": out,
            "public_key": public,
        }),
        outputs,
    })
}

/// Write the public certificate of the signing key the arguments name.
pub fn export(
    out: &Path,
    force: bool,
    key_args: &KeyArgs,
    secrets: &keys::SecretEnv,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<Outcome> {
    check_target(out, "--out", force)?;
    if key_args
        .key_file
        .as_deref()
        .is_some_and(|k| same_path(k, out))
    {
        return Err(bad_input(format!(
            "--out {} is the secret key file (--key-file); the certificate needs a file of its own",
            out.display()
        )));
    }
    let key = keys::load(key_args, secrets, gha)?;
    let fingerprint = key.fingerprint().to_string();
    write_public(out, &key.public_key_armored()?, &fingerprint, rec)?;
    let path = out.display().to_string();
    Ok(Outcome {
        json: json!({
            "fingerprint": fingerprint,
            "signing_key": key.signing_key().as_str(),
            "public_key": path,
        }),
        outputs: vec![
            ("fingerprint".to_string(), fingerprint.clone()),
            ("public-key".to_string(), path),
        ],
    })
}

fn write_public(path: &Path, armored: &[u8], fingerprint: &str, rec: &mut Recorder) -> Result<()> {
    sf_core::fsutil::write_atomic(path, armored)
        .with_context(|| format!("writing {}", path.display()))?;
    rec.record.artifacts.push(Artifact {
        kind: "public-key".into(),
        path: Some(path.display().to_string()),
        size: Some(armored.len() as u64),
        signed_by: Some(fingerprint.to_string()),
        ..Default::default()
    });
    Ok(())
}

/// An output file must not exist (unless `force`) and its folder must.
fn check_target(path: &Path, flag: &str, force: bool) -> Result<()> {
    if path.file_name().is_none() {
        return Err(bad_input(format!(
            "{flag} {} is not a file name",
            path.display()
        )));
    }
    if let Ok(meta) = path.symlink_metadata() {
        if meta.is_dir() {
            return Err(bad_input(format!(
                "{flag} {} is a directory; give a file name",
                path.display()
            )));
        }
        if !force {
            return Err(bad_input(format!(
                "{flag} {} exists; it was left as it is (pass --force to replace it)",
                path.display()
            )));
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(bad_input(format!(
            "{flag} {}: the folder {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Whether two paths name the same file (as written, or once resolved when both exist).
fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
}
