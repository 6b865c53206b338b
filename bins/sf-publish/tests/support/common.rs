//! What the sf-publish test binaries share: the publisher's environment and its JSON output, a
//! signing key made for the test, signed tarball folders, and the test's own calls to the local
//! S3 server (moto). Each binary uses a part of it.

#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::serialize::SerializeInto;
use serde_json::Value;
use sf_aws::aws_sdk_s3::Client;
use sf_aws::AwsSettings;
use sf_testkit::moto_url;

/// The local server, with its test keys.
pub fn aws() -> AwsSettings {
    AwsSettings::local(&moto_url(), "test", "test")
}

/// A runtime for the test's own calls to the server and the stores.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Run `f` with an S3 client of the local server (one runtime for the client and its calls).
pub fn with_s3<T, F>(f: impl FnOnce(Client) -> F) -> T
where
    F: Future<Output = T>,
{
    rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        f(aws.s3_client(&sdk)).await
    })
}

/// A new bucket on the local server, its name starting with `prefix`.
pub fn new_bucket(prefix: &str) -> String {
    let bucket = format!("{prefix}-{}", sf_core::fsutil::random_hex(6).unwrap());
    let b = bucket.clone();
    with_s3(|s3| async move { s3.create_bucket().bucket(b).send().await.unwrap() });
    bucket
}

/// The open multipart uploads of a bucket: (key, upload id).
pub fn open_uploads(bucket: &str) -> Vec<(String, String)> {
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
pub fn object_keys(bucket: &str) -> Vec<String> {
    let b = bucket.to_string();
    let out = with_s3(|s3| async move { s3.list_objects_v2().bucket(b).send().await.unwrap() });
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// The environment of a publisher talking to the S3 endpoint `endpoint` (the local server, or a
/// test proxy in front of it) with the server's test keys, and nothing of the caller's.
pub fn publisher_env(c: &mut StdCommand, endpoint: &str) {
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_")
            || k.starts_with("GITHUB_")
            || k.starts_with("AWS_")
            || k.starts_with("ACTIONS_")
            || k == "S3_ENDPOINT_URL"
            || k == "CI"
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

/// The sf-publish binary in `publisher_env`, as a plain command (to spawn and kill).
pub fn publisher(endpoint: &str) -> StdCommand {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("sf-publish"));
    publisher_env(&mut c, endpoint);
    c
}

/// The sf-publish binary in `publisher_env`, talking to the local server.
pub fn sf_publish() -> Command {
    Command::from_std(publisher(&moto_url()))
}

/// The publisher's stdout, which must be JSON.
pub fn json_out(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// The publisher's stderr, as text.
pub fn stderr_of(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

/// The text `field` of each entry of a JSON array (a plan, a change list, a status list).
pub fn column(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].as_str().unwrap().to_string())
        .collect()
}

/// Run `c`, which must end with exit code `code`; its stderr.
pub fn fails(c: &mut Command, code: i32) -> String {
    stderr_of(&c.assert().code(code))
}

/// The objects `mirror SRC` would upload, in order (a dry run; `args` say how it is trusted).
pub fn dry_run_plan(src: &Path, args: &[&str]) -> Value {
    json_out(
        &sf_publish()
            .args(["mirror"])
            .arg(src)
            .arg("file:///nonexistent-dry-run")
            .args(args)
            .arg("--dry-run")
            .assert()
            .success()
            .get_output()
            .stdout,
    )
}

/// A signing key made for the test: its fingerprint, and its certificate in a file.
pub struct Key {
    pub signing: sf_pgp::SigningKey,
    pub fingerprint: String,
    pub cert_file: tempfile::NamedTempFile,
}

pub fn new_key() -> Key {
    let (cert, _) = CertBuilder::general_purpose(Some("Publish Test <publish@example.invalid>"))
        .generate()
        .unwrap();
    let tsk = cert.as_tsk().armored().to_vec().unwrap();
    let signing = sf_pgp::SigningKey::load(&tsk, None, None).unwrap();
    let mut cert_file = tempfile::NamedTempFile::new().unwrap();
    cert_file
        .write_all(&cert.armored().to_vec().unwrap())
        .unwrap();
    Key {
        fingerprint: signing.fingerprint().to_string(),
        signing,
        cert_file,
    }
}

/// A tarball folder as sf-sign leaves it: the tarball `name` holding `bytes`, its .asc,
/// SHA256SUMS and its .asc, all signed with `key`.
pub fn signed_tarball(key: &Key, name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  {name}\n", sf_store::sha256_hex(bytes))).unwrap();
    for p in [&file, &sums] {
        let sig = sf_pgp::sign::sign_bytes(&key.signing, &std::fs::read(p).unwrap()).unwrap();
        std::fs::write(format!("{}.asc", p.display()), sig).unwrap();
    }
    (dir, file)
}

/// A tarball as sf-build packs one: a tar of `filler` bytes of view (noise, so it does not
/// shrink), then `BUILDINFO.json` last, gzipped as concatenated 1 MiB members by the same writer.
pub fn cell_tarball(buildinfo: &Value, filler: usize) -> Vec<u8> {
    let gz = sf_archive::pargz::ParGzWriter::new(Vec::new(), Default::default()).unwrap();
    let filler = sf_testkit::noise(filler, 0x9e37_79b9);
    let info = buildinfo.to_string();
    let (bytes, _) = sf_testkit::tar_into(
        gz,
        &[
            ("view/lib/libfiller.so", &filler),
            ("BUILDINFO.json", info.as_bytes()),
        ],
    )
    .finish()
    .unwrap();
    bytes
}

/// The `BUILDINFO.json` facts sf-publish checks against a tarball's cell.
pub fn buildinfo_of(cell: &sf_core::layout::Cell, spack_version: Option<&str>) -> Value {
    serde_json::json!({
        "schema_version": 1,
        "slurm_version": cell.slurm_version.as_ref().map(|v| v.as_str().to_string()),
        "slurm_spack_version": spack_version.or(cell.slurm_spack_version.as_deref()),
        "toolchain": cell.toolchain.as_str(),
        "arch": cell.arch.as_str(),
        "gpu": cell.gpu,
    })
}

/// `BUILDINFO.json` facts of the cell a tarball name stands for (`gpu` for a GPU build).
pub fn buildinfo_for(slurm_version: &str, toolchain: &str, arch: &str, gpu: bool) -> Value {
    serde_json::json!({
        "schema_version": 1,
        "slurm_version": slurm_version,
        "toolchain": toolchain,
        "arch": arch,
        "gpu": gpu,
    })
}
