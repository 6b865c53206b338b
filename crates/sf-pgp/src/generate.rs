//! New signing keys: a certification-only primary key with one signing subkey, made with
//! sequoia's `CertBuilder`, so a local rehearsal (or a first set-up) has a key shaped like the one
//! CI stores, without gpg.
//!
//! The secret key is only ever handed out as bytes to be written to a private file; what callers
//! print is its fingerprint.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use sequoia_openpgp as openpgp;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::Password;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;
use sf_core::bad_input;

use crate::key::Fingerprint;

/// The public-key algorithm of a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Cipher {
    /// EdDSA over Curve25519: small, fast, what current gpg makes by default.
    #[default]
    Ed25519,
    /// 4096-bit RSA, for verifiers that do not know EdDSA.
    Rsa4096,
}

impl Cipher {
    pub const NAMES: [&'static str; 2] = ["ed25519", "rsa4096"];

    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Ed25519 => "ed25519",
            Cipher::Rsa4096 => "rsa4096",
        }
    }

    fn suite(self) -> CipherSuite {
        match self {
            Cipher::Ed25519 => CipherSuite::Cv25519,
            Cipher::Rsa4096 => CipherSuite::RSA4k,
        }
    }
}

impl FromStr for Cipher {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" | "cv25519" => Ok(Cipher::Ed25519),
            "rsa4096" | "rsa4k" => Ok(Cipher::Rsa4096),
            _ => Err(bad_input(format!(
                "{s:?} is not a key algorithm; valid: {}",
                Cipher::NAMES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a new key stays valid: a number and a unit (`s`, `m`, `h`, `d`, `w`, `y`), or `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Validity(Option<Duration>);

impl Validity {
    pub const NEVER: Validity = Validity(None);

    pub fn duration(self) -> Option<Duration> {
        self.0
    }
}

impl FromStr for Validity {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        if t == "never" || t == "0" {
            return Ok(Validity::NEVER);
        }
        let invalid = || {
            bad_input(format!(
                "{s:?} is not a validity period; use a number and a unit s, m, h, d, w or y (e.g. 1d, 12h, 2y), or never"
            ))
        };
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| invalid())?;
        let secs: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            _ => return Err(invalid()),
        };
        // OpenPGP stores validity as a 32-bit count of seconds.
        match n.checked_mul(secs) {
            Some(total) if total > 0 && total <= u64::from(u32::MAX) => {
                Ok(Validity(Some(Duration::from_secs(total))))
            }
            _ => Err(bad_input(format!(
                "{s:?} is out of range: a key is valid for 1 second up to about 136 years"
            ))),
        }
    }
}

/// A freshly made key. Its `Debug` shows only which key it is.
pub struct NewKey {
    cert: Cert,
    expires: Option<SystemTime>,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .finish()
    }
}

impl NewKey {
    /// Make a key for `uid`: a certification-only primary key and one signing subkey, both valid
    /// for `validity`, the secret parts encrypted with `passphrase` if one is given.
    pub fn generate(
        uid: &str,
        cipher: Cipher,
        validity: Validity,
        passphrase: Option<Password>,
    ) -> Result<Self> {
        if uid.trim().is_empty() {
            return Err(bad_input(
                "the user ID is empty; give one like \"Name <email>\"",
            ));
        }
        let created = SystemTime::now();
        let (cert, _revocation) = CertBuilder::new()
            .set_creation_time(created)
            .add_userid(uid)
            .set_cipher_suite(cipher.suite())
            .set_validity_period(validity.duration())
            .add_signing_subkey()
            .set_password(passphrase)
            .generate()?;
        Ok(NewKey {
            cert,
            expires: validity.duration().map(|d| created + d),
        })
    }

    /// The primary key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::from(&self.cert.fingerprint())
    }

    /// The signing subkey's fingerprint.
    pub fn signing_key(&self) -> Fingerprint {
        let sub = self
            .cert
            .keys()
            .subkeys()
            .next()
            .expect("the builder adds one signing subkey");
        Fingerprint::from(&sub.key().fingerprint())
    }

    /// When the key stops being valid, if ever.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// The secret key, ASCII-armoured (what `gpg --export-secret-keys --armor` gives). Secret.
    pub fn secret_key_armored(&self) -> Result<Vec<u8>> {
        self.cert.as_tsk().armored().to_vec()
    }

    /// The public certificate, ASCII-armoured.
    pub fn public_key_armored(&self) -> Result<Vec<u8>> {
        self.cert
            .clone()
            .strip_secret_key_material()
            .armored()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    #[test]
    fn validity_periods_parse_or_say_what_is_valid() {
        assert_eq!(
            "1d".parse::<Validity>().unwrap().duration(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            "12H".parse::<Validity>().unwrap().duration(),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!("never".parse::<Validity>().unwrap(), Validity::NEVER);
        for bad in ["", "d", "1", "1x", "-1d", "1.5d", "200y"] {
            let e = bad.parse::<Validity>().unwrap_err();
            assert_eq!(sf_core::exit::code_for(&e), 2, "{bad}");
        }
        assert!("x25519"
            .parse::<Cipher>()
            .unwrap_err()
            .to_string()
            .contains("ed25519, rsa4096"));
    }

    #[test]
    fn a_new_key_loads_as_a_signing_key_with_or_without_a_passphrase() {
        let k = NewKey::generate(
            "T <t@example.invalid>",
            Cipher::Ed25519,
            "1d".parse().unwrap(),
            None,
        )
        .unwrap();
        let loaded = SigningKey::load(&k.secret_key_armored().unwrap(), None, None).unwrap();
        assert_eq!(loaded.fingerprint(), &k.fingerprint());
        assert_eq!(loaded.signing_key(), &k.signing_key());
        assert!(k.expires().is_some());
        let public = String::from_utf8(k.public_key_armored().unwrap()).unwrap();
        assert!(public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));

        let pw: Password = "pw".into();
        let k = NewKey::generate("T", Cipher::Ed25519, Validity::NEVER, Some(pw.clone())).unwrap();
        let secret = k.secret_key_armored().unwrap();
        assert!(SigningKey::load(&secret, None, None).is_err());
        SigningKey::load(&secret, Some(&pw), None).unwrap();
        assert!(k.expires().is_none());
        assert!(format!("{k:?}").contains(k.fingerprint().as_str()));
    }
}
