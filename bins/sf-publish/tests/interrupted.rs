//! Runs that are cut short (killed, or stopped by a tarball check that fails mid-upload), answers
//! that are lost, and bad input caught before anything is opened: the real `sf-publish` binary
//! against a real local S3 server (moto), with the test proxy (`support/proxy.rs`) in front of it
//! where a fault must land at an exact request.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use serde_json::Value;
use sf_testkit::{fixture, moto_url};

#[path = "support/common.rs"]
mod common;
#[path = "support/proxy.rs"]
mod proxy;

use common::{
    column, dry_run_plan, fails, json_out, new_bucket, new_key, object_keys, open_uploads,
    publisher, sf_publish, signed_tarball, stderr_of, with_s3, Key,
};

const NAME: &str = "slurm-24.11-jammy-software.tar.gz";
const KEY: &str = "builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz";

/// A 12 MiB tarball of the jammy 24.11 cell, its view noise (three parts of 5 MiB), signed, with its signed `SHA256SUMS`: its
/// folder, its path and its bytes.
fn noise_tarball(key: &Key) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let bytes = common::cell_tarball(
        &common::buildinfo_for("24.11", "jammy", "amd64", false),
        (12 << 20) + 4321,
    );
    let (dir, file) = signed_tarball(key, NAME, &bytes);
    (dir, file, bytes)
}

/// `tarball FILE DEST`, pinned to the test key, in 5 MiB parts (the 12 MiB tarball is a
/// three-part multipart upload).
fn tarball_args(file: &Path, dest: &str, key: &Key) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["tarball".into(), file.into(), dest.into()];
    a.extend(["--create", "--fingerprint", &key.fingerprint, "--cert"].map(OsString::from));
    a.push(key.cert_file.path().into());
    a.extend(["--multipart-threshold-mib", "5", "--part-size-mib", "5"].map(OsString::from));
    a
}

/// A test key, the 12 MiB tarball signed with it, and a new bucket to publish it to under `root/`.
struct Case {
    key: Key,
    _src: tempfile::TempDir,
    file: PathBuf,
    bytes: Vec<u8>,
    bucket: String,
    dest: String,
}

impl Case {
    fn new() -> Self {
        let key = new_key();
        let (_src, file, bytes) = noise_tarball(&key);
        let bucket = new_bucket("sf-interrupted");
        let dest = format!("s3://{bucket}/root");
        Case {
            key,
            _src,
            file,
            bytes,
            bucket,
            dest,
        }
    }

    /// `tarball_args` publishing this case's tarball to its bucket.
    fn args(&self) -> Vec<OsString> {
        tarball_args(&self.file, &self.dest, &self.key)
    }
}

/// The change list of a run's report: (key, action).
fn changes(report: &Value) -> Vec<(String, String)> {
    let list = &report["change_list"]["changes"];
    column(list, "key")
        .into_iter()
        .zip(column(list, "action"))
        .collect()
}

/// The bytes of an object.
fn object_bytes(bucket: &str, key: &str) -> Vec<u8> {
    let (b, k) = (bucket.to_string(), key.to_string());
    with_s3(|s3| async move {
        let o = s3.get_object().bucket(b).key(k).send().await.unwrap();
        o.body.collect().await.unwrap().to_vec()
    })
}

/// The tarball published under `root/` with its three files beside it and the signing key in
/// `root/keys/`, no upload left open, and the tarball's bytes as they were.
fn assert_published_whole(bucket: &str, key: &Key, bytes: &[u8]) {
    let mut objects = object_keys(bucket);
    objects.sort();
    assert_eq!(
        objects,
        [
            "root/builds/24.11/jammy/SHA256SUMS",
            "root/builds/24.11/jammy/SHA256SUMS.asc",
            &format!("root/{KEY}"),
            &format!("root/{KEY}.asc"),
            &format!("root/keys/{}.asc", key.fingerprint),
            "root/keys/signing-key.asc",
            "root/keys/signing-key.fingerprint",
        ]
    );
    assert_eq!(open_uploads(bucket), Vec::new(), "no upload is left open");
    assert!(
        object_bytes(bucket, &format!("root/{KEY}")) == bytes,
        "the tarball arrived changed"
    );
}

#[test]
fn a_run_killed_mid_upload_leaves_parts_the_next_run_aborts() {
    let case = Case::new();
    let bucket = &case.bucket;
    let tarball = |c: &mut StdCommand| {
        c.args(case.args()).args(["--part-concurrency", "1"]);
    };

    // One part at a time: the tarball's 2nd PUT is its 2nd part, held by the proxy while the
    // publisher is killed, so the upload is open with one part in it and nobody left to abort it.
    let pid = Arc::new(AtomicU32::new(0));
    let (parts, held) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(None)));
    let (p, n, h) = (pid.clone(), parts.clone(), held.clone());
    let proxy = proxy::on_put(
        &moto_url(),
        Arc::new(move |_, target: &str| {
            if !target.ends_with(&format!("/{NAME}")) || n.fetch_add(1, Ordering::SeqCst) != 1 {
                return None;
            }
            *h.lock().unwrap() = Some(target.to_string());
            let killed = StdCommand::new("kill")
                .args(["-KILL", &p.load(Ordering::SeqCst).to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            Some(proxy::Then::Drop)
        }),
    );
    let mut c = publisher(&proxy.url);
    tarball(&mut c);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    pid.store(child.id(), Ordering::SeqCst);
    let status = child.wait().unwrap();
    assert!(!status.success(), "the publisher was killed: {status}");
    assert!(held.lock().unwrap().is_some(), "the 2nd part never came");
    let left = open_uploads(bucket);
    assert!(
        left.iter().any(|(k, _)| k == &format!("root/{KEY}")),
        "the killed run left its upload open: {left:?}"
    );
    assert!(
        !object_keys(bucket).contains(&format!("root/{KEY}")),
        "nothing half-visible"
    );

    // An upload of another key that merely starts with this one is none of the next run's
    // business.
    let b = bucket.clone();
    let other = with_s3(|s3| async move {
        s3.create_multipart_upload()
            .bucket(b)
            .key(format!("root/{KEY}.part"))
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string()
    });

    // Run again, straight to the server: the tarball arrives whole, and its completion aborted
    // the killed run's upload of the same key.
    let mut c = publisher(&moto_url());
    tarball(&mut c);
    let out = Command::from_std(c).assert().success();
    let report = json_out(&out.get_output().stdout);
    assert!(changes(&report).iter().any(|(k, _)| k == KEY), "{report}");
    assert_eq!(
        open_uploads(bucket),
        [(format!("root/{KEY}.part"), other.clone())]
    );
    let b = bucket.clone();
    with_s3(|s3| async move {
        s3.abort_multipart_upload()
            .bucket(b)
            .key(format!("root/{KEY}.part"))
            .upload_id(other)
            .send()
            .await
            .unwrap()
    });
    assert!(
        object_bytes(bucket, &format!("root/{KEY}")) == case.bytes,
        "the tarball arrived changed"
    );
}

#[test]
fn a_lost_answer_to_a_blob_write_counts_as_created() {
    let src = fixture("spack-v3-unsigned");
    let plan = dry_run_plan(&src, &["--allow-unsigned"]);
    let planned = column(&plan, "key");
    let first_blob = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "blob")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    // The first blob PUT is carried out, its answer lost; the SDK sends it again and the
    // create-only condition fails on the object the first one made.
    let bucket = new_bucket("sf-interrupted");
    let proxy = proxy::lose_answer(&moto_url(), 1, "/blobs/sha256/");
    let out = sf_publish()
        .env("S3_ENDPOINT_URL", &proxy.url)
        .args(["mirror"])
        .arg(&src)
        .arg(format!("s3://{bucket}/m"))
        .args(["--allow-unsigned", "--concurrency", "1"])
        .assert()
        .success();
    assert_eq!(proxy.faults(), 1, "one answer was lost");
    let report = json_out(&out.get_output().stdout);
    let changes = changes(&report);
    assert!(
        changes.contains(&(first_blob.clone(), "created".to_string())),
        "{first_blob} is in the change list: {changes:?}"
    );
    assert_eq!(report["objects_skipped"], 0, "{report}");
    // Everything the plan holds was written (the index blob comes on top), and counted.
    for k in &planned {
        assert!(changes.iter().any(|(c, _)| c == k), "{k}: {changes:?}");
    }
    assert_eq!(
        report["objects_uploaded"],
        changes.len() as u64,
        "every object written is counted: {report}"
    );
}

#[test]
fn bad_progress_intervals_are_refused_before_anything_is_opened() {
    let src = fixture("spack-v3-unsigned");
    let root = tempfile::tempdir().unwrap();
    let publish = |dest: &Path, secs: &str| {
        sf_publish()
            .args(["mirror"])
            .arg(&src)
            .arg(format!("file://{}", dest.display()))
            .args(["--create", "--allow-unsigned", "--progress-secs", secs])
            .assert()
    };
    for bad in ["nan", "-1", "0", "inf", "3600.5", "soon"] {
        let dest = root.path().join("dest");
        let err = stderr_of(&publish(&dest, bad).code(2));
        assert!(
            err.contains("--progress-secs") && err.contains("from 0.05 to 3600"),
            "{bad}: {err}"
        );
        assert!(!dest.exists(), "{bad}: the destination was created");
    }
    // The bounds themselves are valid.
    for good in ["0.05", "3600"] {
        publish(&root.path().join(format!("ok-{good}")), good).success();
    }
}

/// Every file under a directory.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The passes over a whole tarball (its signature, its sha256 against the signed `SHA256SUMS`)
/// run while it uploads: one that fails cuts the run short with nothing at the destination (the
/// multipart upload aborted, the staged file removed), as bad input naming the tarball.
#[test]
fn a_tarball_that_fails_its_checks_while_uploading_leaves_nothing() {
    let key = new_key();
    let other = new_key();
    for damage in ["changed after signing", "signed by another key"] {
        for on_s3 in [true, false] {
            let (_src, file, mut bytes) = noise_tarball(&key);
            if damage == "changed after signing" {
                bytes[9 << 20] ^= 1;
                std::fs::write(&file, &bytes).unwrap();
            } else {
                let sig = sf_pgp::sign::sign_bytes(&other.signing, &bytes).unwrap();
                std::fs::write(format!("{}.asc", file.display()), sig).unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            let bucket = on_s3.then(|| new_bucket("sf-interrupted"));
            let dest = match &bucket {
                Some(b) => format!("s3://{b}/root"),
                None => format!("file://{}/root", dir.path().display()),
            };
            let err = fails(sf_publish().args(tarball_args(&file, &dest, &key)), 2);
            assert!(err.contains(NAME), "{damage}: the tarball is named: {err}");
            match &bucket {
                Some(b) => {
                    assert_eq!(object_keys(b), Vec::<String>::new(), "{damage}");
                    assert_eq!(open_uploads(b), Vec::new(), "{damage}: open uploads");
                }
                None => {
                    let left = files_under(dir.path());
                    assert!(left.is_empty(), "{damage}: files left: {left:?}");
                }
            }
        }
    }
}

#[test]
fn a_good_tarball_uploads_while_it_is_checked_and_arrives_whole() {
    let case = Case::new();
    sf_publish().args(case.args()).assert().success();
    assert_published_whole(&case.bucket, &case.key, &case.bytes);
}

#[test]
fn a_lost_answer_to_a_multipart_completion_counts_as_written() {
    // Every answer to CompleteMultipartUpload is lost: the server assembles the tarball, the
    // publisher hears nothing however often it retries, and the object itself must say that the
    // upload did complete (our size and sha256), so the run succeeds with nothing left open.
    let case = Case::new();
    let proxy = proxy::lose_answers(&moto_url(), "POST", "uploadId=");
    let out = sf_publish()
        .env("S3_ENDPOINT_URL", &proxy.url)
        .args(case.args())
        .args(["--aws-max-attempts", "3"])
        .assert()
        .success();
    assert_eq!(
        proxy.faults(),
        3,
        "every attempt at completing was carried out and its answer lost"
    );
    let report = json_out(&out.get_output().stdout);
    assert!(
        changes(&report).contains(&(KEY.to_string(), "created".to_string())),
        "the tarball is in the change list as created: {report}"
    );
    assert_published_whole(&case.bucket, &case.key, &case.bytes);
}
