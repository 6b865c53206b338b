//! Where keys come from: the secret key and passphrase (environment or files, masked in Actions)
//! for signing, and the trusted certificates and pin for verifying.

use std::fs;
use std::path::Path;

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

/// Trusted certificates for file and sums verification, where `--cert` is required.
pub fn required_certs(args: &TrustArgs) -> Result<Certs> {
    match trust(args)? {
        (Some(c), _) => Ok(c),
        (None, _) => Err(bad_input("verifying needs the signer's certificate: pass --cert FILE (and --fingerprint to pin it)")),
    }
}
