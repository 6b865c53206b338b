//! Which signatures a publish accepts: made by the expected key, checked with sf-pgp before
//! anything is uploaded.
//!
//! The expected key is a fingerprint (`--fingerprint` / `SF_SIGNING_FINGERPRINT`) and the
//! certificates come from `--cert` files or, for a mirror, from the key the mirror itself publishes
//! under that fingerprint (`v3/manifests/key/<FPR>.key.manifest.json`). A valid signature by any
//! other key is refused, like a missing one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use sf_core::env;
use sf_core::exit::bad_input;
use sf_pgp::{Certs, KeyPin};

/// The trust flags.
#[derive(Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Certificate (public key) file(s) to trust; for a mirror, the key it publishes is used when
    /// none is given.
    #[arg(long = "cert", value_name = "FILE")]
    pub certs: Vec<PathBuf>,
    /// The key that must have signed: fingerprint or 16-digit key ID.
    #[arg(long, env = env::SIGNING_FINGERPRINT, value_name = "FPR")]
    pub fingerprint: Option<String>,
}

/// Certificates narrowed to the expected key.
#[derive(Clone, Debug)]
pub struct Trust {
    certs: Certs,
    pin: Option<KeyPin>,
}

impl Trust {
    /// From the flags, with the certificates a mirror publishes as the fallback source.
    pub fn load(
        args: &TrustArgs,
        published: impl FnOnce(&KeyPin) -> Result<Option<Vec<u8>>>,
    ) -> Result<Self> {
        let pin = args.fingerprint.as_deref().map(KeyPin::parse).transpose()?;
        let mut certs = Certs::default();
        for f in &args.certs {
            let bytes = std::fs::read(f)
                .map_err(|e| bad_input(format!("certificate file {}: {e}", f.display())))?;
            certs.extend(
                Certs::parse(&bytes)
                    .with_context(|| format!("certificate file {}", f.display()))?,
            );
        }
        if certs.is_empty() {
            let Some(pin) = &pin else {
                return Err(bad_input(format!(
                    "no key to check signatures with: give --fingerprint (or {}) and, unless the mirror publishes that key, --cert FILE; or --allow-unsigned",
                    env::SIGNING_FINGERPRINT
                )));
            };
            let bytes = published(pin)?.ok_or_else(|| {
                bad_input(format!("the source does not publish key {pin} (v3/manifests/key/{pin}.key.manifest.json); give --cert FILE"))
            })?;
            certs = Certs::parse(&bytes).context("the key the source mirror publishes")?;
        }
        let certs = match &pin {
            Some(p) => certs.pinned(p)?,
            None => certs,
        };
        Ok(Trust { certs, pin })
    }

    /// Check a cleartext-signed document; returns the signer's fingerprint.
    pub fn check_clearsigned(&self, what: &str, document: &[u8]) -> Result<String> {
        let (v, _) = sf_pgp::verify::verify_cleartext(&self.certs, document).map_err(|e| {
            bad_input(format!(
                "{what}: signature check failed: {e:#}{}",
                self.expected()
            ))
        })?;
        Ok(v.signer.to_string())
    }

    /// Check a detached signature over a file; returns the signer's fingerprint.
    pub fn check_detached(&self, what: &str, data: &Path, signature: &[u8]) -> Result<String> {
        let f = std::fs::File::open(data).with_context(|| format!("opening {}", data.display()))?;
        let v = sf_pgp::verify::verify_detached(&self.certs, std::io::BufReader::new(f), signature)
            .map_err(|e| {
                bad_input(format!(
                    "{what}: signature check failed: {e:#}{}",
                    self.expected()
                ))
            })?;
        Ok(v.signer.to_string())
    }

    /// The armoured public certificate of a signer this trust accepted (its primary fingerprint,
    /// as the checks return it).
    pub fn public_key(&self, signer: &str) -> Option<Vec<u8>> {
        self.certs.armored(signer)
    }

    fn expected(&self) -> String {
        match &self.pin {
            Some(p) => format!(" (expected a signature by {p})"),
            None => String::new(),
        }
    }
}
