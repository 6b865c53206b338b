//! The signing key: decode what the pipeline was given, pick the (sub)key that can sign now, unlock
//! it, and refuse with a reason when it cannot be used.
//!
//! CI stores the secret key as ASCII armour, as base64 of the armour, or as base64 of the binary
//! key; all three are accepted. Errors say which key (by fingerprint) and why, never the key itself.

use std::fmt;
use std::time::SystemTime;

use anyhow::Result;
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::key::PublicParts;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::types::{HashAlgorithm, RevocationStatus};
use openpgp::{Cert, KeyID};
use sf_core::bad_input;

use crate::policy;

/// An OpenPGP fingerprint as gpg prints it: uppercase hex, no spaces (40 digits for v4 keys, 64 for
/// v6). It names key manifests in a build cache and is what a signature is pinned to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Parse a full fingerprint (spaces and a `0x` prefix allowed, any case).
    pub fn parse(s: &str) -> Result<Self> {
        match KeyPin::parse(s)? {
            KeyPin::Fingerprint(f) => Ok(f),
            KeyPin::KeyId(_) => Err(bad_input(format!(
                "{s:?} is a 16-digit key ID; a full fingerprint (40 or 64 hex digits) is needed here"
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&openpgp::Fingerprint> for Fingerprint {
    fn from(f: &openpgp::Fingerprint) -> Self {
        Fingerprint(f.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which key must be used or must have signed: a full fingerprint, or a 16-digit key ID (the seeds
/// publish `DFB92630BCA5AB71`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPin {
    Fingerprint(Fingerprint),
    KeyId(String),
}

impl KeyPin {
    pub fn parse(s: &str) -> Result<Self> {
        let t: String = s
            .trim()
            .trim_start_matches("0x")
            .trim_start_matches("0X")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let t = t.to_ascii_uppercase();
        if !t.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad_input(format!("{s:?} is not a key fingerprint: use hex digits, e.g. DFB92630BCA5AB71 or a 40-digit fingerprint")));
        }
        match t.len() {
            16 => Ok(KeyPin::KeyId(t)),
            40 | 64 => Ok(KeyPin::Fingerprint(Fingerprint(t))),
            n => Err(bad_input(format!(
                "{s:?} has {n} hex digits; a fingerprint has 40 (v4) or 64 (v6), a key ID 16"
            ))),
        }
    }

    /// Whether a key with this fingerprint is the pinned one. Callers pass primary fingerprints:
    /// a pin names a certificate by its primary key.
    pub fn matches(&self, fpr: &openpgp::Fingerprint) -> bool {
        match self {
            KeyPin::Fingerprint(f) => f.0 == fpr.to_hex(),
            KeyPin::KeyId(id) => KeyID::from(fpr).to_hex() == *id,
        }
    }
}

impl fmt::Display for KeyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPin::Fingerprint(fp) => write!(f, "{fp}"),
            KeyPin::KeyId(id) => f.write_str(id),
        }
    }
}

/// A secret key, unlocked and checked, ready to sign.
pub struct SigningKey {
    /// The certificate without secret material (what gets published).
    cert: Cert,
    keypair: KeyPair,
    fingerprint: Fingerprint,
    signing_key: Fingerprint,
    hash: HashAlgorithm,
}

impl fmt::Debug for SigningKey {
    // Never the secret: only which key it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint)
            .field("signing_key", &self.signing_key)
            .field("hash", &self.hash)
            .finish()
    }
}

/// Hash algorithms a signature may use, strongest first; SHA-256 is the floor.
const ACCEPTABLE_HASHES: [HashAlgorithm; 3] = [
    HashAlgorithm::SHA512,
    HashAlgorithm::SHA384,
    HashAlgorithm::SHA256,
];

impl SigningKey {
    /// Load a secret key from what the pipeline was given (armoured, base64 of armoured or of
    /// binary, or binary), unlock it with the passphrase if it is protected, and pick the signing
    /// (sub)key valid now. With a pin, the certificate whose primary key matches it is used; none
    /// matching is an error, and so is a pin naming a subkey (it says which primary key to pin).
    pub fn load(
        material: &[u8],
        passphrase: Option<&Password>,
        pin: Option<&KeyPin>,
    ) -> Result<Self> {
        Self::load_at(material, passphrase, pin, SystemTime::now())
    }

    /// [`SigningKey::load`] as of a given time.
    pub fn load_at(
        material: &[u8],
        passphrase: Option<&Password>,
        pin: Option<&KeyPin>,
        now: SystemTime,
    ) -> Result<Self> {
        let bytes = decode_key_material(material)?;
        let mut certs = Vec::new();
        for c in CertParser::from_bytes(&bytes).map_err(|_| not_a_key())? {
            certs.push(c.map_err(|e| bad_input(format!("the secret key could not be read: {e}")))?);
        }
        if certs.is_empty() {
            return Err(not_a_key());
        }
        let (secret, public): (Vec<Cert>, Vec<Cert>) = certs.into_iter().partition(|c| c.is_tsk());
        if secret.is_empty() {
            let fprs: Vec<String> = public.iter().map(|c| c.fingerprint().to_hex()).collect();
            return Err(bad_input(format!(
                "the key given holds only public keys ({}); signing needs the secret key (gpg --export-secret-keys --armor)",
                fprs.join(", ")
            )));
        }
        // The pin names the primary key (what gpg --list-keys shows first), never a subkey.
        let candidates: Vec<Cert> = match pin {
            Some(pin) => {
                let (kept, others): (Vec<Cert>, Vec<Cert>) = secret
                    .into_iter()
                    .partition(|c| pin.matches(&c.fingerprint()));
                if kept.is_empty() {
                    if let Some(err) = subkey_pin_error(pin, &others) {
                        return Err(err);
                    }
                }
                kept
            }
            None => secret,
        };
        let cert = match (candidates.len(), pin) {
            (1, _) => candidates.into_iter().next().expect("one"),
            (0, Some(pin)) => {
                return Err(bad_input(format!(
                    "the secret key given is not the pinned key {pin} (--fingerprint / SF_SIGNING_FINGERPRINT)"
                )))
            }
            (n, _) => {
                let fprs: Vec<String> = candidates.iter().map(|c| c.fingerprint().to_hex()).collect();
                return Err(bad_input(format!(
                    "the key given holds {n} secret keys ({}); choose one with --fingerprint",
                    fprs.join(", ")
                )));
            }
        };
        let fingerprint = Fingerprint::from(&cert.fingerprint());

        let vc = cert
            .with_policy(policy(), now)
            .map_err(|e| bad_input(format!("key {fingerprint} is not usable now: {e}")))?;
        if let RevocationStatus::Revoked(_) = vc.revocation_status() {
            return Err(bad_input(format!(
                "key {fingerprint} is revoked; a revoked key must not sign"
            )));
        }
        if vc.alive().is_err() {
            let when = vc
                .primary_key()
                .key_expiration_time()
                .map(|t| format!(" on {}", humantime_rfc3339(t)))
                .unwrap_or_default();
            return Err(bad_input(format!(
                "key {fingerprint} expired{when}; extend it or use another key"
            )));
        }

        // The signing-capable keys valid now; when there is none, why each key cannot sign.
        let usable: Vec<_> = vc
            .keys()
            .for_signing()
            .filter(|ka| {
                ka.alive().is_ok()
                    && !matches!(ka.revocation_status(), RevocationStatus::Revoked(_))
            })
            .collect();
        if usable.is_empty() {
            let reasons: Vec<String> = vc.keys().map(|ka| unusable_reason(&ka, now)).collect();
            let what = if vc.keys().for_signing().next().is_none() {
                "no signing-capable (sub)key"
            } else {
                "no signing (sub)key valid now"
            };
            return Err(bad_input(format!(
                "key {fingerprint} has {what}: {}; add a new signing subkey (gpg --quick-add-key {fingerprint} ed25519 sign)",
                reasons.join("; ")
            )));
        }
        // The newest one (a rotated-in subkey replaces the old one).
        let chosen = usable
            .iter()
            .max_by_key(|ka| ka.key().creation_time())
            .expect("non-empty");
        let signing_key = Fingerprint::from(&chosen.key().fingerprint());
        let secret_key = cert
            .keys()
            .secret()
            .find(|k| k.key().fingerprint() == chosen.key().fingerprint())
            .map(|k| k.key().clone())
            .filter(|k| k.has_secret())
            .ok_or_else(|| {
                bad_input(format!(
                    "the secret part of signing key {signing_key} (of {fingerprint}) is not in the key given (a gpg stub?)"
                ))
            })?;
        let secret_key = if secret_key.secret().is_encrypted() {
            let Some(pw) = passphrase else {
                return Err(bad_input(format!(
                    "key {fingerprint} is protected by a passphrase; set GPG_PASSPHRASE or --passphrase-file"
                )));
            };
            secret_key
                .decrypt_secret(pw)
                .map_err(|_| bad_input(format!("wrong passphrase for key {fingerprint}")))?
        } else {
            secret_key
        };
        let keypair = secret_key
            .into_keypair()
            .map_err(|e| bad_input(format!("signing key {signing_key} cannot be used: {e}")))?;

        // The strongest hash the key's preferences list (gpg does the same), SHA-512 otherwise.
        let prefs = vc.preferred_hash_algorithms().unwrap_or(&[]);
        let hash = prefs
            .iter()
            .find(|h| ACCEPTABLE_HASHES.contains(h) && h.is_supported())
            .copied()
            .unwrap_or(HashAlgorithm::SHA512);

        Ok(SigningKey {
            cert: cert.strip_secret_key_material(),
            keypair,
            fingerprint,
            signing_key,
            hash,
        })
    }

    /// The primary key's fingerprint (what names the key in a mirror).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The (sub)key that makes the signatures.
    pub fn signing_key(&self) -> &Fingerprint {
        &self.signing_key
    }

    /// The hash algorithm signatures use.
    pub fn hash_algorithm(&self) -> HashAlgorithm {
        self.hash
    }

    /// Its OpenPGP text name (`SHA512`), as in a `Hash:` header.
    pub fn hash_name(&self) -> String {
        self.hash
            .text_name()
            .map(str::to_string)
            .unwrap_or_else(|_| self.hash.to_string())
    }

    /// The public certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// The public certificate, ASCII-armoured (what `gpg --export --armor` gives).
    pub fn public_key_armored(&self) -> Result<Vec<u8>> {
        self.cert.armored().to_vec()
    }

    pub(crate) fn keypair(&self) -> KeyPair {
        self.keypair.clone()
    }
}

/// Why a key of a certificate cannot sign now, naming it: "signing subkey FPR expired on DATE",
/// "... revoked", "... not valid before DATE", or "subkey FPR not signing-capable".
fn unusable_reason(ka: &ValidErasedKeyAmalgamation<'_, PublicParts>, now: SystemTime) -> String {
    let fpr = ka.key().fingerprint();
    let role = if ka.primary() {
        "primary key"
    } else {
        "subkey"
    };
    if !ka.for_signing() {
        return format!("{role} {fpr} not signing-capable");
    }
    let what = if ka.primary() {
        "signing primary key"
    } else {
        "signing subkey"
    };
    if let RevocationStatus::Revoked(sigs) = ka.revocation_status() {
        let why = sigs
            .iter()
            .find_map(|s| s.reason_for_revocation())
            .map(|(code, text)| {
                let text = String::from_utf8_lossy(text);
                let text = text.trim();
                if text.is_empty() {
                    format!(" ({code})")
                } else {
                    format!(" ({code}: {text})")
                }
            })
            .unwrap_or_default();
        return format!("{what} {fpr} revoked{why}");
    }
    match ka.key_expiration_time() {
        Some(t) if t <= now => format!("{what} {fpr} expired on {}", humantime_rfc3339(t)),
        _ if ka.key().creation_time() > now => format!(
            "{what} {fpr} not valid before {}",
            humantime_rfc3339(ka.key().creation_time())
        ),
        _ => format!("{what} {fpr} not usable now"),
    }
}

/// When a pin names a subkey of one of these certificates rather than a primary key: the error
/// saying so and naming the primary key to pin instead.
pub(crate) fn subkey_pin_error(pin: &KeyPin, certs: &[Cert]) -> Option<anyhow::Error> {
    certs.iter().find_map(|c| {
        c.keys()
            .subkeys()
            .find(|k| pin.matches(&k.key().fingerprint()))
            .map(|k| {
                bad_input(format!(
                    "{pin} is a subkey ({}) of key {}; the fingerprint pins the primary key: use {}",
                    k.key().fingerprint().to_hex(),
                    c.fingerprint().to_hex(),
                    c.fingerprint().to_hex()
                ))
            })
    })
}

fn not_a_key() -> anyhow::Error {
    bad_input("the secret key given is not an OpenPGP key: expected ASCII armour (-----BEGIN PGP PRIVATE KEY BLOCK-----), base64 of it, or a binary key")
}

fn humantime_rfc3339(t: SystemTime) -> String {
    sf_core::record::rfc3339(t)
}

/// Decode key material: ASCII armour and binary pass through (sequoia reads both); anything else is
/// taken as base64 (whitespace ignored) of armour or binary.
pub fn decode_key_material(raw: &[u8]) -> Result<Vec<u8>> {
    let trimmed = trim_ascii(raw);
    if trimmed.is_empty() {
        return Err(bad_input("the secret key given is empty"));
    }
    if trimmed.starts_with(b"-----BEGIN PGP") {
        return Ok(trimmed.to_vec());
    }
    // A binary OpenPGP packet starts with a byte that has the high bit set; base64 text never does.
    if trimmed[0] & 0x80 != 0 {
        return Ok(raw.to_vec());
    }
    let decoded = base64_decode(trimmed).ok_or_else(not_a_key)?;
    let inner = trim_ascii(&decoded);
    if inner.starts_with(b"-----BEGIN PGP") || inner.first().is_some_and(|b| b & 0x80 != 0) {
        Ok(decoded)
    } else {
        Err(not_a_key())
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Standard base64 (RFC 4648, `=` padding optional), whitespace ignored. None if not base64.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut padding = false;
    for &c in text.iter().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            padding = true;
            continue;
        }
        if padding {
            return None;
        }
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::cert::CertBuilder;
    use std::time::Duration;

    fn armored_tsk(cert: &Cert) -> Vec<u8> {
        cert.as_tsk().armored().to_vec().unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    fn ed25519(pw: Option<&str>) -> Cert {
        let mut b = CertBuilder::general_purpose(Some("Test Signer <t@example.invalid>"));
        if let Some(pw) = pw {
            b = b.set_password(Some(pw.into()));
        }
        b.generate().unwrap().0
    }

    #[test]
    fn armoured_base64_and_binary_keys_all_load() {
        let cert = ed25519(None);
        let armored = armored_tsk(&cert);
        let binary = cert.as_tsk().to_vec().unwrap();
        for material in [
            armored.clone(),
            b64(&armored).into_bytes(),
            b64(&binary).into_bytes(),
            binary.clone(),
        ] {
            let k = SigningKey::load(&material, None, None).unwrap();
            assert_eq!(k.fingerprint().as_str(), cert.fingerprint().to_hex());
            assert_ne!(
                k.signing_key(),
                k.fingerprint(),
                "general_purpose certs sign with a subkey"
            );
            assert_eq!(k.hash_name(), "SHA512");
        }
        let mut wrapped = b64(&armored);
        wrapped.insert(10, '\n');
        assert!(SigningKey::load(wrapped.as_bytes(), None, None).is_ok());
    }

    #[test]
    fn garbage_and_public_keys_are_refused_without_echoing_them() {
        for junk in [
            &b""[..],
            b"   ",
            b"hello world",
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nzzzz\n-----END PGP PRIVATE KEY BLOCK-----\n",
        ] {
            let e = SigningKey::load(junk, None, None).unwrap_err();
            assert_eq!(sf_core::exit::code_for(&e), 2);
            assert!(!format!("{e:#}").contains("hello"), "{e:#}");
        }
        let cert = ed25519(None);
        let public = cert.armored().to_vec().unwrap();
        let e = SigningKey::load(&public, None, None).unwrap_err();
        assert!(e.to_string().contains("only public keys"), "{e}");
    }

    #[test]
    fn passphrases_are_required_and_checked() {
        let cert = ed25519(Some("correct horse"));
        let material = armored_tsk(&cert);
        let e = SigningKey::load(&material, None, None).unwrap_err();
        assert!(e.to_string().contains("GPG_PASSPHRASE"), "{e}");
        let e = SigningKey::load(&material, Some(&"wrong".into()), None).unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        assert_eq!(sf_core::exit::code_for(&e), 2);
        SigningKey::load(&material, Some(&"correct horse".into()), None).unwrap();
    }

    #[test]
    fn pins_select_or_refuse() {
        let a = ed25519(None);
        let b = ed25519(None);
        let mut both = armored_tsk(&a);
        both.extend(armored_tsk(&b));
        let e = SigningKey::load(&both, None, None).unwrap_err();
        assert!(e.to_string().contains("2 secret keys"), "{e}");
        let pin = KeyPin::parse(&b.fingerprint().to_hex()).unwrap();
        assert_eq!(
            SigningKey::load(&both, None, Some(&pin))
                .unwrap()
                .fingerprint()
                .as_str(),
            b.fingerprint().to_hex()
        );
        let id = KeyPin::parse(&format!("0x{}", b.keyid().to_hex().to_lowercase())).unwrap();
        assert!(matches!(id, KeyPin::KeyId(_)));
        assert!(SigningKey::load(&both, None, Some(&id)).is_ok());
        let other = KeyPin::parse("DFB92630BCA5AB71").unwrap();
        let e = SigningKey::load(&armored_tsk(&a), None, Some(&other)).unwrap_err();
        assert!(
            e.to_string()
                .contains("not the pinned key DFB92630BCA5AB71"),
            "{e}"
        );
        for bad in ["xyz", "1234", ""] {
            assert!(KeyPin::parse(bad).is_err());
        }
        assert!(Fingerprint::parse("DFB92630BCA5AB71").is_err());
    }

    #[test]
    fn expired_revoked_and_non_signing_keys_are_refused() {
        let now = SystemTime::now();
        let (expiring, _) = CertBuilder::general_purpose(Some("e"))
            .set_creation_time(now - Duration::from_secs(7200))
            .set_validity_period(Duration::from_secs(3600))
            .generate()
            .unwrap();
        let e = SigningKey::load_at(&armored_tsk(&expiring), None, None, now).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");

        let (cert, rev) = CertBuilder::general_purpose(Some("r")).generate().unwrap();
        let revoked = cert.insert_packets(rev).unwrap().0;
        let e = SigningKey::load(&armored_tsk(&revoked), None, None).unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");

        let (enc_only, _) = CertBuilder::new()
            .add_userid("enc")
            .set_primary_key_flags(openpgp::types::KeyFlags::empty().set_certification())
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let e = SigningKey::load(&armored_tsk(&enc_only), None, None).unwrap_err();
        assert!(e.to_string().contains("no signing-capable"), "{e}");
    }

    #[test]
    fn a_pin_names_the_primary_key_and_a_subkey_pin_says_which_primary_to_use() {
        let cert = ed25519(None);
        let sub = cert.keys().subkeys().next().unwrap().key().fingerprint();
        let pin = KeyPin::parse(&sub.to_hex()).unwrap();
        let e = SigningKey::load(&armored_tsk(&cert), None, Some(&pin)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("is a subkey") && msg.contains(&cert.fingerprint().to_hex()),
            "{msg}"
        );
        assert_eq!(sf_core::exit::code_for(&e), 2);
        let id = KeyPin::parse(&KeyID::from(&sub).to_hex()).unwrap();
        assert!(SigningKey::load(&armored_tsk(&cert), None, Some(&id))
            .unwrap_err()
            .to_string()
            .contains("is a subkey"));
        let certs = crate::Certs::from_cert(cert.clone());
        let e = certs.pinned(&pin).unwrap_err().to_string();
        assert!(
            e.contains("is a subkey") && e.contains(&cert.fingerprint().to_hex()),
            "{e}"
        );
    }

    #[test]
    fn unusable_signing_subkeys_are_named_with_why() {
        let now = SystemTime::now();
        let (cert, _) = CertBuilder::new()
            .set_creation_time(now - Duration::from_secs(7200))
            .add_userid("s")
            .add_subkey(
                openpgp::types::KeyFlags::empty().set_signing(),
                Duration::from_secs(3600),
                None,
            )
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let primary = cert.fingerprint().to_hex();
        let keys: Vec<_> = cert
            .keys()
            .subkeys()
            .map(|k| k.key().fingerprint())
            .collect();
        let e = SigningKey::load_at(&armored_tsk(&cert), None, None, now).unwrap_err();
        let msg = e.to_string();
        let expiry = sf_core::record::rfc3339(now - Duration::from_secs(3600));
        assert!(
            msg.contains(&format!("signing subkey {} expired on {expiry}", keys[0])),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("primary key {primary} not signing-capable")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("subkey {} not signing-capable", keys[1])),
            "{msg}"
        );
        assert_eq!(sf_core::exit::code_for(&e), 2);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = SigningKey::load(&armored_tsk(&ed25519(None)), None, None).unwrap();
        let d = format!("{k:?}");
        assert!(d.contains("fingerprint") && !d.contains("secret:"), "{d}");
    }
}
