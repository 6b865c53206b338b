//! `sf-publish tarball` checks each tarball (its signature and its sha256 against the signed
//! `SHA256SUMS`) while it uploads. A check that fails must leave nothing at the destination: the
//! multipart upload aborted on a real local S3 server (moto), the staged file removed on a
//! directory, and the run ends as bad input naming the tarball.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use sequoia_openpgp as openpgp;

use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sf_aws::AwsSettings;
use sf_testkit::moto_url;

const NAME: &str = "slurm-24.11-jammy-software.tar.gz";

fn aws() -> AwsSettings {
    AwsSettings::local(&moto_url(), "test", "test")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sf_publish() -> Command {
    let mut c = Command::cargo_bin("sf-publish").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3_ENDPOINT_URL", moto_url())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    c
}

/// A signing key made for the test, and its certificate in a file.
fn new_key() -> (sf_pgp::SigningKey, tempfile::NamedTempFile) {
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
        cert_file,
    )
}

/// A 12 MiB tarball of noise (three 5 MiB parts), signed, with its signed `SHA256SUMS`.
fn signed_tarball(key: &sf_pgp::SigningKey, dir: &Path) -> (PathBuf, Vec<u8>) {
    let file = dir.join(NAME);
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let bytes: Vec<u8> = (0..(12 << 20) + 333)
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

/// What is in a bucket: its objects and its open multipart uploads.
fn bucket_contents(bucket: &str) -> (Vec<String>, Vec<String>) {
    rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        let s3 = aws.s3_client(&sdk);
        let objects = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        let uploads = s3
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        (
            objects
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect(),
            uploads
                .uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect(),
        )
    })
}

fn new_bucket() -> String {
    let bucket = format!("sf-tarball-{}", sf_core::fsutil::random_hex(6).unwrap());
    rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        aws.s3_client(&sdk)
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
    });
    bucket
}

#[test]
fn a_tarball_that_fails_its_checks_while_uploading_leaves_nothing() {
    let (key, cert) = new_key();
    let (other, _) = new_key();
    for damage in ["changed after signing", "signed by another key"] {
        for on_s3 in [true, false] {
            let src = tempfile::tempdir().unwrap();
            let (file, mut bytes) = signed_tarball(&key, src.path());
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
            let out = sf_publish()
                .arg("tarball")
                .arg(&file)
                .arg(&dest)
                .args(["--fingerprint", &key.fingerprint().to_string(), "--cert"])
                .arg(cert.path())
                .args(["--multipart-threshold-mib", "5", "--part-size-mib", "5"])
                .assert()
                .code(2);
            let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
            assert!(err.contains(NAME), "{damage}: the tarball is named: {err}");
            match &bucket {
                Some(b) => {
                    let (objects, uploads) = bucket_contents(b);
                    assert!(objects.is_empty(), "{damage}: visible: {objects:?}");
                    assert!(uploads.is_empty(), "{damage}: open uploads: {uploads:?}");
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
    let (key, cert) = new_key();
    let src = tempfile::tempdir().unwrap();
    let (file, bytes) = signed_tarball(&key, src.path());
    let bucket = new_bucket();
    sf_publish()
        .arg("tarball")
        .arg(&file)
        .arg(format!("s3://{bucket}/root"))
        .args(["--fingerprint", &key.fingerprint().to_string(), "--cert"])
        .arg(cert.path())
        .args(["--multipart-threshold-mib", "5", "--part-size-mib", "5"])
        .assert()
        .success();
    let (mut objects, uploads) = bucket_contents(&bucket);
    objects.sort();
    assert_eq!(
        objects,
        [
            "root/builds/24.11/jammy/SHA256SUMS",
            "root/builds/24.11/jammy/SHA256SUMS.asc",
            "root/builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz",
            "root/builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz.asc",
        ]
    );
    assert!(uploads.is_empty());
    let got = rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        let o = aws
            .s3_client(&sdk)
            .get_object()
            .bucket(&bucket)
            .key("root/builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz")
            .send()
            .await
            .unwrap();
        o.body.collect().await.unwrap().into_bytes()
    });
    assert!(got[..] == bytes[..], "the tarball arrived changed");
}
