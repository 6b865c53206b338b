//! `sf-sign`: OpenPGP signatures for what Slurm Factory publishes, made on the runner (never in the
//! build container) with sequoia-openpgp and no gpg binary.
//!
//! `file` writes detached `.asc` signatures of tarballs; `mirror` turns an unsigned Spack layout-3
//! mirror into a signed one (cleartext-signed spec manifests, the public key and key index);
//! `sums` writes and signs a folder's `SHA256SUMS`; `verify` checks any of these against a
//! certificate or a pinned fingerprint; `key generate` makes a new signing key and `key export`
//! writes the signing key's public certificate. The secret key comes from `GPG_PRIVATE_KEY` or a file and
//! its passphrase from `GPG_PASSPHRASE` or a file, never from flags; only fingerprints are printed.

pub mod files;
pub mod keyfiles;
pub mod keys;
pub mod mirror;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use sf_core::cli::{CellIdArgs, ResultsArgs};
use sf_core::env;
use sf_core::gha::Actions;
use sf_core::record::Recorder;

#[derive(Parser, Debug)]
#[command(
    name = "sf-sign",
    version,
    about = "OpenPGP signatures for tarballs, Spack build-cache mirrors and SHA256SUMS, and their verification (JSON on stdout).",
    after_help = "The secret key is read from GPG_PRIVATE_KEY (ASCII armour, or base64 of armour or binary) or --key-file, \
its passphrase from GPG_PASSPHRASE or --passphrase-file. Secrets are never taken as flags, never printed, and masked in GitHub Actions."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub results: ResultsArgs,
    #[command(flatten)]
    pub cell: CellIdArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a detached ASCII-armoured signature PATH.asc beside each file.
    File {
        /// Files to sign.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Sign every spec manifest of a local Spack layout-3 mirror and publish the public key into it.
    Mirror {
        /// The mirror root (holds v3/ and blobs/).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Re-sign manifests that are already signed (by any key).
        #[arg(long)]
        resign: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Write SHA256SUMS for the files in a folder and sign it (SHA256SUMS.asc).
    Sums {
        /// The folder (e.g. one builds/{version}/{toolchain}/ folder).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Verify signatures; exit 1 naming every item that fails.
    #[command(after_help = VERIFY_HELP)]
    Verify {
        #[command(subcommand)]
        target: VerifyTarget,
    },
    /// Make a new signing key, or export the signing key's public certificate.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Make a new signing key (certification primary key and a signing subkey) and write the
    /// ASCII-armoured secret key to FILE with mode 0600; encrypted with GPG_PASSPHRASE (or
    /// --passphrase-file) if set, unprotected otherwise. Prints the fingerprint, never the key.
    Generate {
        /// Where the secret key goes; refused if it exists, unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also write the public certificate (ASCII armour) here.
        #[arg(long, value_name = "FILE")]
        public_out: Option<PathBuf>,
        /// The key's user ID, e.g. "Name <email>".
        #[arg(long, value_name = "UID", default_value = keyfiles::DEFAULT_UID)]
        uid: String,
        /// Key algorithm.
        #[arg(long, value_name = "ALGO", default_value = "ed25519", value_parser = ["ed25519", "rsa4096"])]
        cipher: String,
        /// How long the key is valid: a number and a unit s, m, h, d, w or y (e.g. 1d, 2y), or never.
        #[arg(long, value_name = "PERIOD", default_value = "never")]
        expires: String,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
        /// File holding the passphrase to protect the key with (instead of GPG_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Write the public certificate (ASCII armour) of the signing key, given as for `file`.
    Export {
        /// Where the certificate goes; refused if it exists, unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
}

/// How `verify` finds the certificate when only a fingerprint is given.
const VERIFY_HELP: &str = "Which key: --cert FILE trusts the certificates in FILE (with --fingerprint, only the pinned one). \
With --fingerprint alone the pinned key's certificate is looked up: for `verify mirror`, the keys the mirror publishes \
(keys.manifest.json and its key blobs); for `verify file` and `verify sums`, first *.asc and *.pub files (up to 1 MiB) \
holding an OpenPGP public key in the folder of what is verified (e.g. signing-key.asc from `sf-sign key export`), \
then, if none is the pinned key, the gpg keyring (`gpg --export FPR`, GNUPGHOME honoured) when gpg is installed. \
Only a certificate whose primary key is the pinned one is trusted. No certificate found: exit 2, naming where it looked.";

#[derive(Subcommand, Debug)]
pub enum VerifyTarget {
    /// Files against their detached signatures (PATH.asc unless --signature).
    #[command(after_help = VERIFY_HELP)]
    File {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The signature file, when there is one PATH and it is not PATH.asc.
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// A mirror: every spec manifest signed by the key, blobs intact, the key listed in the key index.
    #[command(after_help = VERIFY_HELP)]
    Mirror {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// A folder's SHA256SUMS: its signature, then every file it lists.
    #[command(after_help = VERIFY_HELP)]
    Sums {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

/// Where the secret key and its passphrase come from, and which key must be used.
#[derive(Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Secret key file (instead of GPG_PRIVATE_KEY).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// File holding the key's passphrase (instead of GPG_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The key that must be used: fingerprint or 16-digit key ID (e.g. DFB92630BCA5AB71).
    #[arg(long, visible_alias = "key-fingerprint", env = env::SIGNING_FINGERPRINT, value_name = "FPR")]
    pub fingerprint: Option<String>,
}

/// Which keys a signature may be made by.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Certificate (public key) file(s) to trust. Without it, --fingerprint is required and the
    /// key's certificate is looked up (see below).
    #[arg(long = "cert", value_name = "FILE")]
    pub certs: Vec<PathBuf>,
    /// The key that must have signed: its primary key's fingerprint or 16-digit key ID.
    #[arg(long, env = env::SIGNING_FINGERPRINT, value_name = "FPR")]
    pub fingerprint: Option<String>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match sf_core::exit::parse_cli::<Cli>() {
        Ok(cli) => sf_core::exit::main_with(|| {
            run(cli, &Actions::from_env(), &keys::SecretEnv::from_process())
        }),
        Err(code) => code,
    }
}

/// What a command reports: its JSON on stdout and its step outputs.
pub struct Outcome {
    pub json: serde_json::Value,
    pub outputs: Vec<(String, String)>,
}

/// Run a command with a given Actions context and secret environment (tests pass their own).
pub fn run(cli: Cli, gha: &Actions, secrets: &keys::SecretEnv) -> Result<()> {
    let step = match &cli.command {
        Command::File { .. } => "sf-sign file",
        Command::Mirror { .. } => "sf-sign mirror",
        Command::Sums { .. } => "sf-sign sums",
        Command::Verify {
            target: VerifyTarget::File { .. },
        } => "sf-sign verify file",
        Command::Verify {
            target: VerifyTarget::Mirror { .. },
        } => "sf-sign verify mirror",
        Command::Verify {
            target: VerifyTarget::Sums { .. },
        } => "sf-sign verify sums",
        Command::Key {
            action: KeyAction::Generate { .. },
        } => "sf-sign key generate",
        Command::Key {
            action: KeyAction::Export { .. },
        } => "sf-sign key export",
    };
    let mut rec = Recorder::start(step);
    // The cell joins this record (the signer's fingerprint) to the cell's row in the summary.
    rec.record.cell = cli.cell.get()?.map(str::to_string);
    let result = dispatch(&cli.command, gha, secrets, &mut rec);
    match result {
        Ok(outcome) => {
            let pairs: Vec<(&str, &str)> = outcome
                .outputs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            gha.set_outputs(&pairs).context("writing GITHUB_OUTPUT")?;
            for (k, v) in &outcome.outputs {
                rec.output(k, v);
            }
            rec.finish(cli.results.results_dir.as_deref())?;
            print_json(&outcome.json)
        }
        Err(err) => {
            rec.fail(&err, None);
            // The failure is what gets reported; a record that cannot be written must not hide it.
            let _ = rec.finish(cli.results.results_dir.as_deref());
            Err(err)
        }
    }
}

fn dispatch(
    cmd: &Command,
    gha: &Actions,
    secrets: &keys::SecretEnv,
    rec: &mut Recorder,
) -> Result<Outcome> {
    match cmd {
        Command::File { paths, key } => {
            let key = keys::load(key, secrets, gha)?;
            files::sign_files(&key, paths, gha, rec)
        }
        Command::Mirror { dir, resign, key } => {
            // The mirror is checked before the key is loaded only as far as it is cheap: a v2 or
            // missing directory is reported first, whatever the key.
            let m = sf_spack::Mirror::open(dir)?;
            m.require_v3()?;
            let key = keys::load(key, secrets, gha)?;
            mirror::sign_mirror(&m, &key, *resign, gha, rec)
        }
        Command::Sums { dir, key } => {
            let key = keys::load(key, secrets, gha)?;
            files::sign_sums(&key, dir, gha, rec)
        }
        Command::Verify { target } => match target {
            VerifyTarget::File {
                paths,
                signature,
                trust,
            } => files::verify_files(paths, signature.as_deref(), trust, rec),
            VerifyTarget::Mirror { dir, trust } => mirror::verify_mirror(dir, trust, rec),
            VerifyTarget::Sums { dir, trust } => files::verify_sums(dir, trust, rec),
        },
        Command::Key { action } => match action {
            KeyAction::Generate {
                out,
                public_out,
                uid,
                cipher,
                expires,
                force,
                passphrase_file,
            } => {
                let req = keyfiles::GenerateRequest {
                    out: out.clone(),
                    public_out: public_out.clone(),
                    uid: uid.clone(),
                    cipher: cipher.parse()?,
                    expires: expires.parse()?,
                    force: *force,
                    passphrase_file: passphrase_file.clone(),
                };
                keyfiles::generate(&req, secrets, gha, rec)
            }
            KeyAction::Export { out, force, key } => {
                keyfiles::export(out, *force, key, secrets, gha, rec)
            }
        },
    }
}

fn print_json(v: &impl Serialize) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
