//! The real `sf-publish` binary against a real local S3 server (moto) and a directory: the same
//! suite on both. Mirrors are the Spack fixtures (signed here with a key made in the test) and
//! small synthetic mirrors with distinct specs for the concurrency tests.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use sequoia_openpgp as openpgp;
use serde_json::{json, Value};

use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sf_aws::AwsSettings;
use sf_core::layout::{spack, Destination};
use sf_spack::index::Index;
use sf_spack::manifest::{compression, media_type, KeyIndex, Manifest, ManifestFile};
use sf_spack::mirror::Mirror;
use sf_spack::spec::dag_hash_of;
use sf_store::Store;
use sf_testkit::{fixture, moto_url};

#[path = "support/proxy.rs"]
mod proxy;

const FIXTURE_INDEX: &str = "9a3a151a1d8fd8ee70181218d5c275d6b9ee96d3e028d109fa994d7fad6324ce";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Where a test publishes.
enum Backend {
    S3 { bucket: String },
    Dir { dir: tempfile::TempDir },
}

impl Backend {
    fn s3() -> Self {
        let bucket = format!("sf-publish-{}", sf_core::fsutil::random_hex(6).unwrap());
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
        Backend::S3 { bucket }
    }

    fn dir() -> Self {
        Backend::Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn both() -> [Backend; 2] {
        [Backend::s3(), Backend::dir()]
    }

    /// The URL of a mirror root (or destination root) under this backend.
    fn url(&self, prefix: &str) -> String {
        match self {
            Backend::S3 { bucket } => format!("s3://{bucket}/{prefix}"),
            Backend::Dir { dir } => format!("file://{}/{prefix}", dir.path().display()),
        }
    }

    fn store(&self, prefix: &str) -> Store {
        rt().block_on(Store::open(
            &Destination::parse(&self.url(prefix)).unwrap(),
            &aws(),
        ))
        .unwrap()
    }
}

fn aws() -> AwsSettings {
    AwsSettings::local(&moto_url(), "test", "test")
}

fn sf_publish() -> Command {
    let mut c = Command::cargo_bin("sf-publish").unwrap();
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
        .env("S3_ENDPOINT_URL", moto_url())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    c
}

fn json_out(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// A signing key made for the test.
struct Key {
    signing: sf_pgp::SigningKey,
    fingerprint: String,
    cert_file: tempfile::NamedTempFile,
}

fn new_key() -> Key {
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

/// Sign every spec manifest of a local mirror and publish the key into it (what sf-sign does).
fn sign_mirror(root: &Path, key: &Key) {
    let m = Mirror::open(root).unwrap();
    for e in m.spec_manifests().unwrap() {
        let path = m.path(&e.key);
        let file = ManifestFile::parse(&std::fs::read(&path).unwrap()).unwrap();
        let signed = sf_pgp::sign::clearsign(&key.signing, file.body.as_bytes()).unwrap();
        std::fs::write(&path, signed).unwrap();
    }
    let public = key.signing.public_key_armored().unwrap();
    let rec = m
        .write_blob(&public, media_type::PGP_KEYS, compression::NONE)
        .unwrap();
    m.write_manifest(
        &spack::key_manifest(&key.fingerprint),
        &Manifest::single(rec),
    )
    .unwrap();
    let mut ki = m.read_key_index().unwrap().unwrap_or_default();
    ki.insert(&key.fingerprint);
    let rec = m
        .write_blob(&ki.to_bytes(), media_type::KEY_INDEX, compression::NONE)
        .unwrap();
    m.write_manifest(spack::KEYS_MANIFEST, &Manifest::single(rec))
        .unwrap();
    m.write_layout_json().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The unsigned fixture mirror, copied and signed with `key`.
fn signed_fixture(key: &Key) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("spack-v3-unsigned"), dir.path());
    sign_mirror(dir.path(), key);
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn node(name: &str, deps: &[(&str, &str)]) -> Value {
    node_for(name, "1.0", "debian12", "x86_64_v4", deps)
}

fn node_for(name: &str, version: &str, os: &str, target: &str, deps: &[(&str, &str)]) -> Value {
    let mut n = json!({
        "name": name,
        "version": version,
        "arch": {"platform": "linux", "platform_os": os, "target": target},
        "namespace": "synthetic",
        "parameters": {"build_system": "generic"},
        "package_hash": "aaaa",
    });
    if !deps.is_empty() {
        n["dependencies"] = Value::Array(
            deps.iter()
                .map(|(d, h)| json!({"name": d, "hash": h, "parameters": {"deptypes": ["link", "run"], "virtuals": []}}))
                .collect(),
        );
    }
    n["annotations"] = json!({"original_specfile_version": 5});
    let h = dag_hash_of(&n);
    n["hash"] = Value::from(h);
    n
}

/// The dependency every synthetic spec shares; it is never pushed itself.
fn common() -> Value {
    node("libcommon", &[])
}

/// A signed mirror holding one spec per name, each depending on `libcommon`.
fn synthetic_mirror(names: &[String], key: &Key) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::open(dir.path()).unwrap();
    std::fs::create_dir_all(m.path("v3")).unwrap();
    let c = common();
    let mut hashes = Vec::new();
    for name in names {
        let root = node(name, &[("libcommon", c["hash"].as_str().unwrap())]);
        let hash = root["hash"].as_str().unwrap().to_string();
        let spec = json!({"spec": {"_meta": {"version": 5}, "nodes": [root, c.clone()]}, "buildcache_layout_version": 2});
        let spec_rec = m
            .write_blob(
                &gzip(spec.to_string().as_bytes()),
                media_type::SPEC,
                compression::GZIP,
            )
            .unwrap();
        let tar_rec = m
            .write_blob(
                &gzip(format!("tarball of {name}").as_bytes()),
                media_type::TARBALL,
                compression::GZIP,
            )
            .unwrap();
        let manifest = Manifest {
            version: 3,
            data: vec![tar_rec, spec_rec],
            extra: Default::default(),
        };
        m.write_manifest(&spack::spec_manifest(name, "1.0", &hash), &manifest)
            .unwrap();
        hashes.push(hash);
    }
    sign_mirror(dir.path(), key);
    (dir, hashes)
}

fn read_index(store: &Store) -> (Index, Vec<u8>) {
    rt().block_on(async {
        let m = store
            .get(spack::INDEX_MANIFEST)
            .await
            .unwrap()
            .expect("an index manifest");
        let file = ManifestFile::parse(&m.bytes).unwrap();
        let rec = file.manifest.record(media_type::INDEX).unwrap();
        let blob = store
            .get(&rec.blob_key().unwrap())
            .await
            .unwrap()
            .expect("the index blob");
        (Index::parse(&blob.bytes).unwrap(), blob.bytes)
    })
}

fn read_key_index(store: &Store) -> KeyIndex {
    rt().block_on(async {
        let m = store
            .get(spack::KEYS_MANIFEST)
            .await
            .unwrap()
            .expect("a keys manifest");
        let rec = ManifestFile::parse(&m.bytes)
            .unwrap()
            .manifest
            .record(media_type::KEY_INDEX)
            .unwrap()
            .clone();
        KeyIndex::parse(
            &store
                .get(&rec.blob_key().unwrap())
                .await
                .unwrap()
                .unwrap()
                .bytes,
        )
        .unwrap()
    })
}

fn listing(store: &Store) -> Vec<String> {
    rt().block_on(store.list(""))
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect()
}

fn publish_mirror(src: &Path, dest: &str, key: &Key) -> assert_cmd::assert::Assert {
    sf_publish()
        .args(["mirror"])
        .arg(src)
        .arg(dest)
        .args(["--fingerprint", &key.fingerprint])
        .assert()
}

#[test]
fn the_signed_fixture_publishes_and_its_index_is_spacks() {
    let key = new_key();
    let src = signed_fixture(&key);
    for b in Backend::both() {
        let dest = b.url("noble/slurm/deps");
        let results = tempfile::tempdir().unwrap();
        let out = publish_mirror(src.path(), &dest, &key)
            .get_output()
            .stdout
            .clone();
        let report = json_out(&out);
        // 6 tarball/spec blobs + key blob + index blob + key index blob, 3 spec manifests, the key
        // manifest, layout.json, the index and the key index manifests.
        assert_eq!(report["objects_uploaded"], 16, "{report}");
        let changes = report["change_list"]["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 16);
        let kinds: Vec<&str> = changes
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        // Blobs before manifests, the index last.
        let first_manifest = kinds.iter().position(|k| *k == "spec-manifest").unwrap();
        assert!(
            kinds[..first_manifest].iter().all(|k| *k == "blob"),
            "{kinds:?}"
        );
        assert_eq!(kinds.iter().filter(|k| **k == "index-manifest").count(), 1);

        let store = b.store("noble/slurm/deps");
        let (index, bytes) = read_index(&store);
        let theirs = Index::parse(
            &std::fs::read(fixture("spack-v3-signed").join(spack::blob("sha256", FIXTURE_INDEX)))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(index.len(), theirs.len());
        for (h, r) in theirs.records() {
            let ours = index.get(h).unwrap_or_else(|| panic!("{h} missing"));
            assert_eq!(
                (ours.in_buildcache, ours.ref_count),
                (r.in_buildcache, r.ref_count),
                "{h}"
            );
        }
        assert_eq!(
            bytes,
            std::fs::read(fixture("spack-v3-signed").join(spack::blob("sha256", FIXTURE_INDEX)))
                .unwrap()
        );
        assert!(read_key_index(&store).contains(&key.fingerprint));
        if let Backend::S3 { .. } = b {
            let h = rt()
                .block_on(store.head(&spack::blob("sha256", FIXTURE_INDEX)))
                .unwrap()
                .unwrap();
            assert_eq!(
                h.cache_control.as_deref(),
                Some("public, max-age=31536000, immutable")
            );
            let h = rt()
                .block_on(store.head(spack::INDEX_MANIFEST))
                .unwrap()
                .unwrap();
            assert_eq!(h.cache_control.as_deref(), Some("public, no-cache"));
            assert_eq!(h.content_type.as_deref(), Some("application/json"));
        }

        // Again: nothing to upload, nothing changed; the change list file and record say so.
        let change_file = results.path().join("changes.json");
        let out = publish_mirror(src.path(), &dest, &key);
        let again = sf_publish()
            .args(["mirror"])
            .arg(src.path())
            .arg(&dest)
            .args(["--fingerprint", &key.fingerprint, "--change-list"])
            .arg(&change_file)
            .arg("--results-dir")
            .arg(results.path())
            .assert()
            .success();
        drop(out);
        let report = json_out(&again.get_output().stdout);
        assert_eq!(report["objects_uploaded"], 0, "{report}");
        assert_eq!(report["bytes_uploaded"], 0);
        let list: Value = serde_json::from_slice(&std::fs::read(&change_file).unwrap()).unwrap();
        assert_eq!(list["changes"], json!([]));
        let record = std::fs::read_dir(results.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("sf-publish-mirror")
            })
            .unwrap();
        let record: Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
        assert_eq!(record["status"], "success");
        assert_eq!(record["metrics"]["objects_uploaded"], 0);
        // 7 blobs, 3 spec manifests, 1 key manifest found unchanged; the indexes already list everything.
        assert_eq!(record["metrics"]["objects_skipped"], 11);
    }
}

#[test]
fn concurrent_publishers_lose_no_spec() {
    const PUBLISHERS: usize = 8;
    const ROUNDS: usize = 6;
    const SPECS_EACH: usize = 2;
    let key = new_key();
    let mirrors: Vec<(tempfile::TempDir, Vec<String>)> = (0..PUBLISHERS)
        .map(|i| {
            synthetic_mirror(
                &(0..SPECS_EACH)
                    .map(|j| format!("pkg{i}x{j}"))
                    .collect::<Vec<_>>(),
                &key,
            )
        })
        .collect();
    let all: Vec<&String> = mirrors.iter().flat_map(|(_, h)| h.iter()).collect();
    let bin = assert_cmd::cargo::cargo_bin("sf-publish");
    for b in Backend::both() {
        for round in 0..ROUNDS {
            let prefix = format!("round{round}/deps");
            let dest = b.url(&prefix);
            let children: Vec<_> = mirrors
                .iter()
                .map(|(dir, _)| {
                    let mut c = StdCommand::new(&bin);
                    c.arg("mirror")
                        .arg(dir.path())
                        .arg(&dest)
                        .args(["--fingerprint", &key.fingerprint]);
                    c.env("AWS_ACCESS_KEY_ID", "test")
                        .env("AWS_SECRET_ACCESS_KEY", "test")
                        .env("AWS_REGION", "us-east-1")
                        .env("AWS_EC2_METADATA_DISABLED", "true")
                        .env("S3_ENDPOINT_URL", moto_url())
                        .env_remove("GITHUB_OUTPUT")
                        .env_remove("SF_RESULTS_DIR")
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped());
                    c.spawn().unwrap()
                })
                .collect();
            for child in children {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "round {round}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let (index, _) = read_index(&b.store(&prefix));
            for h in &all {
                assert!(
                    index.in_buildcache(h),
                    "round {round} on {dest}: {h} is missing from the index"
                );
            }
            let c = index.get(common()["hash"].as_str().unwrap()).unwrap();
            assert_eq!(
                c.ref_count as usize,
                PUBLISHERS * SPECS_EACH,
                "round {round}"
            );
            assert!(!c.in_buildcache);
            assert_eq!(index.len(), all.len() + 1);
        }
    }
}

#[test]
fn a_killed_publisher_run_again_completes() {
    let key = new_key();
    let names: Vec<String> = (0..30).map(|i| format!("big{i}")).collect();
    let (src, hashes) = synthetic_mirror(&names, &key);
    let bin = assert_cmd::cargo::cargo_bin("sf-publish");
    for b in Backend::both() {
        let dest = b.url("killed");
        let mut c = StdCommand::new(&bin);
        c.arg("mirror").arg(src.path()).arg(&dest).args([
            "--fingerprint",
            &key.fingerprint,
            "--concurrency",
            "1",
        ]);
        c.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("S3_ENDPOINT_URL", moto_url())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever landed: never a spec manifest whose blobs are missing.
        let store = b.store("killed");
        let keys = listing(&store);
        for k in keys.iter().filter(|k| k.ends_with(".spec.manifest.json")) {
            let m =
                ManifestFile::parse(&rt().block_on(store.get(k)).unwrap().unwrap().bytes).unwrap();
            for r in &m.manifest.data {
                assert!(
                    keys.contains(&r.blob_key().unwrap()),
                    "{k} is visible before its blob"
                );
            }
        }
        publish_mirror(src.path(), &dest, &key).success();
        let (index, _) = read_index(&store);
        for h in &hashes {
            assert!(index.in_buildcache(h));
        }
    }
}

#[test]
fn a_failed_check_uploads_nothing() {
    let key = new_key();
    let other = new_key();
    for b in Backend::both() {
        // A blob whose sha256 does not match.
        let src = signed_fixture(&key);
        let blob = src.path().join(spack::blob(
            "sha256",
            "e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1",
        ));
        let mut bytes = std::fs::read(&blob).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&blob, bytes).unwrap();
        let out = publish_mirror(src.path(), &b.url("bad"), &key).code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(
            err.contains("greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan")
                && err.contains("nothing was uploaded"),
            "{err}"
        );

        // Signed by another key than the expected one.
        let src = signed_fixture(&other);
        let out = sf_publish()
            .args(["mirror"])
            .arg(src.path())
            .arg(b.url("bad"))
            .args(["--fingerprint", &key.fingerprint, "--cert"])
            .arg(key.cert_file.path())
            .assert()
            .code(2);
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("signature"));

        // Unsigned manifests without --allow-unsigned.
        let unsigned = fixture("spack-v3-unsigned");
        let out = publish_mirror(&unsigned, &b.url("bad"), &key).code(2);
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("key"));
        let out = sf_publish()
            .args(["mirror"])
            .arg(&unsigned)
            .arg(b.url("bad"))
            .args(["--fingerprint", &key.fingerprint, "--cert"])
            .arg(key.cert_file.path())
            .assert()
            .code(2);
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("is not signed"));

        // A layout-2 source.
        let out = publish_mirror(&fixture("spack-v2-signed"), &b.url("bad"), &key).code(2);
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("layout-2"));

        let store = b.store("bad");
        assert_eq!(listing(&store), Vec::<String>::new());
    }
    // Unsigned mirrors publish with --allow-unsigned.
    let b = Backend::dir();
    sf_publish()
        .args(["mirror"])
        .arg(fixture("spack-v3-unsigned"))
        .arg(b.url("u"))
        .arg("--allow-unsigned")
        .assert()
        .success();
    assert_eq!(read_index(&b.store("u")).0.len(), 3);
}

#[test]
fn bad_destinations_are_named() {
    let key = new_key();
    let src = signed_fixture(&key);
    let out = publish_mirror(src.path(), "gs://bucket/x", &key).code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("unknown scheme"));
    let out = publish_mirror(src.path(), "s3://sf-publish-no-such-bucket/x", &key).code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("does not exist"));
    let b = Backend::s3();
    let out = sf_publish()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["mirror"])
        .arg(src.path())
        .arg(b.url("x"))
        .args(["--fingerprint", &key.fingerprint])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("no AWS credentials"));
}

#[test]
fn reindex_reproduces_the_fixture_index_and_skips_broken_specs() {
    for b in Backend::both() {
        // The signed fixture as it is, without its indexes, plus a broken spec manifest.
        let store = b.store("re");
        let src = fixture("spack-v3-signed");
        let mut files = Vec::new();
        walk(&src, "", &mut files);
        rt().block_on(async {
            for rel in &files {
                if rel == spack::INDEX_MANIFEST || rel == spack::KEYS_MANIFEST {
                    continue;
                }
                let bytes = std::fs::read(src.join(rel)).unwrap();
                let meta = sf_store::PutMeta {
                    content_type: "application/octet-stream".into(),
                    cache_control: "no-cache".into(),
                    sha256: sf_store::sha256_hex(&bytes),
                };
                store.put(rel, sf_store::Body::Bytes(bytes), &meta, sf_store::Condition::Always).await.unwrap();
            }
            let broken = b"{\n\"version\":3,\n\"data\":[]\n}".to_vec();
            let meta = sf_store::PutMeta { content_type: "x".into(), cache_control: "x".into(), sha256: sf_store::sha256_hex(&broken) };
            store
                .put("v3/manifests/spec/zzz/zzz-1.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spec.manifest.json", sf_store::Body::Bytes(broken), &meta, sf_store::Condition::Always)
                .await
                .unwrap();
        });
        let out = sf_publish()
            .args(["reindex", &b.url("re")])
            .assert()
            .success();
        let report = json_out(&out.get_output().stdout);
        assert_eq!(report["reindex"]["specs"], 3, "{report}");
        assert_eq!(
            report["reindex"]["skipped"][0]["key"],
            "v3/manifests/spec/zzz/zzz-1.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spec.manifest.json"
        );
        assert!(report["reindex"]["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no application/vnd.spack.spec.v5+json record"));
        let (_, bytes) = read_index(&store);
        assert_eq!(
            bytes,
            std::fs::read(src.join(spack::blob("sha256", FIXTURE_INDEX))).unwrap()
        );
        let keys = rt()
            .block_on(store.get(spack::KEYS_MANIFEST))
            .unwrap()
            .unwrap()
            .bytes;
        assert_eq!(keys, std::fs::read(src.join(spack::KEYS_MANIFEST)).unwrap());
    }
}

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            walk(root, &r, out);
        } else {
            out.push(r);
        }
    }
}

/// A tarball folder as sf-sign leaves it: the tarball, its .asc, SHA256SUMS and its .asc.
fn signed_tarball(key: &Key, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, gzip(b"a relocatable slurm")).unwrap();
    let sign = |p: &Path| {
        let sig = sf_pgp::sign::sign_bytes(&key.signing, &std::fs::read(p).unwrap()).unwrap();
        std::fs::write(format!("{}.asc", p.display()), sig).unwrap();
    };
    sign(&file);
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!("{}  {name}\n", sf_store::sha256_file(&file).unwrap()),
    )
    .unwrap();
    sign(&sums);
    (dir, file)
}

#[test]
fn tarballs_go_to_their_layout_keys_and_status_sees_them() {
    let key = new_key();
    for b in Backend::both() {
        let (dir, file) = signed_tarball(&key, "slurm-25.11-noble-software.tar.gz");
        let dest = b.url("root");
        let tarball = |f: &Path| {
            let mut c = sf_publish();
            c.arg("tarball")
                .arg(f)
                .arg(&dest)
                .args(["--fingerprint", &key.fingerprint, "--cert"])
                .arg(key.cert_file.path());
            c
        };
        // Without its signature: refused, nothing uploaded.
        let sig = PathBuf::from(format!("{}.asc", file.display()));
        let saved = std::fs::read(&sig).unwrap();
        std::fs::remove_file(&sig).unwrap();
        let out = tarball(&file).assert().code(2);
        assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("signature"));
        assert!(listing(&b.store("root")).is_empty());
        std::fs::write(&sig, saved).unwrap();

        let out = tarball(&file).assert().success();
        let report = json_out(&out.get_output().stdout);
        let keys: Vec<&str> = report["change_list"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "builds/25.11/noble/slurm-25.11-noble-software.tar.gz",
                "builds/25.11/noble/slurm-25.11-noble-software.tar.gz.asc",
                "builds/25.11/noble/SHA256SUMS",
                "builds/25.11/noble/SHA256SUMS.asc"
            ]
        );
        assert_eq!(report["change_list"]["changes"][0]["kind"], "tarball");
        // Published again: nothing uploaded.
        let report = json_out(&tarball(&file).assert().success().get_output().stdout);
        assert_eq!(report["objects_uploaded"], 0);

        // status: the published cell and only it.
        let m = sf_core::matrix::SupportMatrix::embedded();
        let layout = sf_core::layout::Layout::new(Some(&dest), None, Default::default()).unwrap();
        let sel = sf_core::matrix::Selection {
            toolchains: sf_core::matrix::ListArg::Named(vec!["noble".into(), "jammy".into()]),
            slurm_versions: sf_core::matrix::ListArg::Named(vec!["25.11".into()]),
            ..Default::default()
        };
        let cells: Vec<_> = sel
            .expand(&m, sf_core::matrix::Pipeline::Tarball)
            .unwrap()
            .iter()
            .map(|k| layout.cell(&m, k))
            .collect();
        let matrix = serde_json::to_string(&json!({ "include": cells })).unwrap();
        let out = sf_publish()
            .args(["status", "-"])
            .write_stdin(matrix)
            .assert()
            .success();
        let st = json_out(&out.get_output().stdout);
        let ids = |k: &str| {
            st[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("published"), ["tarball-25.11-noble-amd64-cpu"]);
        assert_eq!(ids("pending"), ["tarball-25.11-jammy-amd64-cpu"]);
        drop(dir);
    }
}

#[test]
fn status_of_mirror_cells_reads_the_index() {
    let key = new_key();
    let src = signed_fixture(&key);
    let b = Backend::dir();
    let dest = b.url("");
    let m = sf_core::matrix::SupportMatrix::embedded();
    let layout =
        sf_core::layout::Layout::new(Some(dest.trim_end_matches('/')), None, Default::default())
            .unwrap();
    let keys = sf_core::matrix::Selection {
        toolchains: sf_core::matrix::ListArg::Named(vec!["noble".into()]),
        ..Default::default()
    }
    .expand(&m, sf_core::matrix::Pipeline::Deps)
    .unwrap();
    let noble = layout.cell(&m, &keys[0]);
    assert_eq!(noble.toolchain.as_str(), "noble");
    // The fixture is debian12/x86_64_v4; a cell for that OS and target sees its specs.
    let mut cell = noble.clone();
    cell.spack_os = Some("debian12".into());
    cell.spack_target = "x86_64_v4".into();
    publish_mirror(src.path(), &cell.deps_mirror.url, &key).success();
    let matrix = serde_json::to_string(&json!({ "include": [cell, noble] })).unwrap();
    let out = sf_publish()
        .args(["status", "-"])
        .write_stdin(matrix)
        .assert()
        .success();
    let st = json_out(&out.get_output().stdout);
    assert_eq!(st["published"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["pending"].as_array().unwrap().len(), 1, "{st}");
}

#[test]
fn a_large_tarball_goes_multipart_and_arrives_whole() {
    let key = new_key();
    let b = Backend::s3();
    let dir = tempfile::tempdir().unwrap();
    let name = "slurm-24.11-jammy-software.tar.gz";
    let file = dir.path().join(name);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let bytes: Vec<u8> = (0..(12 << 20) + 777)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let sign = |p: &Path| {
        let sig = sf_pgp::sign::sign_bytes(&key.signing, &std::fs::read(p).unwrap()).unwrap();
        std::fs::write(format!("{}.asc", p.display()), sig).unwrap();
    };
    sign(&file);
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  {name}\n", sf_store::sha256_hex(&bytes))).unwrap();
    sign(&sums);
    let out = sf_publish()
        .arg("tarball")
        .arg(&file)
        .arg(b.url("root"))
        .args(["--fingerprint", &key.fingerprint, "--cert"])
        .arg(key.cert_file.path())
        .args([
            "--multipart-threshold-mib",
            "5",
            "--part-size-mib",
            "5",
            "--part-concurrency",
            "2",
        ])
        .args(["--progress-secs", "0.05"])
        .assert()
        .success();
    // stderr is a pipe here, as in a CI log: one-line reports, ending with the whole total.
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("sf-publish: progress: "))
        .collect();
    assert!(!lines.is_empty(), "no progress lines: {err}");
    assert!(lines.iter().all(|l| l.contains("/s; ")), "a rate: {err}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("sf-publish: progress: 100%, 12.") && last.contains(" MiB of 12."),
        "the last line has the whole total: {last}"
    );
    assert!(
        !err.contains('\r') && !err.contains("\x1b["),
        "no bar in a log: {err}"
    );
    let store = b.store("root");
    let got = rt()
        .block_on(store.get("builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz"))
        .unwrap()
        .unwrap();
    assert!(got.bytes == bytes, "the tarball arrived changed");
    let Backend::S3 { bucket } = &b else {
        unreachable!()
    };
    let open = rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        aws.s3_client(&sdk)
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
    });
    assert!(open.uploads().is_empty());
}

/// Quote a word for `sh -c`.
fn sh_quote(w: &std::ffi::OsStr) -> String {
    format!("'{}'", w.to_string_lossy().replace('\'', "'\\''"))
}

#[test]
fn a_terminal_gets_a_bar() {
    // util-linux `script` runs the binary on a pseudo-terminal, as a person at a shell would.
    let script = sf_testkit::require_tool("script");
    let key = new_key();
    let b = Backend::s3();
    let dir = tempfile::tempdir().unwrap();
    let name = "slurm-25.11-jammy-software.tar.gz";
    let file = dir.path().join(name);
    let mut x: u64 = 0x51afd7ed558ccd;
    let bytes: Vec<u8> = (0..(11 << 20) + 5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let sign = |p: &Path| {
        let sig = sf_pgp::sign::sign_bytes(&key.signing, &std::fs::read(p).unwrap()).unwrap();
        std::fs::write(format!("{}.asc", p.display()), sig).unwrap();
    };
    sign(&file);
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  {name}\n", sf_store::sha256_hex(&bytes))).unwrap();
    sign(&sums);
    let bin = assert_cmd::cargo::cargo_bin("sf-publish");
    let args: Vec<std::ffi::OsString> = vec![
        bin.into(),
        "tarball".into(),
        file.clone().into(),
        b.url("root").into(),
        "--fingerprint".into(),
        key.fingerprint.clone().into(),
        "--cert".into(),
        key.cert_file.path().into(),
        "--multipart-threshold-mib".into(),
        "5".into(),
        "--part-size-mib".into(),
        "5".into(),
        "--progress-secs".into(),
        "0.05".into(),
    ];
    let line: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    // The same environment as sf_publish(), on a terminal outside GitHub Actions.
    let mut c = std::process::Command::new(script);
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_")
            || k.starts_with("GITHUB_")
            || k.starts_with("AWS_")
            || k == "S3_ENDPOINT_URL"
            || k == "CI"
        {
            c.env_remove(k);
        }
    }
    let out = c
        .env("TERM", "xterm-256color")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("S3_ENDPOINT_URL", moto_url())
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    // The finished bar, full, with the bytes: drawn in place, not logged as lines.
    assert!(
        text.contains(&format!("{}]", "#".repeat(10))) && !text.contains("#-"),
        "no full bar: {text:?}"
    );
    assert!(text.contains(" MiB/11."), "bytes done/total: {text:?}");
    assert!(text.contains("4 uploaded, 0 unchanged"), "{text:?}");
    assert!(
        !text.contains("sf-publish: progress: "),
        "no log lines on a terminal: {text:?}"
    );
    let got = rt()
        .block_on(
            b.store("root")
                .head("builds/25.11/jammy/slurm-25.11-jammy-software.tar.gz"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.size, bytes.len() as u64);
}

#[test]
fn dry_run_plans_and_actions_outputs_point_at_the_change_list() {
    let key = new_key();
    let src = signed_fixture(&key);
    let b = Backend::dir();
    let out = sf_publish()
        .args(["mirror"])
        .arg(src.path())
        .arg(b.url("m"))
        .args(["--fingerprint", &key.fingerprint, "--dry-run"])
        .assert()
        .success();
    let plan = json_out(&out.get_output().stdout);
    let kinds: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"blob"));
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["index-manifest", "key-index-manifest"]
    );
    assert!(
        listing(&b.store("m")).is_empty(),
        "a dry run uploads nothing"
    );

    let gh = tempfile::tempdir().unwrap();
    let output = gh.path().join("output");
    std::fs::write(&output, "").unwrap();
    sf_publish()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .env("SF_RESULTS_DIR", gh.path().join("results"))
        .args(["mirror"])
        .arg(src.path())
        .arg(b.url("m"))
        .args(["--fingerprint", &key.fingerprint])
        .assert()
        .success();
    let outputs = sf_testkit::parse_file_commands(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["changes"], "16");
    let list: Value =
        serde_json::from_slice(&std::fs::read(&outputs["change-list"]).unwrap()).unwrap();
    assert_eq!(list["changes"].as_array().unwrap().len(), 16);
    assert_eq!(list["schema_version"], 1);
    let record: Value =
        serde_json::from_slice(&std::fs::read(&outputs["result"]).unwrap()).unwrap();
    assert_eq!(record["step"], "sf-publish mirror");
    assert_eq!(record["metrics"]["objects_uploaded"], 16);
}

/// Write `len` bytes of noise and return their sha256, computed on the way. One 8 MiB block of
/// xorshift64* output, written rotated by a different offset each time: no two blocks alike (a part
/// sent to the wrong place shows), nothing gzip's 32 KiB window can shrink, and no per-byte work
/// in this debug-built test beyond the first block.
fn write_noise(path: &Path, len: u64, seed: u64) -> String {
    use sha2::Digest;
    const BLOCK: usize = 8 << 20;
    let mut x = seed | 1;
    let mut base = Vec::with_capacity(BLOCK);
    while base.len() < BLOCK {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        base.extend_from_slice(&x.wrapping_mul(0x2545f4914f6cdd1d).to_le_bytes());
    }
    let mut f = std::io::BufWriter::with_capacity(BLOCK, std::fs::File::create(path).unwrap());
    let mut h = sha2::Sha256::new();
    let mut left = len;
    let mut i = 0usize;
    while left > 0 {
        let off = (i * 1_000_003) % BLOCK;
        for piece in [&base[off..], &base[..off]] {
            let n = (piece.len() as u64).min(left) as usize;
            h.update(&piece[..n]);
            f.write_all(&piece[..n]).unwrap();
            left -= n as u64;
        }
        i += 1;
    }
    f.flush().unwrap();
    hex::encode(h.finalize())
}

/// The sha256 of an object, streamed from the server (never whole in memory).
fn object_sha256(bucket: &str, key: &str) -> (u64, String) {
    use sha2::Digest;
    rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        let mut body = aws
            .s3_client(&sdk)
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body;
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.try_next().await.unwrap() {
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        (n, hex::encode(h.finalize()))
    })
}

#[test]
fn publishing_survives_throttling_and_dropped_connections() {
    let key = new_key();
    let src = signed_fixture(&key);
    let proxy = proxy::faulty(&moto_url(), 6);
    let b = Backend::s3();
    let through = |c: &mut Command| {
        c.env("S3_ENDPOINT_URL", &proxy.url)
            .args(["--aws-max-attempts", "10"]);
    };
    let mut c = sf_publish();
    through(&mut c);
    c.args(["mirror"])
        .arg(src.path())
        .arg(b.url("deps"))
        .args(["--fingerprint", &key.fingerprint])
        .assert()
        .success();
    let (_, index) = read_index(&b.store("deps"));
    assert_eq!(
        index,
        std::fs::read(fixture("spack-v3-signed").join(spack::blob("sha256", FIXTURE_INDEX)))
            .unwrap()
    );
    let mirror_faults = proxy.faults();

    // A 1 GiB tarball through the same faults, as multipart parts. The folder (and the GiB in it)
    // is removed when `dir` drops, also when an assertion fails.
    let dir = tempfile::tempdir().unwrap();
    let name = "slurm-23.11-noble-software.tar.gz";
    let file = dir.path().join(name);
    let size: u64 = (1 << 30) + 99;
    let started = std::time::Instant::now();
    let sha = write_noise(&file, size, 0x2545f4914f6cdd1d);
    let written = started.elapsed();
    sf_pgp::sign::sign_file(&key.signing, &file).unwrap();
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{sha}  {name}\n")).unwrap();
    sf_pgp::sign::sign_file(&key.signing, &sums).unwrap();
    let prepared = started.elapsed();
    // Parts of 64 MiB, 4 in flight: 17 parts. A fault in 10 requests here (each costs a part
    // sent again) still hits every kind, with the local server's Python, which bounds the speed
    // here, doing about half again the work.
    let proxy = proxy::faulty(&moto_url(), 10);
    let mut c = sf_publish();
    c.env("S3_ENDPOINT_URL", &proxy.url)
        .args(["--aws-max-attempts", "10"]);
    let out = c
        .arg("tarball")
        .arg(&file)
        .arg(b.url("root"))
        .args(["--fingerprint", &key.fingerprint, "--cert"])
        .arg(key.cert_file.path())
        .args(["--part-size-mib", "64", "--part-concurrency", "4"])
        .args(["--progress-secs", "2"])
        .assert()
        .success();
    let published = started.elapsed();
    let report = json_out(&out.get_output().stdout);
    assert_eq!(report["objects_uploaded"], 4, "{report}");
    // The CI-log progress shows the GiB moving, not just starting and ending.
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let moving: std::collections::BTreeSet<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("sf-publish: progress: "))
        .filter_map(|l| l.split_once("%,").map(|(pc, _)| pc))
        .filter(|pc| *pc != "0" && *pc != "100")
        .collect();
    assert!(moving.len() >= 3, "progress while the GiB went up: {err}");

    let Backend::S3 { bucket } = &b else {
        unreachable!()
    };
    let (got_len, got_sha) = object_sha256(
        bucket,
        "root/builds/23.11/noble/slurm-23.11-noble-software.tar.gz",
    );
    assert_eq!(got_len, size);
    assert_eq!(got_sha, sha, "the tarball arrived changed");
    let checked = started.elapsed();
    let s3 = rt().block_on(async {
        let aws = aws();
        let sdk = aws.load().await.unwrap();
        aws.s3_client(&sdk)
    });
    let open = rt()
        .block_on(s3.list_multipart_uploads().bucket(bucket).send())
        .unwrap();
    assert!(
        open.uploads().is_empty(),
        "no multipart upload is left open: {:?}",
        open.uploads()
    );
    // The local server keeps objects in memory; give the GiB back for the rest of the suite.
    rt().block_on(
        s3.delete_object()
            .bucket(bucket)
            .key("root/builds/23.11/noble/slurm-23.11-noble-software.tar.gz")
            .send(),
    )
    .unwrap();
    assert!(
        mirror_faults >= 5 && proxy.faults() >= 3,
        "the proxies injected faults: {mirror_faults} in the mirror, {} in the tarball",
        proxy.faults()
    );
    eprintln!(
        "1 GiB tarball: written {:.1}s, signed {:.1}s, published {:.1}s, downloaded and hashed {:.1}s; {} faults injected in its publish",
        written.as_secs_f64(),
        (prepared - written).as_secs_f64(),
        (published - prepared).as_secs_f64(),
        (checked - published).as_secs_f64(),
        proxy.faults()
    );
    drop(dir);
}

#[test]
fn status_of_version_cells_looks_for_their_slurm_spec() {
    let key = new_key();
    let b = Backend::dir();
    let m = sf_core::matrix::SupportMatrix::embedded();
    let layout = sf_core::layout::Layout::new(
        Some(b.url("").trim_end_matches('/')),
        None,
        Default::default(),
    )
    .unwrap();
    let keys = sf_core::matrix::Selection {
        toolchains: sf_core::matrix::ListArg::Named(vec!["noble".into()]),
        slurm_versions: sf_core::matrix::ListArg::Named(vec!["25.11".into(), "24.11".into()]),
        ..Default::default()
    }
    .expand(&m, sf_core::matrix::Pipeline::Version)
    .unwrap();
    let cells: Vec<_> = keys.iter().map(|k| layout.cell(&m, k)).collect();
    let built = cells
        .iter()
        .find(|c| c.slurm_version.as_ref().unwrap().as_str() == "25.11")
        .unwrap();
    // A version mirror holding slurm@<the cell's exact Spack version> for the cell's OS and target.
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(dir.path()).unwrap();
    std::fs::create_dir_all(mirror.path("v3")).unwrap();
    let version = built.slurm_spack_version.clone().unwrap();
    let root = node_for(
        "slurm",
        &version,
        built.spack_os.as_deref().unwrap(),
        &built.spack_target,
        &[],
    );
    let hash = root["hash"].as_str().unwrap().to_string();
    let spec =
        json!({"spec": {"_meta": {"version": 5}, "nodes": [root]}, "buildcache_layout_version": 2});
    let spec_rec = mirror
        .write_blob(
            &gzip(spec.to_string().as_bytes()),
            media_type::SPEC,
            compression::GZIP,
        )
        .unwrap();
    let tar_rec = mirror
        .write_blob(&gzip(b"slurm"), media_type::TARBALL, compression::GZIP)
        .unwrap();
    let manifest = Manifest {
        version: 3,
        data: vec![tar_rec, spec_rec],
        extra: Default::default(),
    };
    mirror
        .write_manifest(&spack::spec_manifest("slurm", &version, &hash), &manifest)
        .unwrap();
    sign_mirror(dir.path(), &key);
    publish_mirror(
        dir.path(),
        &built.version_mirror.as_ref().unwrap().url,
        &key,
    )
    .success();

    let matrix = serde_json::to_string(&json!({ "include": cells })).unwrap();
    let out = sf_publish()
        .args(["status", "-"])
        .write_stdin(matrix)
        .assert()
        .success();
    let st = json_out(&out.get_output().stdout);
    let ids = |k: &str| {
        st[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("published"), std::slice::from_ref(&built.id), "{st}");
    assert_eq!(ids("pending").len(), 1, "{st}");
}
