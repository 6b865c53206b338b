//! Runs that are cut short (killed, or stopped by a tarball check that fails mid-upload), answers
//! that are lost, and bad input caught before anything is opened: the real `sf-publish` binary
//! against a real local S3 server (moto), with the test proxy (`support/proxy.rs`) in front of it
//! where a fault must land at an exact request.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use sequoia_openpgp as openpgp;
use serde_json::Value;

use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sf_aws::aws_sdk_s3::Client;
use sf_aws::AwsSettings;
use sf_testkit::{fixture, moto_url};

#[path = "support/proxy.rs"]
mod proxy;

const NAME: &str = "slurm-24.11-jammy-software.tar.gz";
const KEY: &str = "builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz";

fn aws() -> AwsSettings {
    AwsSettings::local(&moto_url(), "test", "test")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Run `f` with an S3 client of the local server (one runtime for the client and its calls).
fn with_s3<T, F>(f: impl FnOnce(Client) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        f(aws.s3_client(&sdk)).await
    })
}

fn new_bucket() -> String {
    let bucket = format!("sf-interrupted-{}", sf_core::fsutil::random_hex(6).unwrap());
    let b = bucket.clone();
    with_s3(|s3| async move { s3.create_bucket().bucket(b).send().await.unwrap() });
    bucket
}

/// The environment of a publisher talking to `endpoint`, and nothing of the caller's.
fn publisher_env(c: &mut StdCommand, endpoint: &str) {
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_")
            || k.starts_with("GITHUB_")
            || k.starts_with("AWS_")
            || k == "S3_ENDPOINT_URL"
        {
            c.env_remove(k);
        }
    }
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3_ENDPOINT_URL", endpoint)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
}

fn sf_publish(endpoint: &str) -> Command {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("sf-publish"));
    publisher_env(&mut c, endpoint);
    Command::from_std(c)
}

fn json_out(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// A signing key made for the test, its fingerprint and its certificate in a file.
fn new_key() -> (sf_pgp::SigningKey, String, tempfile::NamedTempFile) {
    let (cert, _) = CertBuilder::general_purpose(Some("Publish Test <publish@example.invalid>"))
        .generate()
        .unwrap();
    let tsk = cert.as_tsk().armored().to_vec().unwrap();
    let mut cert_file = tempfile::NamedTempFile::new().unwrap();
    cert_file
        .write_all(&cert.armored().to_vec().unwrap())
        .unwrap();
    (
        sf_pgp::SigningKey::load(&tsk, None, None).unwrap(),
        cert.fingerprint().to_hex(),
        cert_file,
    )
}

/// A 12 MiB tarball of noise (three parts of 5 MiB), signed, with its signed `SHA256SUMS`.
fn signed_tarball(key: &sf_pgp::SigningKey, dir: &Path) -> (PathBuf, Vec<u8>) {
    let file = dir.join(NAME);
    let mut x: u64 = 0x5851_f42d_4c95_7f2d;
    let bytes: Vec<u8> = (0..(12 << 20) + 4321)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let sign = |p: &Path| {
        let sig = sf_pgp::sign::sign_bytes(key, &std::fs::read(p).unwrap()).unwrap();
        std::fs::write(format!("{}.asc", p.display()), sig).unwrap();
    };
    sign(&file);
    let sums = dir.join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  {NAME}\n", sf_store::sha256_hex(&bytes))).unwrap();
    sign(&sums);
    (file, bytes)
}

/// The open multipart uploads of a bucket: (key, upload id).
fn open_uploads(bucket: &str) -> Vec<(String, String)> {
    let b = bucket.to_string();
    let out =
        with_s3(|s3| async move { s3.list_multipart_uploads().bucket(b).send().await.unwrap() });
    out.uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The keys of a bucket's objects.
fn object_keys(bucket: &str) -> Vec<String> {
    let b = bucket.to_string();
    let out = with_s3(|s3| async move { s3.list_objects_v2().bucket(b).send().await.unwrap() });
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// `tarball FILE DEST`, pinned to the test key, in 5 MiB parts (the 12 MiB tarball is a
/// three-part multipart upload).
fn tarball_args(file: &Path, dest: &str, fingerprint: &str, cert: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["tarball".into(), file.into(), dest.into()];
    a.extend(["--fingerprint", fingerprint, "--cert"].map(OsString::from));
    a.push(cert.into());
    a.extend(["--multipart-threshold-mib", "5", "--part-size-mib", "5"].map(OsString::from));
    a
}

/// The bytes of an object.
fn object_bytes(bucket: &str, key: &str) -> Vec<u8> {
    let (b, k) = (bucket.to_string(), key.to_string());
    with_s3(|s3| async move {
        let o = s3.get_object().bucket(b).key(k).send().await.unwrap();
        o.body.collect().await.unwrap().to_vec()
    })
}

/// The tarball published under `root/` with its three files beside it, no upload left open,
/// and the tarball's bytes as they were.
fn assert_published_whole(bucket: &str, bytes: &[u8]) {
    let mut objects = object_keys(bucket);
    objects.sort();
    assert_eq!(
        objects,
        [
            "root/builds/24.11/jammy/SHA256SUMS",
            "root/builds/24.11/jammy/SHA256SUMS.asc",
            &format!("root/{KEY}"),
            &format!("root/{KEY}.asc"),
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
    let (signing, fingerprint, cert) = new_key();
    let dir = tempfile::tempdir().unwrap();
    let (file, bytes) = signed_tarball(&signing, dir.path());
    let bucket = new_bucket();
    let dest = format!("s3://{bucket}/root");
    let tarball = |c: &mut StdCommand| {
        c.args(tarball_args(&file, &dest, &fingerprint, cert.path()))
            .args(["--part-concurrency", "1"]);
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
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("sf-publish"));
    publisher_env(&mut c, &proxy.url);
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
    let left = open_uploads(&bucket);
    assert!(
        left.iter().any(|(k, _)| k == &format!("root/{KEY}")),
        "the killed run left its upload open: {left:?}"
    );
    assert!(
        !object_keys(&bucket).contains(&format!("root/{KEY}")),
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
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("sf-publish"));
    publisher_env(&mut c, &moto_url());
    tarball(&mut c);
    let out = Command::from_std(c).assert().success();
    let report = json_out(&out.get_output().stdout);
    assert!(
        report["change_list"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == KEY),
        "{report}"
    );
    assert_eq!(
        open_uploads(&bucket),
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
        object_bytes(&bucket, &format!("root/{KEY}")) == bytes,
        "the tarball arrived changed"
    );
}

#[test]
fn a_lost_answer_to_a_blob_write_counts_as_created() {
    let src = fixture("spack-v3-unsigned");
    let plan = json_out(
        &sf_publish(&moto_url())
            .args(["mirror"])
            .arg(&src)
            .arg("file:///nonexistent-dry-run")
            .args(["--allow-unsigned", "--dry-run"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    let planned: Vec<String> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
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
    let bucket = new_bucket();
    let proxy = proxy::lose_answer(&moto_url(), 1, "/blobs/sha256/");
    let out = sf_publish(&proxy.url)
        .args(["mirror"])
        .arg(&src)
        .arg(format!("s3://{bucket}/m"))
        .args(["--allow-unsigned", "--concurrency", "1"])
        .assert()
        .success();
    assert_eq!(proxy.faults(), 1, "one answer was lost");
    let report = json_out(&out.get_output().stdout);
    let changes: Vec<(&str, &str)> = report["change_list"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["key"].as_str().unwrap(), c["action"].as_str().unwrap()))
        .collect();
    assert!(
        changes.contains(&(first_blob.as_str(), "created")),
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
    for bad in ["nan", "-1", "0", "inf", "3600.5", "soon"] {
        let dest = root.path().join("dest");
        let out = sf_publish(&moto_url())
            .args(["mirror"])
            .arg(&src)
            .arg(format!("file://{}", dest.display()))
            .args(["--allow-unsigned", "--progress-secs", bad])
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(
            err.contains("--progress-secs") && err.contains("from 0.05 to 3600"),
            "{bad}: {err}"
        );
        assert!(!dest.exists(), "{bad}: the destination was created");
    }
    // The bounds themselves are valid.
    for good in ["0.05", "3600"] {
        let dest = root.path().join(format!("ok-{good}"));
        sf_publish(&moto_url())
            .args(["mirror"])
            .arg(&src)
            .arg(format!("file://{}", dest.display()))
            .args(["--allow-unsigned", "--progress-secs", good])
            .assert()
            .success();
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
    let (signing, fingerprint, cert) = new_key();
    let (other, _, _) = new_key();
    for damage in ["changed after signing", "signed by another key"] {
        for on_s3 in [true, false] {
            let src = tempfile::tempdir().unwrap();
            let (file, mut bytes) = signed_tarball(&signing, src.path());
            if damage == "changed after signing" {
                bytes[9 << 20] ^= 1;
                std::fs::write(&file, &bytes).unwrap();
            } else {
                let sig = sf_pgp::sign::sign_bytes(&other, &bytes).unwrap();
                std::fs::write(format!("{}.asc", file.display()), sig).unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            let bucket = on_s3.then(new_bucket);
            let dest = match &bucket {
                Some(b) => format!("s3://{b}/root"),
                None => format!("file://{}/root", dir.path().display()),
            };
            let out = sf_publish(&moto_url())
                .args(tarball_args(&file, &dest, &fingerprint, cert.path()))
                .assert()
                .code(2);
            let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
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
    let (signing, fingerprint, cert) = new_key();
    let src = tempfile::tempdir().unwrap();
    let (file, bytes) = signed_tarball(&signing, src.path());
    let bucket = new_bucket();
    let dest = format!("s3://{bucket}/root");
    sf_publish(&moto_url())
        .args(tarball_args(&file, &dest, &fingerprint, cert.path()))
        .assert()
        .success();
    assert_published_whole(&bucket, &bytes);
}

#[test]
fn a_lost_answer_to_a_multipart_completion_counts_as_written() {
    // Every answer to CompleteMultipartUpload is lost: the server assembles the tarball, the
    // publisher hears nothing however often it retries, and the object itself must say that the
    // upload did complete (our size and sha256), so the run succeeds with nothing left open.
    let (signing, fingerprint, cert) = new_key();
    let src = tempfile::tempdir().unwrap();
    let (file, bytes) = signed_tarball(&signing, src.path());
    let bucket = new_bucket();
    let dest = format!("s3://{bucket}/root");
    let proxy = proxy::lose_answers(&moto_url(), "POST", "uploadId=");
    let out = sf_publish(&proxy.url)
        .args(tarball_args(&file, &dest, &fingerprint, cert.path()))
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
        report["change_list"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == KEY && c["action"] == "created"),
        "the tarball is in the change list as created: {report}"
    );
    assert_published_whole(&bucket, &bytes);
}
