//! `sf-publish tarball FILE... DEST`: relocatable tarballs, each with its detached signature and
//! its folder's signed `SHA256SUMS`, onto the keys of the storage layout.
//!
//! A tarball's key is found by its file name: the one cell of the support matrix (Slurm version,
//! toolchain, architecture, build) whose layout file name it is. Each tarball must have `FILE.asc`
//! and `SHA256SUMS` + `SHA256SUMS.asc` beside it, both signatures made by the expected key, and
//! `SHA256SUMS` must list the tarball with its sha256. The tarball itself must be one: a complete
//! gzip stream of a tar whose members are safe to extract and whose `BUILDINFO.json` names that
//! cell (read in the same pass as its sha256). The tarball, its signature, `SHA256SUMS` and its
//! signature go up in that order; none of them becomes visible before every check passed. Then
//! the public key that signed goes to the destination's `keys/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use serde_json::Value;
use sf_core::exit::bad_input;

use sf_archive::inspect::BUILDINFO;
use sf_core::layout::{Layout, TarballLocation, SHA256SUMS};
use sf_core::matrix::{Arch, BuildKind, SlurmVersion, SupportMatrix, Toolchain};
use sf_store::{Body, Gate};

use crate::objects::ObjectKind;
use crate::publish::{Item, Publisher};
use crate::trust::Trust;

/// The cell a tarball's file name says it is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarballCell {
    pub slurm_version: SlurmVersion,
    pub toolchain: Toolchain,
    pub arch: Arch,
    pub build: BuildKind,
}

impl TarballCell {
    /// Why `BUILDINFO.json` (`info`) is not a record of this cell's build, if it is not.
    fn mismatch(&self, info: &Value) -> Option<String> {
        let text = |k: &str| info.get(k).and_then(Value::as_str);
        let wants = [
            ("slurm_version", self.slurm_version.as_str()),
            ("toolchain", self.toolchain.as_str()),
            ("arch", self.arch.as_str()),
        ];
        for (k, want) in wants {
            if text(k) != Some(want) {
                return Some(format!(
                    "its {k} is {}, the file name says {want}",
                    info.get(k).unwrap_or(&Value::Null)
                ));
            }
        }
        let gpu = self.build.is_gpu();
        (info.get("gpu").and_then(Value::as_bool) != Some(gpu)).then(|| {
            format!(
                "its gpu is {}, the file name says a {} build",
                info.get("gpu").unwrap_or(&Value::Null),
                self.build
            )
        })
    }
}

/// One tarball, checked, with where its files go.
#[derive(Clone, Debug)]
pub struct CheckedTarball {
    pub file: PathBuf,
    pub location: TarballLocation,
    pub cell: TarballCell,
    /// As the signed `SHA256SUMS` lists it (the file is checked against it while it uploads).
    pub sha256: String,
}

/// The layout location whose file name is `name`, and its cell.
pub fn locate(
    m: &SupportMatrix,
    layout: &Layout,
    name: &str,
) -> Result<(TarballLocation, TarballCell)> {
    for v in &m.slurm_versions {
        for tc in &m.toolchains {
            for a in &m.archs {
                for b in &m.builds {
                    let loc = layout.tarball(&v.name, &tc.name, &a.name, &b.name);
                    if loc.file_name == name {
                        let cell = TarballCell {
                            slurm_version: v.name.clone(),
                            toolchain: tc.name.clone(),
                            arch: a.name.clone(),
                            build: b.name.clone(),
                        };
                        return Ok((loc, cell));
                    }
                }
            }
        }
    }
    Err(bad_input(format!(
        "{name:?} is not the name of a tarball of any cell of the support matrix; expected e.g. {}",
        layout
            .templates
            .tarball
            .rsplit('/')
            .next()
            .unwrap_or_default()
    )))
}

fn sibling(file: &Path, name: &str) -> PathBuf {
    file.parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn asc(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".asc");
    PathBuf::from(s)
}

fn read_sig(path: &Path, of: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|_| {
        bad_input(format!(
            "refusing {}: its signature {} is missing; sign it first (sf-sign file / sf-sign sums)",
            of.display(),
            path.display()
        ))
    })
}

/// The quick checks of tarballs, before anything is uploaded: each is a cell's tarball with its
/// signature beside it, and a `SHA256SUMS` signed by the expected key lists it. What needs a pass
/// over each (multi-GB) tarball is left to [`check_contents`], which runs while it uploads.
pub fn check(
    files: &[PathBuf],
    m: &SupportMatrix,
    layout: &Layout,
    trust: &Trust,
) -> Result<Vec<CheckedTarball>> {
    let mut out = Vec::new();
    for file in files {
        let meta = std::fs::metadata(file)
            .map_err(|e| bad_input(format!("tarball {}: {e}", file.display())))?;
        if !meta.is_file() {
            return Err(bad_input(format!(
                "tarball {} is not a file",
                file.display()
            )));
        }
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (location, cell) = locate(m, layout, &name)?;
        read_sig(&asc(file), file)?;
        let sums = sibling(file, SHA256SUMS);
        let sums_text = std::fs::read_to_string(&sums).map_err(|e| {
            bad_input(format!(
                "refusing {}: {} beside it: {e}; write it with sf-sign sums",
                file.display(),
                sums.display()
            ))
        })?;
        let sums_sig = read_sig(&asc(&sums), &sums)?;
        trust.check_detached(&sums.display().to_string(), &sums, &sums_sig)?;
        let listed = sums_text.lines().find_map(|l| {
            let (h, n) = l.split_once(char::is_whitespace)?;
            (n.trim_start().trim_start_matches('*') == name).then(|| h.to_ascii_lowercase())
        });
        let Some(sha256) =
            listed.filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Err(bad_input(format!(
                "{} does not list {name} with a sha256",
                sums.display()
            )));
        };
        out.push(CheckedTarball {
            file: file.clone(),
            location,
            cell,
            sha256,
        });
    }
    Ok(out)
}

/// The checks that read each tarball whole: its signature by the expected key, and, in one
/// pass, its sha256 against what the signed `SHA256SUMS` lists and its contents (a complete,
/// safe tarball whose `BUILDINFO.json` names its cell). Returns who signed each.
pub fn check_contents(tarballs: &[CheckedTarball], trust: &Trust) -> Result<Vec<String>> {
    let mut signers = Vec::new();
    for t in tarballs {
        let file = &t.file;
        let sig = read_sig(&asc(file), file)?;
        // The two passes, the signature check (SHA-512) and the inspection (sha256 and gunzip),
        // run side by side: each alone keeps one core busy for seconds on a multi-GB tarball.
        let (signed_by, inspected) = std::thread::scope(|s| {
            let inspected = s.spawn(|| sf_archive::inspect(file));
            let signed_by = trust.check_detached(&file.display().to_string(), file, &sig);
            let inspected = inspected
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (signed_by, inspected)
        });
        let signed_by = signed_by?;
        let inspected = inspected?;
        if inspected.sha256 != t.sha256 {
            return Err(bad_input(format!(
                "{} lists {} with sha256 {}, but the file has {}",
                sibling(file, SHA256SUMS).display(),
                t.location.file_name,
                t.sha256,
                inspected.sha256
            )));
        }
        let info: Value = serde_json::from_slice(&inspected.buildinfo).map_err(|e| {
            bad_input(format!(
                "refusing {}: its {BUILDINFO} is not JSON: {e}",
                file.display()
            ))
        })?;
        if let Some(why) = t.cell.mismatch(&info) {
            return Err(bad_input(format!(
                "refusing {}: its {BUILDINFO} is not a build of this cell: {why}",
                file.display()
            )));
        }
        signers.push(signed_by);
    }
    Ok(signers)
}

fn file_item(key: &str, path: &Path, kind: ObjectKind, sha256: Option<&str>) -> Result<Item> {
    let sha = match sha256 {
        Some(s) => s.to_string(),
        None => sf_store::sha256_file(path)?,
    };
    let size = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    Ok(Item {
        key: key.to_string(),
        body: Body::File(path.to_path_buf()),
        size,
        sha256: sha,
        kind,
        media_type: None,
        signed: false,
        gate: None,
    })
}

/// Upload checked tarballs (tarball, signature, `SHA256SUMS`, its signature) while
/// [`check_contents`] runs: each upload completes only once every tarball passed, so a failed
/// check leaves nothing new at the destination and a tarball is read from disk side by side by
/// the check and the upload instead of twice in a row. Returns who signed each tarball.
pub async fn publish(
    tarballs: &[CheckedTarball],
    trust: &Trust,
    p: &Publisher,
) -> Result<Vec<String>> {
    let (keeper, gate) = Gate::new();
    let checks = {
        let (tarballs, trust) = (tarballs.to_vec(), trust.clone());
        tokio::task::spawn_blocking(move || {
            let r = check_contents(&tarballs, &trust);
            keeper.verdict(r.is_ok());
            r
        })
    };
    let uploaded = upload(tarballs, gate, p).await;
    // A failed check is the cause of any upload it stopped, and says what was wrong.
    let signers = checks.await.context("the tarball checks panicked")??;
    uploaded?;
    publish_signing_key(&signers, trust, p).await?;
    Ok(signers)
}

/// The public key that signed, at the destination's fixed keys (`keys/`, see
/// [`Layout::signing_key_keys`]), so whoever holds only the bucket or its CDN can verify what it
/// serves: each signer's certificate under its fingerprint, and the last one as the current key.
async fn publish_signing_key(signers: &[String], trust: &Trust, p: &Publisher) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let mut current = None;
    for signer in signers {
        if !seen.insert(signer.as_str()) {
            continue;
        }
        let cert = trust.public_key(signer).with_context(|| {
            format!("the certificate of {signer}, which signed, is not among those given")
        })?;
        let keys = Layout::signing_key_keys(signer);
        p.upload(bytes_item(
            p,
            &keys.archived,
            cert.clone(),
            ObjectKind::PublicKey,
        ))
        .await?;
        current = Some((keys, cert, signer));
    }
    if let Some((keys, cert, signer)) = current {
        p.upload(bytes_item(p, &keys.current, cert, ObjectKind::PublicKey))
            .await?;
        p.upload(bytes_item(
            p,
            &keys.fingerprint,
            format!("{signer}\n").into_bytes(),
            ObjectKind::KeyFingerprint,
        ))
        .await?;
    }
    Ok(())
}

/// An object from memory, counted in the progress.
fn bytes_item(p: &Publisher, key: &str, bytes: Vec<u8>, kind: ObjectKind) -> Item {
    p.plan_bytes(bytes.len() as u64);
    Item::bytes(key, bytes, kind)
}

async fn upload(tarballs: &[CheckedTarball], gate: Gate, p: &Publisher) -> Result<()> {
    for t in tarballs {
        let sums = sibling(&t.file, SHA256SUMS);
        for f in [t.file.clone(), asc(&t.file), sums.clone(), asc(&sums)] {
            p.plan_bytes(std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0));
        }
    }
    for t in tarballs {
        let l = &t.location;
        let sums = sibling(&t.file, SHA256SUMS);
        let items = [
            file_item(&l.key, &t.file, ObjectKind::Tarball, Some(&t.sha256))?,
            file_item(&l.signature_key, &asc(&t.file), ObjectKind::Signature, None)?,
            file_item(&l.sums_key, &sums, ObjectKind::Sums, None)?,
            file_item(
                &l.sums_signature_key,
                &asc(&sums),
                ObjectKind::Signature,
                None,
            )?,
        ];
        for item in items {
            p.upload(Item {
                gate: Some(gate.clone()),
                ..item
            })
            .await?;
        }
    }
    Ok(())
}
