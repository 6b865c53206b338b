//! Where keys come from: the secret key and passphrase (environment or files, masked in Actions)
//! for signing, and the trusted certificates and pin for verifying.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sf_core::bad_input;
use sf_core::env;
use sf_core::exit::ResultExt;
use sf_core::gha::Actions;
use sf_pgp::{Certs, KeyPin, Password, SigningKey};

use crate::{KeyArgs, TrustArgs};

/// The secrets the environment holds. Read once in `main`; tests build their own.
#[derive(Clone, Default)]
pub struct SecretEnv {
    pub private_key: Option<String>,
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEnv")
            .field("private_key", &self.private_key.as_ref().map(|_| "<set>"))
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl SecretEnv {
    /// `GPG_PRIVATE_KEY` and `GPG_PASSPHRASE`, empty values counting as unset.
    pub fn from_process() -> Self {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        SecretEnv {
            private_key: get(env::GPG_PRIVATE_KEY),
            passphrase: get(env::GPG_PASSPHRASE),
        }
    }
}

/// Load the signing key the arguments and environment name, masking the secrets first.
pub fn load(args: &KeyArgs, secrets: &SecretEnv, gha: &Actions) -> Result<SigningKey> {
    let material: Vec<u8> = match (&args.key_file, &secrets.private_key) {
        (Some(path), _) => fs::read(path).bad_input(format!(
            "cannot read the secret key file {} (--key-file)",
            path.display()
        ))?,
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => {
            return Err(bad_input(format!(
                "no secret key: set {} (ASCII armour or base64) or pass --key-file",
                env::GPG_PRIVATE_KEY
            )))
        }
    };
    if let Ok(text) = std::str::from_utf8(&material) {
        gha.mask(text);
    }
    let passphrase = passphrase(args.passphrase_file.as_deref(), secrets, gha)?;
    let pin = args.fingerprint.as_deref().map(KeyPin::parse).transpose()?;
    let key = SigningKey::load(&material, passphrase.as_ref(), pin.as_ref())?;
    gha.log(&format!(
        "signing with key {} (signing key {}, {})",
        key.fingerprint(),
        key.signing_key(),
        key.hash_name()
    ));
    Ok(key)
}

/// The passphrase from `--passphrase-file` or `GPG_PASSPHRASE`, masked in Actions. An empty one
/// counts as none.
pub fn passphrase(
    file: Option<&Path>,
    secrets: &SecretEnv,
    gha: &Actions,
) -> Result<Option<Password>> {
    let passphrase: Option<String> = match (file, &secrets.passphrase) {
        (Some(path), _) => {
            let text = fs::read_to_string(path).bad_input(format!(
                "cannot read the passphrase file {} (--passphrase-file)",
                path.display()
            ))?;
            // One trailing line break is how files end, not part of the passphrase.
            let text = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            Some(text.to_string())
        }
        (None, p) => p.clone(),
    };
    if let Some(p) = &passphrase {
        gha.mask(p);
    }
    Ok(passphrase.filter(|p| !p.is_empty()).map(Password::from))
}

/// The certificates given with `--cert` (if any) and the pin (if any).
pub fn trust(args: &TrustArgs) -> Result<(Option<Certs>, Option<KeyPin>)> {
    let pin = args.fingerprint.as_deref().map(KeyPin::parse).transpose()?;
    if args.certs.is_empty() {
        return Ok((None, pin));
    }
    let mut certs = Certs::default();
    for path in &args.certs {
        let bytes = fs::read(path).bad_input(format!(
            "cannot read the certificate {} (--cert)",
            path.display()
        ))?;
        let c = Certs::parse(&bytes).bad_input(format!("{} (--cert)", path.display()))?;
        certs.extend(c);
    }
    let certs = match &pin {
        Some(p) => certs.pinned(p)?,
        None => certs,
    };
    Ok((Some(certs), pin))
}

/// Trusted certificates for file and sums verification: the `--cert` files, or else the
/// certificate of the `--fingerprint` key, found by [`find_certs`] from the folders given (those
/// of what is verified). Returns them and where they came from.
pub fn certs_for(args: &TrustArgs, folders: &[PathBuf]) -> Result<(Certs, Vec<String>)> {
    match trust(args)? {
        (Some(c), _) => Ok((
            c,
            args.certs.iter().map(|p| p.display().to_string()).collect(),
        )),
        (None, Some(pin)) => {
            // Beside what is verified, then the keys/ folder of the bucket it lies in.
            let mut dirs = folders.to_vec();
            dirs.extend(
                bucket_roots(folders)
                    .into_iter()
                    .map(|r| r.join(sf_core::layout::KEYS_DIR)),
            );
            find_certs(&pin, &dirs, GPG)
        }
        (None, None) => match bucket_key(folders)? {
            Some(found) => Ok(found),
            None => Err(bad_input(format!(
                "verifying needs the signer's key: --fingerprint FPR (its certificate is looked up beside what is verified, then in the gpg keyring), --cert FILE, or a bucket that publishes it ({} above what is verified)",
                sf_core::layout::SIGNING_KEY
            ))),
        },
    }
}

/// The folders above `folders` (themselves included) that are the root of a bucket publishing
/// its signing key (`keys/signing-key.fingerprint`): a file:// destination, or a copy of one.
fn bucket_roots(folders: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for f in folders {
        let start = f.canonicalize().unwrap_or_else(|_| f.clone());
        for anc in start.ancestors() {
            if anc.join(sf_core::layout::SIGNING_KEY_FINGERPRINT).is_file()
                && !roots.iter().any(|r| r == anc)
            {
                roots.push(anc.to_path_buf());
            }
        }
    }
    roots
}

/// The key a bucket publishes as its current signing key, pinned to the fingerprint it
/// publishes beside it: what someone holding only the bucket can verify with.
fn bucket_key(folders: &[PathBuf]) -> Result<Option<(Certs, Vec<String>)>> {
    let Some(root) = bucket_roots(folders).into_iter().next() else {
        return Ok(None);
    };
    let fpr_file = root.join(sf_core::layout::SIGNING_KEY_FINGERPRINT);
    let key_file = root.join(sf_core::layout::SIGNING_KEY);
    let fpr =
        fs::read_to_string(&fpr_file).bad_input(format!("cannot read {}", fpr_file.display()))?;
    let pin = KeyPin::parse(fpr.trim())
        .map_err(|e| bad_input(format!("{}: {e:#}", fpr_file.display())))?;
    let bytes = fs::read(&key_file).bad_input(format!("cannot read {}", key_file.display()))?;
    let certs = Certs::parse(&bytes)
        .bad_input(format!("{}", key_file.display()))?
        .pinned(&pin)?;
    Ok(Some((
        certs,
        vec![format!(
            "{} ({pin}, as the bucket publishes it)",
            key_file.display()
        )],
    )))
}

/// The gpg program the keyring lookup runs.
const GPG: &str = "gpg";

/// Largest file taken for a certificate (a certificate is a few KiB; tarballs are not read).
const MAX_CERT_FILE: u64 = 1 << 20;

/// Find the certificate of a pinned key without `--cert`, the way a user keeps it:
/// 1. public-key files in the given folders: `*.asc` or `*.pub`, up to 1 MiB, holding an OpenPGP
///    certificate (what `sf-sign key export` or `gpg --export --armor` writes; signatures are
///    skipped);
/// 2. only if none matches, the gpg keyring (`gpg --export FPR`; `GNUPGHOME` is honoured), when
///    gpg is installed.
///
/// Only certificates whose primary key is the pinned one are kept. None found is bad input naming
/// every place looked in.
pub fn find_certs(pin: &KeyPin, folders: &[PathBuf], gpg: &str) -> Result<(Certs, Vec<String>)> {
    let mut seen = Certs::default();
    let mut sources = Vec::new();
    let mut looked = Vec::new();
    let mut dirs: Vec<&PathBuf> = Vec::new();
    for d in folders {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    for dir in dirs {
        looked.push(format!("*.asc and *.pub files in {}", dir.display()));
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "asc" || x == "pub")
                    && fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MAX_CERT_FILE)
            })
            .collect();
        paths.sort();
        for path in paths {
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            // Signatures and other files that are not certificates are not what is looked for.
            let Ok(certs) = Certs::parse(&bytes) else {
                continue;
            };
            keep(
                certs,
                pin,
                path.display().to_string(),
                &mut seen,
                &mut sources,
            );
        }
    }
    if sources.is_empty() {
        looked.push(format!("the gpg keyring (gpg --export {pin})"));
        match std::process::Command::new(gpg)
            .args(["--batch", "--no-tty", "--export"])
            .arg(pin.to_string())
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() && !out.stdout.is_empty() => {
                if let Ok(certs) = Certs::parse(&out.stdout) {
                    keep(
                        certs,
                        pin,
                        format!("gpg keyring ({pin})"),
                        &mut seen,
                        &mut sources,
                    );
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(last) = looked.last_mut() {
                    last.push_str(": gpg is not installed");
                }
            }
            Err(e) => {
                if let Some(last) = looked.last_mut() {
                    last.push_str(&format!(": gpg did not run ({e})"));
                }
            }
        }
    }
    if sources.is_empty() {
        // A pin naming a subkey of a certificate that was found: say which primary to pin.
        if seen.has_key(pin) {
            seen.pinned(pin)?;
        }
        return Err(bad_input(format!(
            "no certificate for key {pin} found; looked in {}. Pass --cert FILE, or put the public key (sf-sign key export, gpg --export --armor) beside what is verified",
            looked.join(", ")
        )));
    }
    Ok((seen.pinned(pin)?, sources))
}

/// Keep what one source (a file, the keyring's export) holds of the pinned key, noting the
/// source when it holds the pinned primary; a certificate where the pin names only a subkey is
/// kept too, so the error can name the primary to pin.
fn keep(certs: Certs, pin: &KeyPin, source: String, seen: &mut Certs, sources: &mut Vec<String>) {
    if let Ok(kept) = certs.pinned(pin) {
        seen.extend(kept);
        sources.push(source);
    } else if certs.has_key(pin) {
        seen.extend(certs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_gpg_the_lookup_says_so_and_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.asc"), "not a key").unwrap();
        let pin = KeyPin::parse("DFB92630BCA5AB71").unwrap();
        let e = find_certs(
            &pin,
            &[dir.path().to_path_buf()],
            "/nonexistent/sf-sign-test/gpg",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("no certificate for key DFB92630BCA5AB71 found")
                && msg.contains(&dir.path().display().to_string())
                && msg.contains("gpg is not installed"),
            "{msg}"
        );
        assert_eq!(sf_core::exit::code_for(&e), 2);
    }
}
