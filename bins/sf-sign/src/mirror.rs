//! Signing a Spack build-cache mirror the build container pushed unsigned, and verifying a signed
//! one, as `docs/spack-buildcache.md` sections 1 and 3 describe.
//!
//! Signing: each `v3/manifests/spec/**.spec.manifest.json` becomes its cleartext signature (the
//! JSON untouched), the public key goes in as a blob with `v3/manifests/key/<FPR>.key.manifest.json`,
//! the key index (`keys.manifest.json`) gains the fingerprint (keeping the keys it had), and
//! `v3/layout.json` says `{"signing": "gpg"}`. Everything is checked and every signature made
//! before the first file is replaced; blobs are written before the manifests that name them.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use sf_core::bad_input;
use sf_core::fsutil::AtomicFile;
use sf_core::gha::Actions;
use sf_core::layout::spack;
use sf_core::record::{Artifact, Recorder};
use sf_pgp::sign::clearsign;
use sf_pgp::verify::verify_cleartext;
use sf_pgp::{Certs, Fingerprint, KeyPin, SigningKey};
use sf_spack::manifest::{compression, media_type, Manifest};
use sf_spack::mirror::BlobStatus;
use sf_spack::{KeyIndex, Mirror};

use crate::files::{common_outputs, failed, verify_outcome};
use crate::{keys, Outcome, TrustArgs};

/// Make a local layout-3 mirror a signed one. Refuses (changing nothing) when a manifest is not
/// version 3, a blob is missing or differs, or a manifest is already signed by another key or
/// carries a signature by this key that no longer verifies (unless `resign`). Manifests already
/// validly signed by this key are left as they are.
pub fn sign_mirror(
    m: &Mirror,
    key: &SigningKey,
    resign: bool,
    gha: &Actions,
    rec: &mut Recorder,
) -> Result<Outcome> {
    m.require_v3()?;
    rec.input("mirror", m.root().display().to_string())
        .input("resign", resign);
    let started = Instant::now();
    let entries = m.spec_manifests()?;
    if entries.is_empty() {
        return Err(bad_input(format!(
            "{} has no spec manifests under {}; nothing to sign",
            m.root().display(),
            spack::SPEC_MANIFESTS_DIR
        )));
    }
    let ours = Certs::from_cert(key.cert().clone());

    // 1. Check everything.
    let mut problems = Vec::new();
    let mut to_sign = Vec::new();
    let mut already = Vec::new();
    for e in &entries {
        let check = match m.check_spec_manifest(e) {
            Ok(c) => c,
            Err(err) => {
                problems.push(format!("{}: {err:#}", e.key));
                continue;
            }
        };
        if !check.is_ok() {
            problems.extend(check.problems.iter().map(|p| format!("{}: {p}", e.key)));
            continue;
        }
        match &check.file.clearsigned {
            None => to_sign.push((e.key.clone(), check.file.body)),
            Some(_) if resign => to_sign.push((e.key.clone(), check.file.body)),
            Some(cs) => match verify_cleartext(&ours, cs.text.as_bytes()) {
                Ok((v, _)) if &v.signer == key.fingerprint() => already.push(e.key.clone()),
                // Our own signature that no longer matches is not "someone else's": say so.
                Err(_) if ours.named_signer_of_cleartext(cs.text.as_bytes()).is_some() => problems
                    .push(format!(
                        "{}: the signature by {} does not verify (the manifest or its signature \
                         changed since it was signed); pass --resign to sign the manifest as it \
                         is now afresh",
                        e.key,
                        key.fingerprint()
                    )),
                _ => problems.push(format!(
                    "{}: already signed, not by {} (pass --resign to replace the signature)",
                    e.key,
                    key.fingerprint()
                )),
            },
        }
    }
    if !problems.is_empty() {
        return Err(bad_input(format!(
            "refusing to sign {}: {} problem(s), nothing was changed:\n  {}",
            m.root().display(),
            problems.len(),
            problems.join("\n  ")
        )));
    }
    let index = m
        .read_key_index()
        .context("reading the mirror's key index")?;

    // 2. Make every signature, and check each one, before writing anything.
    let mut signed = Vec::new();
    for (k, body) in &to_sign {
        let doc = clearsign(key, body.as_bytes()).with_context(|| format!("signing {k}"))?;
        let (_, text) = verify_cleartext(&ours, &doc)
            .with_context(|| format!("checking the new signature of {k}"))?;
        anyhow::ensure!(
            text == body.as_bytes(),
            "the signed text of {k} differs from the manifest"
        );
        signed.push((k.clone(), doc));
    }
    rec.timing("sign", started.elapsed());
    let fpr = key.fingerprint().to_string();
    let key_blob = key.public_key_armored()?;
    let mut index = index.unwrap_or_default();
    let index_changed = index.insert(&fpr);

    // 3. Write: blobs, then spec manifests, then the key manifests, then the layout marker.
    let key_record = m.write_blob(&key_blob, media_type::PGP_KEYS, compression::NONE)?;
    let index_record = m.write_blob(&index.to_bytes(), media_type::KEY_INDEX, compression::NONE)?;
    let mut staged = Vec::new();
    for (k, doc) in &signed {
        let path = m.path(k);
        let mut f =
            AtomicFile::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.write_all(doc)?;
        staged.push((k, f));
    }
    for (k, f) in staged {
        f.commit().with_context(|| format!("replacing {k}"))?;
        gha.log(&format!("signed {k}"));
    }
    let key_manifest_key = spack::key_manifest(&fpr);
    let key_manifest = Manifest::single(key_record.clone());
    let key_manifest_changed = write_if_changed(m, &key_manifest_key, &key_manifest)?;
    let keys_manifest_changed =
        write_if_changed(m, spack::KEYS_MANIFEST, &Manifest::single(index_record))?;
    let layout_written = m.write_layout_json()?;

    let signed_keys: Vec<String> = signed.iter().map(|(k, _)| k.clone()).collect();
    for k in &signed_keys {
        rec.record.artifacts.push(Artifact {
            kind: "spec-manifest".into(),
            path: Some(m.path(k).display().to_string()),
            key: Some(k.clone()),
            signed_by: Some(fpr.clone()),
            ..Default::default()
        });
    }
    rec.record.artifacts.push(Artifact {
        kind: "public-key".into(),
        key: Some(key_record.blob_key()?),
        size: Some(key_record.content_length),
        sha256: Some(key_record.checksum.clone()),
        ..Default::default()
    });
    rec.metric("manifests_signed", signed_keys.len() as u64)
        .metric("files_signed", signed_keys.len() as u64)
        .metric("manifests_already_signed", already.len() as u64);
    gha.log(&format!(
        "{}: {} manifest(s) signed, {} already signed by {fpr}",
        m.root().display(),
        signed_keys.len(),
        already.len()
    ));

    let mut outputs = common_outputs(key, &signed_keys);
    outputs.push(("key-manifest".into(), key_manifest_key.clone()));
    Ok(Outcome {
        json: json!({
            "fingerprint": fpr,
            "signing_key": key.signing_key().as_str(),
            "algorithm": key.hash_name(),
            "mirror": m.root().display().to_string(),
            "signed": signed_keys,
            "already_signed": already,
            "key_manifest": key_manifest_key,
            "key_blob": key_record.blob_key()?,
            "key_manifest_updated": key_manifest_changed,
            "keys_index_updated": index_changed || keys_manifest_changed,
            "layout_written": layout_written,
        }),
        outputs,
    })
}

/// Write a manifest unless the file already holds exactly these bytes (so a re-run touches nothing).
fn write_if_changed(m: &Mirror, key: &str, manifest: &Manifest) -> Result<bool> {
    let text = manifest.to_spack_json();
    if std::fs::read(m.path(key)).is_ok_and(|b| b == text.as_bytes()) {
        return Ok(false);
    }
    m.write_key(key, text.as_bytes())?;
    Ok(true)
}

/// The certificates the mirror publishes for the pinned key (what Spack's `keys --install` takes).
fn mirror_certs(m: &Mirror, index: &KeyIndex, pin: &KeyPin) -> Result<Certs> {
    let mut certs = Certs::default();
    for fpr in index.fingerprints() {
        let Ok(fp) = Fingerprint::parse(fpr) else {
            continue;
        };
        if !matches!(pin, KeyPin::Fingerprint(p) if *p == fp)
            && !matches!(pin, KeyPin::KeyId(id) if fpr.ends_with(id.as_str()))
        {
            continue;
        }
        let manifest = m.read_manifest(&spack::key_manifest(fpr))?;
        let rec = manifest
            .manifest
            .record(media_type::PGP_KEYS)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no {} record",
                    spack::key_manifest(fpr),
                    media_type::PGP_KEYS
                )
            })?;
        match m.check_blob(rec)? {
            BlobStatus::Ok => {}
            status => anyhow::bail!("the key blob of {fpr} is not intact: {status:?}"),
        }
        certs.extend(Certs::parse(&std::fs::read(m.blob_path(rec)?)?)?);
    }
    if certs.is_empty() {
        anyhow::bail!(
            "the mirror publishes no key matching {pin} (its key index lists {:?})",
            index.fingerprints().collect::<Vec<_>>()
        );
    }
    certs.pinned(pin).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Verify a signed mirror: every spec manifest is clearsigned by a trusted key, says what it
/// signed, and names blobs that are present and intact; the key index lists the signer and its
/// key manifest points at an intact key blob.
pub fn verify_mirror(dir: &Path, trust: &TrustArgs, rec: &mut Recorder) -> Result<Outcome> {
    let m = Mirror::open(dir)?;
    m.require_v3()?;
    let (given, pin) = keys::trust(trust)?;
    rec.input("mirror", m.root().display().to_string());
    let mut failures = Vec::new();
    let index = match m.read_key_index() {
        Ok(Some(i)) => Some(i),
        Ok(None) => {
            failures.push(format!(
                "{}: missing; the mirror publishes no key",
                spack::KEYS_MANIFEST
            ));
            None
        }
        Err(e) => {
            failures.push(format!("{}: {e:#}", spack::KEYS_MANIFEST));
            None
        }
    };
    let certs = match (given, &pin, &index) {
        (Some(c), _, _) => c,
        (None, Some(pin), Some(index)) => match mirror_certs(&m, index, pin) {
            Ok(c) => c,
            Err(e) => return Err(failed("verify mirror", &[format!("keys: {e:#}")])),
        },
        (None, Some(_), None) => return Err(failed("verify mirror", &failures)),
        (None, None, _) => {
            return Err(bad_input(
                "verifying a mirror needs the key it must be signed by: --fingerprint (the mirror's published key is used) or --cert FILE",
            ))
        }
    };

    let entries = m.spec_manifests()?;
    if entries.is_empty() {
        failures.push(format!("{}: no spec manifests", spack::SPEC_MANIFESTS_DIR));
    }
    let mut items = Vec::new();
    let mut signers = std::collections::BTreeSet::new();
    for e in &entries {
        let check = match m.check_spec_manifest(e) {
            Ok(c) => c,
            Err(err) => {
                failures.push(format!("{}: {err:#}", e.key));
                continue;
            }
        };
        failures.extend(check.problems.iter().map(|p| format!("{}: {p}", e.key)));
        let Some(cs) = &check.file.clearsigned else {
            failures.push(format!("{}: not signed", e.key));
            continue;
        };
        if cs.hash_headers.len() != 1 {
            failures.push(format!(
                "{}: {} Hash: headers, Spack writes one",
                e.key,
                cs.hash_headers.len()
            ));
        }
        match verify_cleartext(&certs, cs.text.as_bytes()) {
            Ok((v, text)) => {
                // What was signed must be what the manifest says, not text beside the signature.
                match Manifest::from_json(&String::from_utf8_lossy(&text)) {
                    Ok(signed) if signed == check.file.manifest => {
                        signers.insert(v.signer.to_string());
                        items.push(json!({"item": e.key, "signer": v.signer.as_str(), "key": v.key.as_str(), "algorithm": v.hash}));
                    }
                    _ => failures.push(format!("{}: the signed text is not the manifest", e.key)),
                }
            }
            Err(err) => failures.push(format!("{}: {err:#}", e.key)),
        }
    }
    if let Some(index) = &index {
        for s in &signers {
            if !index.contains(s) {
                failures.push(format!(
                    "{}: does not list the signing key {s}",
                    spack::KEYS_MANIFEST
                ));
                continue;
            }
            let km = spack::key_manifest(s);
            match m.read_manifest_opt(&km) {
                Ok(Some(f)) => match f
                    .manifest
                    .record(media_type::PGP_KEYS)
                    .map(|r| m.check_blob(r))
                {
                    Some(Ok(BlobStatus::Ok)) => {}
                    Some(Ok(status)) => failures.push(format!("{km}: key blob {status:?}")),
                    Some(Err(e)) => failures.push(format!("{km}: {e:#}")),
                    None => failures.push(format!("{km}: no {} record", media_type::PGP_KEYS)),
                },
                Ok(None) => failures.push(format!("{km}: missing")),
                Err(e) => failures.push(format!("{km}: {e:#}")),
            }
        }
    }
    rec.metric("manifests_verified", items.len() as u64)
        .metric("failed", failures.len() as u64);
    if !failures.is_empty() {
        return Err(failed(
            &format!("verify mirror {}", m.root().display()),
            &failures,
        ));
    }
    Ok(verify_outcome("mirror", items))
}
