//! Checking signatures against known certificates, and saying which key made them.
//!
//! "A valid signature" is not enough: the caller passes only the certificates it trusts (a
//! certificate file, or the key a fingerprint pins), and gets back the primary fingerprint of the
//! key that signed, so it can compare it with what it expected. A failed check is a failure of the
//! work (exit 1) whose message names the reason: bad signature, unknown key, expired key.

use std::io::Read;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, GoodChecksum, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper, VerifierBuilder,
};
use openpgp::parse::Parse;
use openpgp::{Cert, KeyHandle};
use sf_core::bad_input;

use crate::key::{Fingerprint, KeyPin};
use crate::policy;

/// The public certificates a signature may be made by.
#[derive(Clone, Debug, Default)]
pub struct Certs(Vec<Cert>);

impl Certs {
    /// Read certificates (armoured or binary, one or more, secret parts dropped).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut certs = Vec::new();
        let parser = CertParser::from_bytes(bytes)
            .map_err(|e| bad_input(format!("not an OpenPGP certificate: {e}")))?;
        for c in parser {
            let c = c.map_err(|e| bad_input(format!("not an OpenPGP certificate: {e}")))?;
            certs.push(c.strip_secret_key_material());
        }
        if certs.is_empty() {
            return Err(bad_input(
                "no OpenPGP certificate found: expected an armoured or binary public key",
            ));
        }
        Ok(Certs(certs))
    }

    pub fn from_cert(cert: Cert) -> Self {
        Certs(vec![cert.strip_secret_key_material()])
    }

    /// Add the certificates of another set.
    pub fn extend(&mut self, other: Certs) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Primary fingerprints.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.0
            .iter()
            .map(|c| Fingerprint::from(&c.fingerprint()))
            .collect()
    }

    /// The public certificate whose primary fingerprint is `fpr`, ASCII-armoured (as
    /// `gpg --export --armor` gives it).
    pub fn armored(&self, fpr: &str) -> Option<Vec<u8>> {
        use openpgp::serialize::SerializeInto;
        self.0
            .iter()
            .find(|c| Fingerprint::from(&c.fingerprint()).as_str() == fpr)
            .and_then(|c| c.armored().to_vec().ok())
    }

    /// Whether any key of these certificates, primary or subkey, is the pinned one.
    pub fn has_key(&self, pin: &KeyPin) -> bool {
        self.0
            .iter()
            .any(|c| c.keys().any(|k| pin.matches(&k.key().fingerprint())))
    }

    /// The primary fingerprint of the certificate here whose key a cleartext-signed document's
    /// signature names as its maker, whether or not that signature verifies. It tells "our own
    /// signature no longer matches" apart from "signed by someone else"; `None` when no signature
    /// names one of these keys, or the document's signature cannot be read at all.
    pub fn named_signer_of_cleartext(&self, document: &[u8]) -> Option<Fingerprint> {
        let pile = openpgp::PacketPile::from_bytes(document).ok()?;
        let issuers: Vec<KeyHandle> = pile
            .descendants()
            .filter_map(|p| match p {
                openpgp::Packet::Signature(sig) => Some(sig.get_issuers()),
                _ => None,
            })
            .flatten()
            .collect();
        self.0
            .iter()
            .find(|c| {
                c.keys().any(|k| {
                    let handle = k.key().key_handle();
                    issuers.iter().any(|i| i.aliases(&handle))
                })
            })
            .map(|c| Fingerprint::from(&c.fingerprint()))
    }

    /// Only the certificates a pin names by their primary key; none is an error, which says so
    /// when the pin names a subkey.
    pub fn pinned(&self, pin: &KeyPin) -> Result<Certs> {
        let kept: Vec<Cert> = self
            .0
            .iter()
            .filter(|c| pin.matches(&c.fingerprint()))
            .cloned()
            .collect();
        if kept.is_empty() {
            if let Some(err) = crate::key::subkey_pin_error(pin, &self.0) {
                return Err(err);
            }
            let have: Vec<String> = self
                .fingerprints()
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(bad_input(format!(
                "no certificate matches the expected key {pin}; the certificates given are {}",
                have.join(", ")
            )));
        }
        Ok(Certs(kept))
    }
}

/// Who made a good signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Primary fingerprint of the signer's certificate.
    pub signer: Fingerprint,
    /// The (sub)key that made the signature.
    pub key: Fingerprint,
    /// Hash algorithm, OpenPGP text name (`SHA512`).
    pub hash: String,
    pub created: Option<SystemTime>,
}

struct Helper<'a> {
    certs: &'a [Cert],
    good: Option<Verified>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.certs.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let mut failures = Vec::new();
        let mut groups = 0;
        for layer in structure.into_iter() {
            if let MessageLayer::SignatureGroup { results } = layer {
                groups += 1;
                for r in results {
                    match r {
                        Ok(GoodChecksum { sig, ka }) => {
                            if self.good.is_none() {
                                self.good = Some(Verified {
                                    signer: Fingerprint::from(&ka.cert().fingerprint()),
                                    key: Fingerprint::from(&ka.key().fingerprint()),
                                    hash: sig
                                        .hash_algo()
                                        .text_name()
                                        .map(str::to_string)
                                        .unwrap_or_else(|_| sig.hash_algo().to_string()),
                                    created: sig.signature_creation_time(),
                                });
                            }
                        }
                        Err(e) => failures.push(describe(&e, self.certs)),
                    }
                }
            }
        }
        if self.good.is_some() {
            return Ok(());
        }
        if groups == 0 || failures.is_empty() {
            return Err(anyhow!("no signature found"));
        }
        Err(anyhow!("{}", failures.join("; ")))
    }
}

fn describe(e: &VerificationError, certs: &[Cert]) -> String {
    let issuers = |sig: &openpgp::packet::Signature| {
        let v: Vec<String> = sig.get_issuers().iter().map(|h| h.to_hex()).collect();
        if v.is_empty() {
            "an unnamed key".to_string()
        } else {
            v.join("/")
        }
    };
    match e {
        VerificationError::MissingKey { sig } => {
            let trusted: Vec<String> = certs.iter().map(|c| c.fingerprint().to_hex()).collect();
            format!(
                "signed by {}, which is not the expected key ({})",
                issuers(sig),
                trusted.join(", ")
            )
        }
        VerificationError::BadSignature { ka, error, .. } => {
            format!(
                "bad signature by {} (the data or signature was changed): {error}",
                ka.key().fingerprint()
            )
        }
        VerificationError::BadKey { ka, error, .. } => {
            format!(
                "key {} cannot be trusted for this signature: {error}",
                ka.key().fingerprint()
            )
        }
        VerificationError::UnboundKey { cert, error, .. } => {
            format!(
                "key {} is not bound to its certificate: {error}",
                cert.fingerprint()
            )
        }
        VerificationError::MalformedSignature { error, .. } => {
            format!("malformed signature: {error}")
        }
        other => other.to_string(),
    }
}

/// Check a detached signature (armoured or binary) over a stream.
pub fn verify_detached(
    certs: &Certs,
    data: impl Read + Send + Sync,
    signature: &[u8],
) -> Result<Verified> {
    let helper = Helper {
        certs: &certs.0,
        good: None,
    };
    let mut v = DetachedVerifierBuilder::from_bytes(signature)
        .context("the signature is not an OpenPGP signature")?
        .with_policy(policy(), None, helper)
        .map_err(|e| anyhow!("{e}"))?;
    v.verify_reader(data).map_err(|e| anyhow!("{e}"))?;
    v.into_helper()
        .good
        .ok_or_else(|| anyhow!("no valid signature"))
}

/// Check a cleartext-signed document; returns the signer and the signed text.
pub fn verify_cleartext(certs: &Certs, document: &[u8]) -> Result<(Verified, Vec<u8>)> {
    let helper = Helper {
        certs: &certs.0,
        good: None,
    };
    let mut v = VerifierBuilder::from_bytes(document)
        .context("not an OpenPGP signed document")?
        .with_policy(policy(), None, helper)
        .map_err(|e| anyhow!("{e}"))?;
    let mut text = Vec::new();
    v.read_to_end(&mut text).map_err(|e| anyhow!("{e}"))?;
    if !v.message_processed() {
        return Err(anyhow!("the signed document is incomplete"));
    }
    let good = v
        .into_helper()
        .good
        .ok_or_else(|| anyhow!("no valid signature"))?;
    Ok((good, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SigningKey;
    use crate::sign::{clearsign, sign_bytes};
    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;

    fn pair() -> (SigningKey, Certs) {
        let (cert, _) = CertBuilder::general_purpose(Some("t")).generate().unwrap();
        let k = SigningKey::load(&cert.as_tsk().armored().to_vec().unwrap(), None, None).unwrap();
        let certs = Certs::parse(&cert.armored().to_vec().unwrap()).unwrap();
        (k, certs)
    }

    #[test]
    fn detached_round_trip_names_the_signer_and_catches_one_changed_byte() {
        let (k, certs) = pair();
        let data = b"slurm tarball bytes".repeat(1000);
        let sig = sign_bytes(&k, &data).unwrap();
        let v = verify_detached(&certs, &data[..], &sig).unwrap();
        assert_eq!(&v.signer, k.fingerprint());
        assert_eq!(&v.key, k.signing_key());
        assert_eq!(v.hash, "SHA512");
        let mut changed = data.clone();
        changed[500] ^= 1;
        let e = verify_detached(&certs, &changed[..], &sig).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
    }

    #[test]
    fn streams_of_any_length_sign_and_verify() {
        let (k, certs) = pair();
        let block = crate::sign::BLOCK;
        for len in [0, 1, block - 1, block, 3 * block + 5] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let sig = sign_bytes(&k, &data).unwrap();
            verify_detached(&certs, &data[..], &sig).unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        }
    }

    #[test]
    fn another_key_is_not_accepted() {
        let (k, _) = pair();
        let (_, other) = pair();
        let sig = sign_bytes(&k, b"x").unwrap();
        let e = verify_detached(&other, &b"x"[..], &sig).unwrap_err();
        assert!(e.to_string().contains("not the expected key"), "{e}");
        assert!(verify_detached(&other, &b"x"[..], b"garbage").is_err());
    }

    #[test]
    fn cleartext_round_trip_returns_the_text() {
        let (k, certs) = pair();
        let body = b"{\n\"version\":3,\n\"data\":[]\n}";
        let doc = clearsign(&k, body).unwrap();
        let (v, text) = verify_cleartext(&certs, &doc).unwrap();
        assert_eq!(&v.signer, k.fingerprint());
        assert_eq!(text, body);
        let tampered = String::from_utf8(doc)
            .unwrap()
            .replace("\"version\":3", "\"version\":4");
        assert!(verify_cleartext(&certs, tampered.as_bytes()).is_err());
    }

    #[test]
    fn the_named_signer_of_a_broken_signature_is_found_and_anothers_is_not() {
        let (k, certs) = pair();
        let (_, other) = pair();
        let doc = clearsign(&k, b"{\"version\":3}\n").unwrap();
        assert_eq!(
            certs.named_signer_of_cleartext(&doc).as_ref(),
            Some(k.fingerprint())
        );
        // The text changed under the signature: the signature no longer verifies, but it still
        // says it was made by this key.
        let changed = String::from_utf8(doc.clone())
            .unwrap()
            .replace("\"version\":3", "\"version\":4");
        assert!(verify_cleartext(&certs, changed.as_bytes()).is_err());
        assert_eq!(
            certs.named_signer_of_cleartext(changed.as_bytes()).as_ref(),
            Some(k.fingerprint())
        );
        assert_eq!(other.named_signer_of_cleartext(&doc), None);
        assert_eq!(certs.named_signer_of_cleartext(b"{\"version\":3}\n"), None);
    }

    #[test]
    fn pins_filter_certificates() {
        let (k, mut certs) = pair();
        let (_, other) = pair();
        certs.extend(other.clone());
        let pin = KeyPin::Fingerprint(k.fingerprint().clone());
        assert_eq!(
            certs.pinned(&pin).unwrap().fingerprints(),
            vec![k.fingerprint().clone()]
        );
        assert!(other.pinned(&pin).is_err());
        assert!(Certs::parse(b"nope").is_err());
    }

    #[test]
    fn spacks_signed_fixture_verifies_with_its_own_key_and_not_another() {
        let root = sf_testkit::fixture("spack-v3-signed");
        let key = std::fs::read(root.join(
            "blobs/sha256/a6/a6fbfcbffeb03a7171eb795857988d2cb3274ff538e259e2c4a0ee64cbb3c5b9",
        ))
        .unwrap();
        let certs = Certs::parse(&key).unwrap();
        assert_eq!(
            certs.fingerprints()[0].as_str(),
            "756149701D5AF77338F02F92169016E7389B3308"
        );
        let doc = std::fs::read(root.join(
            "v3/manifests/spec/greet/greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json",
        ))
        .unwrap();
        let (v, text) = verify_cleartext(&certs, &doc).unwrap();
        assert_eq!(
            v.signer.as_str(),
            "756149701D5AF77338F02F92169016E7389B3308"
        );
        assert_eq!(v.hash, "SHA512");
        let unsigned = std::fs::read(sf_testkit::fixture(
            "spack-v3-unsigned/v3/manifests/spec/greet/greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json",
        ))
        .unwrap();
        assert_eq!(text, unsigned);
        let (_, other) = pair();
        assert!(verify_cleartext(&other, &doc).is_err());
    }
}
