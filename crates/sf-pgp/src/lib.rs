//! OpenPGP for Slurm Factory, with sequoia-openpgp and no gpg binary.
//!
//! [`key`] turns the secret key the pipeline is given (armoured, base64 of armoured or binary,
//! optionally passphrase-protected) into a [`key::SigningKey`] after checking it can sign now;
//! [`sign`] makes streamed detached signatures and cleartext signatures (what Spack's build-cache
//! manifests are); [`verify`] checks both against given certificates and says which key signed.
//! Output verifies with `gpg --verify` and `sqv`, and gpg's signatures verify here. [`generate`]
//! makes new signing keys.

pub mod generate;
pub mod key;
pub mod sign;
pub mod verify;

pub use generate::{Cipher, NewKey, Validity};
pub use key::{Fingerprint, KeyPin, SigningKey};
pub use verify::{Certs, Verified};

/// A passphrase, kept in protected memory and zeroed when dropped.
pub use sequoia_openpgp::crypto::Password;

/// The policy every signature is made and checked under (no SHA-1, no weak keys).
pub(crate) fn policy() -> &'static sequoia_openpgp::policy::StandardPolicy<'static> {
    static POLICY: sequoia_openpgp::policy::StandardPolicy<'static> =
        sequoia_openpgp::policy::StandardPolicy::new();
    &POLICY
}
