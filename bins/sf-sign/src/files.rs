//! Detached signatures of files (`PATH.asc`) and signed checksum lists (`SHA256SUMS` and
//! `SHA256SUMS.asc`, the format `sha256sum -c` reads), and their verification.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use sf_core::bad_input;
use sf_core::fsutil::AtomicFile;
use sf_core::gha::Actions;
use sf_core::layout::SHA256SUMS;
use sf_core::record::{Artifact, Recorder};
use sf_pgp::sign::{sign_bytes, sign_file, signature_path};
use sf_pgp::verify::verify_detached;
use sf_pgp::{Certs, SigningKey, Verified};

use crate::{keys, Outcome, TrustArgs};

/// Sign each file into `PATH.asc`. Every path is checked before anything is written.
pub fn sign_files(
    key: &SigningKey,
    paths: &[PathBuf],
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<Outcome> {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(bad_input(format!(
            "not a file: {}; nothing was signed",
            missing.join(", ")
        )));
    }
    // A 0-byte file is what an interrupted copy or a failed build step leaves: a signature
    // would vouch for nothing.
    let empty: Vec<String> = paths
        .iter()
        .filter(|p| fs::metadata(p).map(|m| m.len() == 0).unwrap_or(false))
        .map(|p| p.display().to_string())
        .collect();
    if !empty.is_empty() {
        return Err(bad_input(format!(
            "empty (0 bytes): {}; nothing was signed",
            empty.join(", ")
        )));
    }
    rec.input(
        "files",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    );
    let started = Instant::now();
    let mut signed = Vec::new();
    let mut bytes = 0u64;
    for path in paths {
        let s = sign_file(key, path)?;
        gha.log(&format!(
            "signed {} -> {}",
            s.path.display(),
            s.signature.display()
        ));
        bytes += s.size;
        rec.record.artifacts.push(Artifact {
            kind: "signature".into(),
            path: Some(s.signature.display().to_string()),
            size: Some(s.size),
            signed_by: Some(key.fingerprint().to_string()),
            ..Default::default()
        });
        signed.push(s);
    }
    rec.timing("sign", started.elapsed());
    rec.metric("files_signed", signed.len() as u64)
        .metric("bytes_signed", bytes);
    let sigs: Vec<String> = signed
        .iter()
        .map(|s| s.signature.display().to_string())
        .collect();
    Ok(Outcome {
        json: json!({
            "fingerprint": key.fingerprint().as_str(),
            "signing_key": key.signing_key().as_str(),
            "algorithm": key.hash_name(),
            "files": signed.iter().map(|s| json!({
                "path": s.path.display().to_string(),
                "signature": s.signature.display().to_string(),
                "size": s.size,
            })).collect::<Vec<_>>(),
        }),
        outputs: common_outputs(key, &sigs),
    })
}

/// The step outputs every signing command writes.
pub(crate) fn common_outputs(key: &SigningKey, signed: &[String]) -> Vec<(String, String)> {
    vec![
        ("fingerprint".into(), key.fingerprint().to_string()),
        ("algorithm".into(), key.hash_name()),
        ("signed-count".into(), signed.len().to_string()),
        ("signed".into(), signed.join("\n")),
    ]
}

/// One line of a checksum list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumEntry {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// The files a folder's `SHA256SUMS` lists: regular files, not hidden, not signatures, not the
/// list itself; sorted by name.
pub fn files_to_sum(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = fs::read_dir(dir)
        .map_err(|e| bad_input(format!("cannot read the folder {}: {e}", dir.display())))?;
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || name == SHA256SUMS
            || name.ends_with(".asc")
            || !e.path().is_file()
        {
            continue;
        }
        if name.contains(['\n', '\\']) {
            return Err(bad_input(format!(
                "file name {name:?} cannot be listed in SHA256SUMS; rename it"
            )));
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// Lowercase hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use sha2::Digest;
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Hash files in parallel, one thread per core, keeping their order.
fn hash_all(dir: &Path, names: &[String]) -> Result<Vec<SumEntry>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(names.len().max(1));
    let chunk = names.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|n| {
                            sha256_file(&dir.join(n)).map(|(sha256, size)| SumEntry {
                                name: n.clone(),
                                sha256,
                                size,
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow!("a hashing thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// The text of a checksum list, as `sha256sum` writes it.
pub fn sums_text(entries: &[SumEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}  {}\n", e.sha256, e.name))
        .collect()
}

/// Write `SHA256SUMS` for a folder and its signature; both are complete before either replaces
/// an older one.
pub fn sign_sums(
    key: &SigningKey,
    dir: &Path,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<Outcome> {
    if !dir.is_dir() {
        return Err(bad_input(format!("{} is not a folder", dir.display())));
    }
    let names = files_to_sum(dir)?;
    if names.is_empty() {
        return Err(bad_input(format!(
            "{} has no files to list in {SHA256SUMS}",
            dir.display()
        )));
    }
    rec.input("dir", dir.display().to_string());
    let started = Instant::now();
    let entries = hash_all(dir, &names)?;
    rec.timing("hash", started.elapsed());
    let text = sums_text(&entries);
    let signature = sign_bytes(key, text.as_bytes())?;

    let sums_path = dir.join(SHA256SUMS);
    let sig_path = signature_path(&sums_path);
    let mut sums_file = AtomicFile::create(&sums_path)
        .with_context(|| format!("creating {}", sums_path.display()))?;
    sums_file.write_all(text.as_bytes())?;
    let mut sig_file = AtomicFile::create(&sig_path)
        .with_context(|| format!("creating {}", sig_path.display()))?;
    sig_file.write_all(&signature)?;
    sums_file
        .commit()
        .with_context(|| format!("writing {}", sums_path.display()))?;
    sig_file
        .commit()
        .with_context(|| format!("writing {}", sig_path.display()))?;
    gha.log(&format!(
        "{} lists {} files, signed into {}",
        sums_path.display(),
        entries.len(),
        sig_path.display()
    ));

    for e in &entries {
        rec.record.artifacts.push(Artifact {
            kind: "file".into(),
            path: Some(dir.join(&e.name).display().to_string()),
            size: Some(e.size),
            sha256: Some(e.sha256.clone()),
            ..Default::default()
        });
    }
    rec.record.artifacts.push(Artifact {
        kind: "sums".into(),
        path: Some(sums_path.display().to_string()),
        size: Some(text.len() as u64),
        signed_by: Some(key.fingerprint().to_string()),
        ..Default::default()
    });
    // files_signed as every signing command reports it: here the one list.
    rec.metric("files_listed", entries.len() as u64)
        .metric("files_signed", 1);
    let sig = sig_path.display().to_string();
    let mut outputs = common_outputs(key, std::slice::from_ref(&sig));
    outputs.push(("sums".into(), sums_path.display().to_string()));
    Ok(Outcome {
        json: json!({
            "fingerprint": key.fingerprint().as_str(),
            "algorithm": key.hash_name(),
            "sums": sums_path.display().to_string(),
            "signature": sig,
            "files": entries.iter().map(|e| json!({"name": e.name, "sha256": e.sha256, "size": e.size})).collect::<Vec<_>>(),
        }),
        outputs,
    })
}

fn verified_json(item: &str, v: &Verified) -> serde_json::Value {
    json!({"item": item, "signer": v.signer.as_str(), "key": v.key.as_str(), "algorithm": v.hash})
}

/// The error for failed items: exit 1, every item named.
pub(crate) fn failed(what: &str, failures: &[String]) -> anyhow::Error {
    anyhow!(
        "{what}: {} item(s) failed verification:\n  {}",
        failures.len(),
        failures.join("\n  ")
    )
}

/// Outcome of a verification.
pub(crate) fn verify_outcome(kind: &str, items: Vec<serde_json::Value>) -> Outcome {
    let signers: std::collections::BTreeSet<String> = items
        .iter()
        .filter_map(|i| i["signer"].as_str().map(str::to_string))
        .collect();
    let signers: Vec<String> = signers.into_iter().collect();
    Outcome {
        outputs: vec![
            ("verified-count".into(), items.len().to_string()),
            ("fingerprint".into(), signers.join(",")),
        ],
        json: json!({"ok": true, "kind": kind, "signers": signers, "items": items}),
    }
}

/// Verify files against detached signatures.
pub fn verify_files(
    paths: &[PathBuf],
    signature: Option<&Path>,
    trust: &TrustArgs,
    rec: &mut Recorder,
) -> Result<Outcome> {
    if signature.is_some() && paths.len() != 1 {
        return Err(bad_input(
            "--signature names the signature of one file; give exactly one PATH with it",
        ));
    }
    let folders: Vec<PathBuf> = paths.iter().map(|p| folder_of(p)).collect();
    let (certs, sources) = keys::certs_for(trust, &folders)?;
    rec.input("certificates", sources);
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(bad_input(format!("not a file: {}", missing.join(", "))));
    }
    let mut items = Vec::new();
    let mut failures = Vec::new();
    for path in paths {
        let sig_path = signature
            .map(Path::to_path_buf)
            .unwrap_or_else(|| signature_path(path));
        match verify_one(&certs, path, &sig_path) {
            Ok(v) => items.push(verified_json(&path.display().to_string(), &v)),
            Err(e) => failures.push(format!("{}: {e:#}", path.display())),
        }
    }
    rec.metric("verified", items.len() as u64)
        .metric("failed", failures.len() as u64);
    if !failures.is_empty() {
        return Err(failed("verify file", &failures));
    }
    Ok(verify_outcome("file", items))
}

/// The folder a file is in (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn verify_one(certs: &Certs, path: &Path, sig_path: &Path) -> Result<Verified> {
    let sig =
        fs::read(sig_path).map_err(|e| anyhow!("no signature {}: {e}", sig_path.display()))?;
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    verify_detached(
        certs,
        std::io::BufReader::with_capacity(4 << 20, file),
        &sig,
    )
}

/// Verify a folder's `SHA256SUMS.asc`, then every file `SHA256SUMS` lists.
pub fn verify_sums(dir: &Path, trust: &TrustArgs, rec: &mut Recorder) -> Result<Outcome> {
    let (certs, sources) = keys::certs_for(trust, &[dir.to_path_buf()])?;
    rec.input("certificates", sources);
    let sums_path = dir.join(SHA256SUMS);
    let text = fs::read(&sums_path)
        .map_err(|e| bad_input(format!("cannot read {}: {e}", sums_path.display())))?;
    let sig_path = signature_path(&sums_path);
    let v = (|| {
        let sig =
            fs::read(&sig_path).map_err(|e| anyhow!("no signature {}: {e}", sig_path.display()))?;
        verify_detached(&certs, &text[..], &sig)
    })()
    .map_err(|e| failed("verify sums", &[format!("{}: {e:#}", sums_path.display())]))?;
    let text = String::from_utf8(text).map_err(|_| {
        failed(
            "verify sums",
            &[format!("{}: not UTF-8 text", sums_path.display())],
        )
    })?;

    let mut items = vec![verified_json(&sums_path.display().to_string(), &v)];
    let mut failures = Vec::new();
    let mut listed = 0u64;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = line.split_once("  ").or_else(|| line.split_once(" *"));
        let Some((sum, name)) = parsed.filter(|(s, n)| s.len() == 64 && !n.is_empty()) else {
            failures.push(format!(
                "{SHA256SUMS} line {}: not `<sha256>  <name>`",
                i + 1
            ));
            continue;
        };
        if name.contains('/') || name == ".." || name == "." {
            failures.push(format!(
                "{SHA256SUMS} line {}: {name:?} is not a file in this folder",
                i + 1
            ));
            continue;
        }
        listed += 1;
        let path = dir.join(name);
        match sha256_file(&path) {
            Ok((actual, _)) if actual.eq_ignore_ascii_case(sum) => {
                items.push(json!({"item": path.display().to_string(), "sha256": actual}));
            }
            Ok((actual, _)) => failures.push(format!(
                "{}: sha256 {actual}, {SHA256SUMS} says {sum}",
                path.display()
            )),
            Err(e) => failures.push(format!("{}: {e:#}", path.display())),
        }
    }
    rec.metric("files_checked", listed)
        .metric("failed", failures.len() as u64);
    if !failures.is_empty() {
        return Err(failed("verify sums", &failures));
    }
    Ok(verify_outcome("sums", items))
}
