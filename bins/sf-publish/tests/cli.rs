//! The real `sf-publish` binary against a real local S3 server (moto) and a directory: the same
//! suite on both. Mirrors are the Spack fixtures (signed here with a key made in the test) and
//! small synthetic mirrors with distinct specs for the concurrency tests.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use serde_json::{json, Value};

use sf_core::layout::{spack, Cell, Destination, Layout};
use sf_core::matrix::{ListArg, Pipeline, Selection, SupportMatrix};
use sf_spack::index::Index;
use sf_spack::manifest::{compression, media_type, KeyIndex, Manifest, ManifestFile};
use sf_spack::mirror::Mirror;
use sf_spack::spec::dag_hash_of;
use sf_store::Store;
use sf_testkit::{fixture, moto_url};

#[path = "support/common.rs"]
mod common;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/wire.rs"]
mod wire;

use common::{
    aws, buildinfo_for, buildinfo_of, cell_tarball, column, dry_run_plan, fails, json_out,
    new_bucket, new_key, open_uploads, publisher, publisher_env, rt, sf_publish, signed_tarball,
    stderr_of, with_s3, Key,
};

/// A small tarball of the 25.11 noble amd64 cpu cell.
fn noble_tarball() -> Vec<u8> {
    cell_tarball(&buildinfo_for("25.11", "noble", "amd64", false), 1024)
}

const FIXTURE_INDEX: &str = "9a3a151a1d8fd8ee70181218d5c275d6b9ee96d3e028d109fa994d7fad6324ce";

/// Where a test publishes.
enum Backend {
    S3 { bucket: String },
    Dir { dir: tempfile::TempDir },
}

impl Backend {
    fn s3() -> Self {
        Backend::S3 {
            bucket: new_bucket("sf-publish"),
        }
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

    /// The bucket of an S3 backend.
    fn bucket(&self) -> &str {
        match self {
            Backend::S3 { bucket } => bucket,
            Backend::Dir { .. } => panic!("not on S3"),
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
    node_with(name, version, os, target, &[], deps)
}

/// A spec node with variants (its `parameters`) besides the build system.
fn node_with(
    name: &str,
    version: &str,
    os: &str,
    target: &str,
    params: &[(&str, Value)],
    deps: &[(&str, &str)],
) -> Value {
    let mut n = json!({
        "name": name,
        "version": version,
        "arch": {"platform": "linux", "platform_os": os, "target": target},
        "namespace": "synthetic",
        "parameters": {"build_system": "generic"},
        "package_hash": "aaaa",
    });
    for (k, v) in params {
        n["parameters"][*k] = v.clone();
    }
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
fn libcommon() -> Value {
    node("libcommon", &[])
}

/// A signed mirror holding one spec per entry: its nodes (the root first) and what its tarball
/// holds (gzipped here).
fn signed_spec_mirror(specs: &[(Vec<Value>, Vec<u8>)], key: &Key) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = Mirror::open(dir.path()).unwrap();
    std::fs::create_dir_all(m.path("v3")).unwrap();
    for (nodes, tarball) in specs {
        let spec = json!({"spec": {"_meta": {"version": 5}, "nodes": nodes}, "buildcache_layout_version": 2});
        let spec_rec = m
            .write_blob(
                &gzip(spec.to_string().as_bytes()),
                media_type::SPEC,
                compression::GZIP,
            )
            .unwrap();
        let tar_rec = m
            .write_blob(&gzip(tarball), media_type::TARBALL, compression::GZIP)
            .unwrap();
        let manifest = Manifest {
            version: 3,
            data: vec![tar_rec, spec_rec],
            extra: Default::default(),
        };
        let root = |field: &str| nodes[0][field].as_str().unwrap();
        let key = spack::spec_manifest(root("name"), root("version"), root("hash"));
        m.write_manifest(&key, &manifest).unwrap();
    }
    sign_mirror(dir.path(), key);
    dir
}

/// A signed mirror holding one spec per name, each depending on `libcommon`.
fn synthetic_mirror(names: &[String], key: &Key) -> (tempfile::TempDir, Vec<String>) {
    let c = libcommon();
    let specs: Vec<(Vec<Value>, Vec<u8>)> = names
        .iter()
        .map(|name| {
            let root = node(name, &[("libcommon", c["hash"].as_str().unwrap())]);
            (
                vec![root, c.clone()],
                format!("tarball of {name}").into_bytes(),
            )
        })
        .collect();
    let hashes = specs
        .iter()
        .map(|(nodes, _)| nodes[0]["hash"].as_str().unwrap().to_string())
        .collect();
    (signed_spec_mirror(&specs, key), hashes)
}

/// The key of the blob a manifest's record of `media` points at.
fn blob_key(store: &Store, manifest: &str, media: &str) -> String {
    let m = rt()
        .block_on(store.get(manifest))
        .unwrap()
        .unwrap_or_else(|| panic!("no {manifest}"));
    ManifestFile::parse(&m.bytes)
        .unwrap()
        .manifest
        .record(media)
        .unwrap()
        .blob_key()
        .unwrap()
}

/// The bytes of that blob.
fn blob_of(store: &Store, manifest: &str, media: &str) -> Vec<u8> {
    let key = blob_key(store, manifest, media);
    rt().block_on(store.get(&key))
        .unwrap()
        .unwrap_or_else(|| panic!("no {key}"))
        .bytes
}

fn read_index(store: &Store) -> (Index, Vec<u8>) {
    let bytes = blob_of(store, spack::INDEX_MANIFEST, media_type::INDEX);
    (Index::parse(&bytes).unwrap(), bytes)
}

fn read_key_index(store: &Store) -> KeyIndex {
    KeyIndex::parse(&blob_of(store, spack::KEYS_MANIFEST, media_type::KEY_INDEX)).unwrap()
}

fn listing(store: &Store) -> Vec<String> {
    rt().block_on(store.list(""))
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect()
}

/// `mirror SRC DEST --create`, pinned to a key (`--create`: the tests' file:// destinations are
/// new directories).
fn mirror(src: &Path, dest: &str, fingerprint: &str) -> Command {
    let mut c = sf_publish();
    c.args(["mirror"])
        .arg(src)
        .arg(dest)
        .args(["--create", "--fingerprint", fingerprint]);
    c
}

fn publish_mirror(src: &Path, dest: &str, key: &Key) -> assert_cmd::assert::Assert {
    mirror(src, dest, &key.fingerprint).assert()
}

/// `tarball FILE DEST --create`, pinned to `key` and checked with its certificate.
fn tarball(file: &Path, dest: &str, key: &Key) -> Command {
    let mut c = sf_publish();
    c.arg("tarball")
        .arg(file)
        .arg(dest)
        .args(["--create", "--fingerprint", &key.fingerprint, "--cert"])
        .arg(key.cert_file.path());
    c
}

/// The result record of a `mirror` run in a results folder.
fn mirror_record(results: &Path) -> Value {
    let record = std::fs::read_dir(results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sf-publish-mirror")
        })
        .unwrap();
    serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap()
}

/// What `status -` says of these cells.
fn status(cells: &[Cell]) -> Value {
    let matrix = serde_json::to_string(&json!({ "include": cells })).unwrap();
    let out = sf_publish()
        .args(["status", "-"])
        .write_stdin(matrix)
        .assert()
        .success();
    json_out(&out.get_output().stdout)
}

/// The cells under the destination `root` in each of `pipelines`, for the toolchains, Slurm
/// versions, archs and builds named (none named: the matrix's defaults).
fn cells_at(root: &str, axes: [&[&str]; 4], pipelines: &[Pipeline]) -> Vec<Cell> {
    let named = |v: &[&str]| {
        if v.is_empty() {
            ListArg::Default
        } else {
            ListArg::Named(v.iter().map(|s| s.to_string()).collect())
        }
    };
    let [toolchains, slurm_versions, archs, builds] = axes.map(named);
    let sel = Selection {
        toolchains,
        slurm_versions,
        archs,
        builds,
        ..Default::default()
    };
    let m = SupportMatrix::embedded();
    let layout = Layout::new(Some(root), None, Default::default()).unwrap();
    pipelines
        .iter()
        .flat_map(|p| sel.expand(&m, *p).unwrap())
        .map(|k| layout.cell(&m, &k))
        .collect()
}

/// The fixture's own index blob.
fn fixture_index() -> Vec<u8> {
    std::fs::read(fixture("spack-v3-signed").join(spack::blob("sha256", FIXTURE_INDEX))).unwrap()
}

/// Put `bytes` at `key` as they are, stored with their own sha256.
fn put(store: &Store, key: &str, bytes: Vec<u8>, content_type: &str) {
    let meta = sf_store::PutMeta {
        content_type: content_type.into(),
        cache_control: "no-cache".into(),
        sha256: sf_store::sha256_hex(&bytes),
    };
    rt().block_on(store.put(
        key,
        sf_store::Body::Bytes(bytes),
        &meta,
        sf_store::Condition::Always,
    ))
    .unwrap();
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
        let kinds = column(&report["change_list"]["changes"], "kind");
        assert_eq!(kinds.len(), 16);
        // Blobs before manifests, the index last.
        let first_manifest = kinds.iter().position(|k| *k == "spec-manifest").unwrap();
        assert!(
            kinds[..first_manifest].iter().all(|k| *k == "blob"),
            "{kinds:?}"
        );
        assert_eq!(kinds.iter().filter(|k| **k == "index-manifest").count(), 1);

        let store = b.store("noble/slurm/deps");
        let (index, bytes) = read_index(&store);
        let theirs = Index::parse(&fixture_index()).unwrap();
        assert_eq!(index.len(), theirs.len());
        for (h, r) in theirs.records() {
            let ours = index.get(h).unwrap_or_else(|| panic!("{h} missing"));
            assert_eq!(
                (ours.in_buildcache, ours.ref_count),
                (r.in_buildcache, r.ref_count),
                "{h}"
            );
        }
        assert_eq!(bytes, fixture_index());
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
        let again = mirror(src.path(), &dest, &key.fingerprint)
            .arg("--change-list")
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
        let record = mirror_record(results.path());
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
    // Each publisher signs with its own key, so the key index is merged under contention too.
    let keys: Vec<Key> = (0..PUBLISHERS).map(|_| new_key()).collect();
    let mirrors: Vec<(tempfile::TempDir, Vec<String>)> = (0..PUBLISHERS)
        .map(|i| {
            synthetic_mirror(
                &(0..SPECS_EACH)
                    .map(|j| format!("pkg{i}x{j}"))
                    .collect::<Vec<_>>(),
                &keys[i],
            )
        })
        .collect();
    let all: Vec<&String> = mirrors.iter().flat_map(|(_, h)| h.iter()).collect();
    // moto checks a conditional write's precondition and then writes (s3/responses.py), not
    // atomically, so two racing If-Match writes can both succeed there. What keeps every spec
    // here is the publisher's confirming re-read after --confirm-delay-ms (see merge.rs): a run
    // whose update was overwritten finds its specs missing and merges again.
    for b in Backend::both() {
        for round in 0..ROUNDS {
            let prefix = format!("round{round}/deps");
            let dest = b.url(&prefix);
            let children: Vec<_> = mirrors
                .iter()
                .zip(&keys)
                .map(|((dir, _), key)| {
                    let mut c = publisher(&moto_url());
                    c.arg("mirror")
                        .arg(dir.path())
                        .arg(&dest)
                        .args(["--create", "--fingerprint", &key.fingerprint])
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
            let store = b.store(&prefix);
            let (index, _) = read_index(&store);
            for h in &all {
                assert!(
                    index.in_buildcache(h),
                    "round {round} on {dest}: {h} is missing from the index"
                );
            }
            let c = index.get(libcommon()["hash"].as_str().unwrap()).unwrap();
            assert_eq!(
                c.ref_count as usize,
                PUBLISHERS * SPECS_EACH,
                "round {round}"
            );
            assert!(!c.in_buildcache);
            assert_eq!(index.len(), all.len() + 1);
            let ki = read_key_index(&store);
            for k in &keys {
                assert!(
                    ki.contains(&k.fingerprint),
                    "round {round} on {dest}: key {} is missing from the key index",
                    k.fingerprint
                );
            }
        }
    }
}

/// Every `.tmp` file under a directory (a directory store's staged writes).
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".tmp") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn publisher_child(src: &Path, dest: &str, key: &Key, endpoint: &str) -> std::process::Child {
    let mut c = publisher(endpoint);
    c.arg("mirror").arg(src).arg(dest).args([
        "--fingerprint",
        &key.fingerprint,
        "--concurrency",
        "1",
    ]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c.spawn().unwrap()
}

/// What a killed run left: whatever landed, never a spec manifest whose blobs are missing.
fn check_partial(store: &Store) -> Vec<String> {
    let keys = listing(store);
    for k in keys.iter().filter(|k| k.ends_with(".spec.manifest.json")) {
        let m = ManifestFile::parse(&rt().block_on(store.get(k)).unwrap().unwrap().bytes).unwrap();
        for r in &m.manifest.data {
            assert!(
                keys.contains(&r.blob_key().unwrap()),
                "{k} is visible before its blob"
            );
        }
    }
    keys
}

#[test]
fn a_killed_publisher_run_again_completes() {
    const SPECS: usize = 6;
    let key = new_key();
    let names: Vec<String> = (0..SPECS).map(|i| format!("big{i}")).collect();
    let (src, hashes) = synthetic_mirror(&names, &key);
    let spec_manifests = |keys: &[String]| {
        keys.iter()
            .filter(|k| k.ends_with(".spec.manifest.json"))
            .count()
    };
    let finish = |store: &Store, dest: &str| {
        publish_mirror(src.path(), dest, &key).success();
        let (index, _) = read_index(store);
        for h in &hashes {
            assert!(
                index.in_buildcache(h),
                "{dest}: {h} is missing after the rerun"
            );
        }
    };

    // S3: the proxy holds the chosen PUT and the publisher is killed while it waits; with one
    // upload at a time the PUTs come in plan order: 2 blobs per spec and the key blob, the spec
    // manifests, the key manifest, layout.json, the index blob, then the index manifest.
    let index_put = (2 * SPECS + 1) + SPECS + 1 + 1 + 1 + 1;
    for (kill_at, why) in [(5, "among the blobs"), (index_put, "at the index manifest")] {
        let b = Backend::s3();
        let dest = b.url("killed");
        let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let hit = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let (p, h) = (pid.clone(), hit.clone());
        let proxy = proxy::on_put(
            &moto_url(),
            std::sync::Arc::new(move |n, target: &str| {
                if n != kill_at as u64 {
                    return None;
                }
                *h.lock().unwrap() = Some(target.to_string());
                let pid = p.load(std::sync::atomic::Ordering::SeqCst).to_string();
                let killed = StdCommand::new("kill")
                    .args(["-KILL", &pid])
                    .status()
                    .unwrap();
                assert!(killed.success());
                Some(proxy::Then::Drop)
            }),
        );
        let mut child = publisher_child(src.path(), &dest, &key, &proxy.url);
        pid.store(child.id(), std::sync::atomic::Ordering::SeqCst);
        let status = child.wait().unwrap();
        assert!(!status.success(), "{why}: the publisher was killed");
        let target = hit.lock().unwrap().clone().expect("the chosen PUT came");
        let store = b.store("killed");
        let keys = check_partial(&store);
        assert!(
            !keys.iter().any(|k| k == spack::INDEX_MANIFEST),
            "{why}: {keys:?}"
        );
        if kill_at == 5 {
            assert!(target.contains("/blobs/sha256/"), "{target}");
            assert_eq!(keys.len(), 4, "{why}: {keys:?}");
            assert_eq!(spec_manifests(&keys), 0, "{why}");
        } else {
            assert!(target.ends_with(spack::INDEX_MANIFEST), "{target}");
            assert_eq!(spec_manifests(&keys), SPECS, "{why}");
        }
        finish(&store, &dest);
        let bucket = b.bucket();
        let open = open_uploads(bucket);
        assert!(open.is_empty(), "{why}: {open:?}");
    }

    // A directory: the store renames a staged file into place under an exclusive lock of its
    // folder, so a lock the test holds stops the publisher right there, its `.tmp` staged; it is
    // killed once that file shows.
    let first_blob = {
        let plan = dry_run_plan(src.path(), &["--fingerprint", &key.fingerprint]);
        plan[3]["key"].as_str().unwrap().to_string()
    };
    let blob_dir = Path::new(&first_blob).parent().unwrap().to_path_buf();
    let index_dir = Path::new(spack::INDEX_MANIFEST)
        .parent()
        .unwrap()
        .to_path_buf();
    for (folder, why) in [
        (blob_dir, "among the blobs"),
        (index_dir, "at the index manifest"),
    ] {
        let b = Backend::dir();
        let Backend::Dir { dir } = &b else {
            unreachable!()
        };
        let dest = b.url("killed");
        let root = dir.path().join("killed");
        let locked = root.join(&folder);
        std::fs::create_dir_all(&locked).unwrap();
        let lock = std::fs::File::open(&locked).unwrap();
        lock.lock().unwrap();
        let mut child = publisher_child(src.path(), &dest, &key, &moto_url());
        let started = std::time::Instant::now();
        while temp_files(&locked).is_empty() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "{why}: the publisher never reached {}",
                locked.display()
            );
            assert!(child.try_wait().unwrap().is_none(), "{why}: it ended");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        drop(lock);
        let store = b.store("killed");
        let keys = check_partial(&store);
        assert!(
            !keys.iter().any(|k| k == spack::INDEX_MANIFEST),
            "{why}: {keys:?}"
        );
        if why == "at the index manifest" {
            assert_eq!(spec_manifests(&keys), SPECS, "{why}");
        } else {
            assert_eq!(spec_manifests(&keys), 0, "{why}");
        }
        let left_by_killed = temp_files(&root);
        assert_eq!(left_by_killed.len(), 1, "{why}: {left_by_killed:?}");
        finish(&store, &dest);
        // The rerun staged and renamed its own files, and writing the key the killed run had
        // staged removed that dead writer's file too.
        assert_eq!(temp_files(&root), Vec::<PathBuf>::new(), "{why}");
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
        let err = stderr_of(&publish_mirror(src.path(), &b.url("bad"), &key).code(2));
        assert!(
            err.contains("greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan")
                && err.contains("nothing was uploaded"),
            "{err}"
        );

        // Signed by another key than the expected one.
        let src = signed_fixture(&other);
        let err = fails(
            mirror(src.path(), &b.url("bad"), &key.fingerprint)
                .arg("--cert")
                .arg(key.cert_file.path()),
            2,
        );
        for e in Mirror::open(src.path()).unwrap().spec_manifests().unwrap() {
            assert!(err.contains(&e.key), "{} is not named: {err}", e.key);
        }

        // Unsigned manifests without --allow-unsigned.
        let unsigned = fixture("spack-v3-unsigned");
        let err = stderr_of(&publish_mirror(&unsigned, &b.url("bad"), &key).code(2));
        assert!(err.contains("key"));
        let err = fails(
            mirror(&unsigned, &b.url("bad"), &key.fingerprint)
                .arg("--cert")
                .arg(key.cert_file.path()),
            2,
        );
        assert!(err.contains("is not signed"));

        // A layout-2 source.
        let v2 = fixture("spack-v2-signed");
        let err = stderr_of(&publish_mirror(&v2, &b.url("bad"), &key).code(2));
        assert!(err.contains("layout-2"));

        let store = b.store("bad");
        assert_eq!(listing(&store), Vec::<String>::new());
    }
    // Unsigned mirrors publish with --allow-unsigned.
    let b = Backend::dir();
    sf_publish()
        .args(["mirror"])
        .arg(fixture("spack-v3-unsigned"))
        .arg(b.url("u"))
        .args(["--create", "--allow-unsigned"])
        .assert()
        .success();
    assert_eq!(read_index(&b.store("u")).0.len(), 3);
}

#[test]
fn bad_destinations_are_named() {
    let key = new_key();
    let src = signed_fixture(&key);
    let refused = |dest: &str| stderr_of(&publish_mirror(src.path(), dest, &key).code(2));
    assert!(refused("gs://bucket/x").contains("unknown scheme"));
    assert!(refused("s3://sf-publish-no-such-bucket/x").contains("does not exist"));
    let b = Backend::s3();
    let err = fails(
        mirror(src.path(), &b.url("x"), &key.fingerprint)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY"),
        2,
    );
    assert!(err.contains("no AWS credentials"));

    // A file:// directory that does not exist: refused (a typo would publish a new tree), and
    // not made; --create makes it.
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("bukcet");
    let dest = format!("file://{}", typo.display());
    let mut c = sf_publish();
    c.arg("mirror")
        .arg(src.path())
        .arg(&dest)
        .args(["--fingerprint", &key.fingerprint]);
    let err = fails(&mut c, 2);
    assert!(
        err.contains(&format!("directory {} does not exist", typo.display()))
            && err.contains("--create"),
        "{err}"
    );
    assert!(!typo.exists());
    publish_mirror(src.path(), &dest, &key).success();
    assert!(typo.join("v3").is_dir());
}

/// A signed file with a cell's tarball name is not enough: an empty file, noise, a cut-short
/// tarball or another cell's tarball is refused before anything is uploaded.
#[test]
fn what_is_not_the_cells_tarball_is_not_published() {
    let key = new_key();
    let name = "slurm-25.11-noble-software.tar.gz";
    let good = noble_tarball();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty (0 bytes)"),
        ("noise", sf_testkit::noise(100_000, 7), name),
        ("cut short", good[..good.len() - 10].to_vec(), "gzip"),
        (
            "another cell's",
            cell_tarball(&buildinfo_for("25.11", "jammy", "amd64", false), 1024),
            "its toolchain is \"jammy\", the file name says noble",
        ),
        (
            "a gpu build",
            cell_tarball(&buildinfo_for("25.11", "noble", "amd64", true), 1024),
            "its gpu is true, the file name says a cpu build",
        ),
        (
            "no build record",
            gzip(&sf_testkit::tar_into(
                Vec::new(),
                &[("view/bin/sinfo", b"x")],
            )),
            "no BUILDINFO.json",
        ),
    ];
    for b in Backend::both() {
        for (what, bytes, want) in &cases {
            let (_dir, file) = signed_tarball(&key, name, bytes);
            let err = fails(&mut tarball(&file, &b.url("root"), &key), 2);
            assert!(err.contains(want), "{what}: {err}");
            assert!(err.contains(name), "{what}: the file is named: {err}");
            assert!(
                listing(&b.store("root")).is_empty(),
                "{what}: something was published"
            );
        }
    }
}

#[test]
fn a_tarball_destination_given_twice_must_agree() {
    let key = new_key();
    let cell = cells_at(
        "file:///b",
        [&["noble"], &["25.11"], &[], &[]],
        &[Pipeline::Tarball],
    )
    .remove(0);
    let bytes = cell_tarball(&buildinfo_of(&cell, None), 1 << 20);
    let (_dir, file) = signed_tarball(&key, "slurm-25.11-noble-software.tar.gz", &bytes);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
    }
    let (url_a, url_b) = (
        format!("file://{}", a.display()),
        format!("file://{}", b.display()),
    );
    for how in ["flag", "env"] {
        let mut c = tarball(&file, &url_a, &key);
        if how == "flag" {
            c.args(["--destination", &url_b]);
        } else {
            c.env("SF_DESTINATION", &url_b);
        }
        let err = fails(&mut c, 2);
        assert!(
            err.contains(&url_a) && err.contains(&url_b) && err.contains("differ"),
            "{how}: {err}"
        );
    }
    for d in [&a, &b] {
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "{}", d.display());
    }
    // The same destination twice is one destination.
    tarball(&file, &url_a, &key)
        .env("SF_DESTINATION", &url_a)
        .assert()
        .success();
}

/// The signed fixture's objects, without its indexes, put straight into `store`.
fn put_fixture_without_indexes(store: &Store) {
    let src = fixture("spack-v3-signed");
    let mut files = Vec::new();
    walk(&src, "", &mut files);
    for rel in &files {
        if rel != spack::INDEX_MANIFEST && rel != spack::KEYS_MANIFEST {
            let bytes = std::fs::read(src.join(rel)).unwrap();
            put(store, rel, bytes, "application/octet-stream");
        }
    }
}

/// A spec manifest that lists no spec.
const BROKEN_SPEC: &str =
    "v3/manifests/spec/zzz/zzz-1.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.spec.manifest.json";

#[test]
fn reindex_reproduces_the_fixture_index_and_skips_broken_specs() {
    for b in Backend::both() {
        // The signed fixture as it is, without its indexes, plus a broken spec manifest.
        let store = b.store("re");
        let src = fixture("spack-v3-signed");
        put_fixture_without_indexes(&store);
        let broken = b"{\n\"version\":3,\n\"data\":[]\n}".to_vec();
        put(&store, BROKEN_SPEC, broken, "x");
        let out = sf_publish()
            .args(["reindex", &b.url("re")])
            .assert()
            .success();
        let report = json_out(&out.get_output().stdout);
        assert_eq!(report["reindex"]["specs"], 3, "{report}");
        assert_eq!(report["reindex"]["skipped"][0]["key"], BROKEN_SPEC);
        assert!(report["reindex"]["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no application/vnd.spack.spec.v5+json record"));
        let (_, bytes) = read_index(&store);
        assert_eq!(bytes, fixture_index());
        let keys = rt()
            .block_on(store.get(spack::KEYS_MANIFEST))
            .unwrap()
            .unwrap()
            .bytes;
        assert_eq!(keys, std::fs::read(src.join(spack::KEYS_MANIFEST)).unwrap());
    }
}

#[test]
fn reindex_through_faults_keeps_every_spec() {
    // Throttling, 5xx, dropped connections and lost answers on the reads: retried, every spec
    // kept, the index the fixture's to the byte (hashes, in_buildcache, ref_count).
    let b = Backend::s3();
    let store = b.store("re");
    put_fixture_without_indexes(&store);
    // One request in four fails; ten attempts, as retries meet faults at random.
    let proxy = proxy::faulty(&moto_url(), 4);
    let out = sf_publish()
        .env("S3_ENDPOINT_URL", &proxy.url)
        .args(["--aws-max-attempts", "10"])
        .args(["reindex", &b.url("re")])
        .assert()
        .success();
    let report = json_out(&out.get_output().stdout);
    assert_eq!(report["reindex"]["specs"], 3, "{report}");
    assert_eq!(report["reindex"]["skipped"], json!([]), "{report}");
    assert!(proxy.faults() >= 2, "faults injected: {}", proxy.faults());
    let (index, bytes) = read_index(&store);
    let want = fixture_index();
    assert_eq!(index, Index::parse(&want).unwrap());
    assert_eq!(bytes, want);
}

#[test]
fn reindex_fails_naming_a_spec_it_could_not_read() {
    let b = Backend::s3();
    let store = b.store("re");
    put_fixture_without_indexes(&store);
    // The listing goes through; every read of a spec manifest gets a 500, retries and all.
    let wire = wire::start(
        &moto_url(),
        std::sync::Arc::new(|r: &wire::Seen| {
            if r.method == "GET"
                && r.path().contains("/v3/manifests/spec/")
                && !r.target.contains("list-type")
            {
                wire::Answer::Respond(
                    500,
                    "Internal Server Error",
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>".into(),
                )
            } else {
                wire::Answer::Forward
            }
        }),
        None,
    );
    let err = fails(
        sf_publish()
            .env("S3_ENDPOINT_URL", &wire.url)
            .args(["reindex", &b.url("re")]),
        1,
    );
    assert!(
        err.contains("v3/manifests/spec/") && err.contains(".spec.manifest.json"),
        "the key is named: {err}"
    );
    let failed_reads = wire
        .seen()
        .iter()
        .filter(|r| r.method == "GET" && r.path().ends_with(".spec.manifest.json"))
        .count();
    assert!(failed_reads >= 5, "the reads were retried: {failed_reads}");
    // Nothing written: no index, no keys index.
    let keys = listing(&store);
    assert!(
        !keys
            .iter()
            .any(|k| k == spack::INDEX_MANIFEST || k == spack::KEYS_MANIFEST),
        "{keys:?}"
    );
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

#[test]
fn tarballs_go_to_their_layout_keys_and_status_sees_them() {
    let key = new_key();
    for b in Backend::both() {
        let dest = b.url("root");
        // The cells: 25.11 on noble and jammy, and the status of both.
        let cells = cells_at(
            &dest,
            [&["noble", "jammy"], &["25.11"], &[], &[]],
            &[Pipeline::Tarball],
        );
        let noble = cells
            .iter()
            .find(|c| c.toolchain.as_str() == "noble")
            .unwrap();
        let jammy = cells
            .iter()
            .find(|c| c.toolchain.as_str() == "jammy")
            .unwrap();
        // Six 1 MiB gzip members: status reads BUILDINFO.json from a ranged read of the end.
        let bytes = cell_tarball(&buildinfo_of(noble, None), 6 << 20);
        let (dir, file) = signed_tarball(&key, "slurm-25.11-noble-software.tar.gz", &bytes);
        let tarball = |f: &Path| tarball(f, &dest, &key);
        // Without its signature: refused, nothing uploaded.
        let sig = PathBuf::from(format!("{}.asc", file.display()));
        let saved = std::fs::read(&sig).unwrap();
        std::fs::remove_file(&sig).unwrap();
        let err = fails(&mut tarball(&file), 2);
        assert!(
            err.contains(&format!("its signature {} is missing", sig.display())),
            "{err}"
        );
        assert!(listing(&b.store("root")).is_empty());
        std::fs::write(&sig, saved).unwrap();

        let out = tarball(&file).assert().success();
        let report = json_out(&out.get_output().stdout);
        let archived = format!("keys/{}.asc", key.fingerprint);
        assert_eq!(
            column(&report["change_list"]["changes"], "key"),
            [
                "builds/25.11/noble/slurm-25.11-noble-software.tar.gz",
                "builds/25.11/noble/slurm-25.11-noble-software.tar.gz.asc",
                "builds/25.11/noble/SHA256SUMS",
                "builds/25.11/noble/SHA256SUMS.asc",
                &archived,
                "keys/signing-key.asc",
                "keys/signing-key.fingerprint",
            ]
        );
        // The key that signed, where anyone holding the bucket finds it: the same certificate
        // as --cert, and its fingerprint.
        let root = b.store("root");
        let published_key = rt()
            .block_on(root.get("keys/signing-key.asc"))
            .unwrap()
            .unwrap()
            .bytes;
        let certs = sf_pgp::Certs::parse(&published_key).unwrap();
        assert_eq!(
            certs
                .fingerprints()
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>(),
            std::slice::from_ref(&key.fingerprint)
        );
        let fpr = rt()
            .block_on(root.get("keys/signing-key.fingerprint"))
            .unwrap()
            .unwrap()
            .bytes;
        assert_eq!(
            String::from_utf8(fpr).unwrap(),
            format!("{}\n", key.fingerprint)
        );
        if matches!(b, Backend::S3 { .. }) {
            let head = rt()
                .block_on(root.head("keys/signing-key.asc"))
                .unwrap()
                .unwrap();
            assert_eq!(head.content_type.as_deref(), Some("application/pgp-keys"));
        }
        assert_eq!(report["change_list"]["changes"][0]["kind"], "tarball");
        // Published again: nothing uploaded.
        let report = json_out(&tarball(&file).assert().success().get_output().stdout);
        assert_eq!(report["objects_uploaded"], 0);

        // A jammy tarball of an older Slurm release at the cell's key (keys carry no patch
        // release): there, but not current.
        let old = cell_tarball(&buildinfo_of(jammy, Some("25-11-0-1")), 1000);
        let (old_dir, old_file) = signed_tarball(&key, "slurm-25.11-jammy-software.tar.gz", &old);
        tarball(&old_file).assert().success();

        let st = status(&cells);
        assert_eq!(
            status_ids(&st, "published"),
            ["tarball-25.11-noble-amd64-cpu"],
            "{st}"
        );
        assert_eq!(
            status_ids(&st, "pending"),
            ["tarball-25.11-jammy-amd64-cpu"],
            "{st}"
        );
        let reason = st["pending"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("slurm@25-11-0-1")
                && reason.contains(jammy.slurm_spack_version.as_deref().unwrap()),
            "{reason}"
        );
        assert!(
            st["published"][0]["reason"]
                .as_str()
                .unwrap()
                .contains(noble.slurm_release.as_deref().unwrap()),
            "{st}"
        );

        // The current build replaces it, and the cell is published.
        let new = cell_tarball(&buildinfo_of(jammy, None), 1000);
        let (new_dir, new_file) = signed_tarball(&key, "slurm-25.11-jammy-software.tar.gz", &new);
        tarball(&new_file).assert().success();
        let st = status(&cells);
        assert_eq!(status_ids(&st, "published").len(), 2, "{st}");
        drop((dir, old_dir, new_dir));
    }
}

/// A 12 MiB tarball (noise), signed, in a folder with its signed SHA256SUMS: the folder, the
/// tarball and its bytes.
fn large_signed_tarball(key: &Key) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let bytes = cell_tarball(
        &buildinfo_for("24.11", "jammy", "amd64", false),
        (12 << 20) + 777,
    );
    let (dir, file) = signed_tarball(key, "slurm-24.11-jammy-software.tar.gz", &bytes);
    (dir, file, bytes)
}

#[test]
fn a_large_tarball_goes_multipart_and_arrives_whole() {
    let key = new_key();
    let b = Backend::s3();
    let (_dir, file, bytes) = large_signed_tarball(&key);
    let out = tarball(&file, &b.url("root"), &key)
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
    let err = stderr_of(&out);
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
    let bucket = b.bucket();
    assert!(open_uploads(bucket).is_empty());
}

/// CRC64-NVME (reflected, polynomial 0x9a6c9329ac4bc9b5, init and final xor all ones), written
/// here apart from the one sf-store uses so the test checks it rather than repeats it.
fn crc64_nvme(bytes: &[u8]) -> u64 {
    let table: Vec<u64> = (0..256u64)
        .map(|i| {
            (0..8).fold(i, |c, _| {
                if c & 1 == 1 {
                    (c >> 1) ^ 0x9a6c9329ac4bc9b5
                } else {
                    c >> 1
                }
            })
        })
        .collect();
    !bytes.iter().fold(!0u64, |c, &b| {
        table[((c ^ b as u64) & 0xff) as usize] ^ (c >> 8)
    })
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn full_object_checksums_go_with_every_write() {
    use sha2::Digest;
    assert_eq!(crc64_nvme(b"123456789"), 0xae8b14860a799888);
    assert_eq!(base64(b"ab"), "YWI=");
    let key = new_key();
    let b = Backend::s3();
    let (dir, file, bytes) = large_signed_tarball(&key);
    let wire = wire::recording(&moto_url());
    tarball(&file, &b.url("root"), &key)
        .env("S3_ENDPOINT_URL", &wire.url)
        .args(["--multipart-threshold-mib", "5", "--part-size-mib", "5"])
        .assert()
        .success();
    // S3 checks these against what it stored before the object becomes visible (and fails the
    // write if they differ); the local server does not check them, so what is asserted here is
    // that the right values go on the wire. A part corrupted in flight is therefore not tested.
    let seen = wire.seen();
    let key_path = "/root/builds/24.11/jammy/slurm-24.11-jammy-software.tar.gz";
    let complete: Vec<_> = seen
        .iter()
        .filter(|r| {
            r.method == "POST" && r.path().ends_with(key_path) && r.target.contains("uploadId=")
        })
        .collect();
    assert_eq!(complete.len(), 1, "one complete request");
    assert_eq!(
        complete[0].header("x-amz-checksum-type"),
        Some("FULL_OBJECT")
    );
    assert_eq!(
        complete[0].header("x-amz-checksum-crc64nvme"),
        Some(base64(&crc64_nvme(&bytes).to_be_bytes()).as_str()),
        "the whole file's CRC64-NVME at completion"
    );
    let parts = seen
        .iter()
        .filter(|r| {
            r.method == "PUT" && r.path().ends_with(key_path) && r.target.contains("partNumber=")
        })
        .count();
    assert_eq!(parts, 3, "12 MiB in 5 MiB parts");
    // A single PUT: SHA256SUMS, small, carries its sha256.
    let sums = std::fs::read(dir.path().join("SHA256SUMS")).unwrap();
    let put: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "PUT" && r.path().ends_with("/root/builds/24.11/jammy/SHA256SUMS"))
        .collect();
    assert_eq!(put.len(), 1);
    assert_eq!(
        put[0].header("x-amz-checksum-sha256"),
        Some(base64(&sha2::Sha256::digest(&sums)).as_str()),
        "the file's sha256 with the PUT"
    );
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
    let bytes = cell_tarball(
        &buildinfo_for("25.11", "jammy", "amd64", false),
        (11 << 20) + 5,
    );
    let (_dir, file) = signed_tarball(&key, "slurm-25.11-jammy-software.tar.gz", &bytes);
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
    publisher_env(&mut c, &moto_url());
    let out = c
        .env("TERM", "xterm-256color")
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
    // The tarball, its signature, SHA256SUMS and its signature, and the key three ways.
    assert!(text.contains("7 uploaded, 0 unchanged"), "{text:?}");
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
    let kinds = column(&plan, "kind");
    assert_eq!(kinds.first().map(String::as_str), Some("blob"));
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
/// A tarball of `len` bytes of noise (one view member, stored uncompressed: gzip level 0) with
/// `buildinfo` last, written to `path` as it is made (never whole in memory). Its sha256.
fn write_cell_tarball(path: &Path, len: u64, seed: u64, buildinfo: &Value) -> String {
    const BLOCK: usize = 8 << 20;
    let mut x = seed | 1;
    let mut base = Vec::with_capacity(BLOCK);
    while base.len() < BLOCK {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        base.extend_from_slice(&x.wrapping_mul(0x2545f4914f6cdd1d).to_le_bytes());
    }
    let f = std::io::BufWriter::with_capacity(BLOCK, std::fs::File::create(path).unwrap());
    let opts = sf_archive::GzOptions {
        level: 0,
        ..Default::default()
    };
    let mut gz = sf_archive::ParGzWriter::new(f, opts).unwrap();
    let member = |gz: &mut dyn std::io::Write, name: &str, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        gz.write_all(h.as_bytes()).unwrap();
    };
    let pad = |gz: &mut dyn std::io::Write, size: u64| {
        gz.write_all(&vec![0u8; ((512 - size % 512) % 512) as usize])
            .unwrap();
    };
    member(&mut gz, "view/lib/libnoise.so", len);
    let mut left = len;
    let mut i = 0usize;
    while left > 0 {
        let off = (i * 1_000_003) % BLOCK;
        for piece in [&base[off..], &base[..off]] {
            let n = (piece.len() as u64).min(left) as usize;
            gz.write_all(&piece[..n]).unwrap();
            left -= n as u64;
        }
        i += 1;
    }
    pad(&mut gz, len);
    let info = buildinfo.to_string();
    member(&mut gz, "BUILDINFO.json", info.len() as u64);
    gz.write_all(info.as_bytes()).unwrap();
    pad(&mut gz, info.len() as u64);
    gz.write_all(&[0u8; 1024]).unwrap();
    let (mut f, summary) = gz.finish().unwrap();
    f.flush().unwrap();
    summary.sha256
}

/// The sha256 of an object, streamed from the server (never whole in memory).
fn object_sha256(bucket: &str, key: &str) -> (u64, String) {
    use sha2::Digest;
    let (b, k) = (bucket.to_string(), key.to_string());
    with_s3(|s3| async move {
        let mut body = s3.get_object().bucket(b).key(k).send().await.unwrap().body;
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
    // One request in three fails, one way after another, including a stall past the attempt
    // timeout. Retries meet faults at random (many requests are in flight), so ten attempts keep
    // a spurious give-up out of the test (a chance of 3^-10 per request).
    let proxy = proxy::faulty_with_stall(&moto_url(), 3, Some(std::time::Duration::from_secs(8)));
    let b = Backend::s3();
    mirror(src.path(), &b.url("deps"), &key.fingerprint)
        .env("S3_ENDPOINT_URL", &proxy.url)
        .args([
            "--aws-max-attempts",
            "10",
            "--aws-attempt-timeout-secs",
            "4",
        ])
        .assert()
        .success();
    let (_, index) = read_index(&b.store("deps"));
    assert_eq!(index, fixture_index());
    let bucket = b.bucket();
    // Every blob and spec manifest of the source arrived as it is.
    let mut files = Vec::new();
    walk(src.path(), "", &mut files);
    let sent: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("blobs/") || f.starts_with("v3/manifests/spec/"))
        .collect();
    assert!(sent.len() >= 9, "{files:?}");
    for f in sent {
        let want = std::fs::read(src.path().join(f)).unwrap();
        assert_eq!(
            object_sha256(bucket, &format!("deps/{f}")),
            (want.len() as u64, sf_store::sha256_hex(&want)),
            "{f} arrived changed"
        );
    }
    let kinds = proxy.fault_kinds();
    for how in [
        proxy::Fault::SlowDown,
        proxy::Fault::InternalError,
        proxy::Fault::Dropped,
        proxy::Fault::ResetMidBody,
        proxy::Fault::AnswerLost,
        proxy::Fault::Stalled,
    ] {
        assert!(kinds.contains_key(&how), "no {how:?} among {kinds:?}");
    }
    let mirror_faults = proxy.faults();

    // A 1 GiB tarball through the same faults, as multipart parts. The folder (and the GiB in it)
    // is removed when `dir` drops, also when an assertion fails.
    let dir = tempfile::tempdir().unwrap();
    let name = "slurm-23.11-noble-software.tar.gz";
    let file = dir.path().join(name);
    let size: u64 = (1 << 30) + 99;
    let started = std::time::Instant::now();
    let sha = write_cell_tarball(
        &file,
        size,
        0x2545f4914f6cdd1d,
        &buildinfo_for("23.11", "noble", "amd64", false),
    );
    let written = started.elapsed();
    sf_pgp::sign::sign_file(&key.signing, &file).unwrap();
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{sha}  {name}\n")).unwrap();
    sf_pgp::sign::sign_file(&key.signing, &sums).unwrap();
    let prepared = started.elapsed();
    // Parts of 64 MiB, 4 in flight: 17 parts. A fault in 6 requests here (each costs a part
    // sent again) still hits every way but the stall (an attempt timeout short enough for it
    // would also cut off a 64 MiB part), with the local server's Python, which bounds the speed
    // here, doing about a fifth again the work.
    let proxy = proxy::faulty(&moto_url(), 6);
    let out = tarball(&file, &b.url("root"), &key)
        .env("S3_ENDPOINT_URL", &proxy.url)
        .args(["--aws-max-attempts", "10"])
        .args(["--part-size-mib", "64", "--part-concurrency", "4"])
        .args(["--progress-secs", "2"])
        .assert()
        .success();
    let published = started.elapsed();
    let report = json_out(&out.get_output().stdout);
    assert_eq!(report["objects_uploaded"], 7, "{report}");
    // The CI-log progress shows the GiB moving, not just starting and ending.
    let err = stderr_of(&out);
    let moving: std::collections::BTreeSet<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("sf-publish: progress: "))
        .filter_map(|l| l.split_once("%,").map(|(pc, _)| pc))
        .filter(|pc| *pc != "0" && *pc != "100")
        .collect();
    assert!(moving.len() >= 3, "progress while the GiB went up: {err}");

    let (got_len, got_sha) = object_sha256(
        bucket,
        "root/builds/23.11/noble/slurm-23.11-noble-software.tar.gz",
    );
    assert_eq!(got_len, std::fs::metadata(&file).unwrap().len());
    assert!(
        got_len > size,
        "the noise is stored, not compressed: {got_len}"
    );
    assert_eq!(got_sha, sha, "the tarball arrived changed");
    let checked = started.elapsed();
    let open = open_uploads(bucket);
    assert!(
        open.is_empty(),
        "no multipart upload is left open: {open:?}"
    );
    // The local server keeps objects in memory; give the GiB back for the rest of the suite.
    with_s3(|s3| async move {
        s3.delete_object()
            .bucket(bucket)
            .key("root/builds/23.11/noble/slurm-23.11-noble-software.tar.gz")
            .send()
            .await
            .unwrap()
    });
    assert!(
        mirror_faults >= 6 && proxy.faults() >= 3,
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

/// A signed mirror holding one single-node spec per node.
fn spec_mirror(nodes: &[Value], key: &Key) -> tempfile::TempDir {
    let specs: Vec<(Vec<Value>, Vec<u8>)> = nodes
        .iter()
        .map(|n| (vec![n.clone()], n["hash"].to_string().into_bytes()))
        .collect();
    signed_spec_mirror(&specs, key)
}

/// The pinned specs of the stack file as built spec nodes, boolean variants set as pinned.
fn pinned_nodes(pins: &[sf_spackenv::stack::PinnedSpec], os: &str, target: &str) -> Vec<Value> {
    pins.iter()
        .map(|p| {
            let params: Vec<(String, Value)> = p
                .variants
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .filter(|t| !t.contains('='))
                .filter_map(|t| match t.split_at(1) {
                    ("+", v) => Some((v.to_string(), Value::Bool(true))),
                    ("~", v) => Some((v.to_string(), Value::Bool(false))),
                    _ => None,
                })
                .collect();
            let params: Vec<(&str, Value)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            node_with(&p.name, &p.version, os, target, &params, &[])
        })
        .collect()
}

/// The sf-matrix binary, built if this package's test run did not build it (the workspace run
/// does).
fn sf_matrix() -> StdCommand {
    let bin = assert_cmd::cargo::cargo_bin("sf-matrix");
    if !bin.exists() {
        let built = StdCommand::new(env!("CARGO"))
            .args(["build", "-p", "sf-matrix", "--bin", "sf-matrix"])
            .status()
            .unwrap();
        assert!(built.success(), "building sf-matrix");
    }
    let mut c = StdCommand::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") {
            c.env_remove(k);
        }
    }
    c
}

/// Run a command with `input` on stdin; its stdout, after it succeeded.
fn piped(c: &mut StdCommand, input: &[u8]) -> Vec<u8> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn matrix_ids(v: &Value) -> Vec<String> {
    column(&v["include"], "id")
}

fn status_ids(st: &Value, k: &str) -> Vec<String> {
    let mut ids = column(&st[k], "id");
    ids.sort();
    ids
}

#[test]
fn status_tells_cpu_from_gpu_builds_and_skip_published_leaves_the_rest() {
    let key = new_key();
    let stack = sf_spackenv::stack::Stack::embedded();
    for b in Backend::both() {
        let root = b.url("st").trim_end_matches('/').to_string();
        let cells = cells_at(
            &root,
            [&["noble"], &["25.11"], &["amd64"], &["cpu", "gpu"]],
            &[Pipeline::Deps, Pipeline::Version],
        );
        let cpu = cells
            .iter()
            .find(|c| c.pipeline == "version" && !c.gpu)
            .unwrap();
        let (os, target) = (cpu.spack_os.clone().unwrap(), cpu.spack_target.clone());
        let version = cpu.slurm_spack_version.clone().unwrap();
        let slurm = |gpu: bool| {
            node_with(
                "slurm",
                &version,
                &os,
                &target,
                &[
                    ("nvml", Value::Bool(gpu)),
                    ("rsmi", Value::Bool(gpu)),
                    ("sysconfdir", Value::from("/etc/slurm")),
                ],
                &[],
            )
        };
        let version_url = &cpu.version_mirror.as_ref().unwrap().url;
        let deps_url = &cpu.deps_mirror.url;

        // The CPU builds only: Slurm ~nvml ~rsmi, and the deps without CUDA and ROCm SMI. CPU and
        // GPU cells share both mirrors, target and OS.
        let src = spec_mirror(&[slurm(false)], &key);
        publish_mirror(src.path(), version_url, &key).success();
        let src = spec_mirror(&pinned_nodes(&stack.dependencies, &os, &target), &key);
        publish_mirror(src.path(), deps_url, &key).success();
        let st = status(&cells);
        assert_eq!(
            status_ids(&st, "published"),
            ["deps-noble-amd64-cpu", "version-25.11-noble-amd64-cpu"],
            "{st}"
        );
        assert_eq!(
            status_ids(&st, "pending"),
            ["deps-noble-amd64-gpu", "version-25.11-noble-amd64-gpu"],
            "{st}"
        );
        let reason = |id: &str| {
            st["pending"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(
            reason("deps-noble-amd64-gpu").contains("cuda@12.6.3"),
            "{st}"
        );
        assert!(
            reason("version-25.11-noble-amd64-gpu")
                .contains(&format!("slurm@{version} +nvml +rsmi")),
            "{st}"
        );

        // The chain the workflows run: sf-matrix | sf-publish status - | sf-matrix
        // --skip-published -, leaving exactly the GPU cells.
        for (pipeline, left) in [
            ("deps", "deps-noble-amd64-gpu"),
            ("version", "version-25.11-noble-amd64-gpu"),
        ] {
            let args = [
                "--pipeline",
                pipeline,
                "--toolchains",
                "noble",
                "--slurm-versions",
                "25.11",
                "--archs",
                "amd64",
                "--builds",
                "cpu,gpu",
                "--destination",
                &root,
            ];
            let all = piped(sf_matrix().args(args), b"");
            assert_eq!(matrix_ids(&json_out(&all)).len(), 2);
            let st = piped(publisher(&moto_url()).args(["status", "-"]), &all);
            let rest = piped(sf_matrix().args(args).args(["--skip-published", "-"]), &st);
            assert_eq!(matrix_ids(&json_out(&rest)), [left], "{pipeline}");
        }

        // The GPU builds land in the same mirrors: every cell is published.
        let src = spec_mirror(&[slurm(true)], &key);
        publish_mirror(src.path(), version_url, &key).success();
        let gpu_only: Vec<_> = stack
            .gpu_dependencies
            .iter()
            .filter(|p| p.applies_to("amd64"))
            .cloned()
            .collect();
        assert!(gpu_only.iter().any(|p| p.name == "cuda"));
        let src = spec_mirror(&pinned_nodes(&gpu_only, &os, &target), &key);
        publish_mirror(src.path(), deps_url, &key).success();
        let st = status(&cells);
        assert_eq!(status_ids(&st, "published").len(), 4, "{st}");
        assert_eq!(st["pending"], json!([]), "{st}");
    }
}

const FIXTURE_TARBALL_BLOB: &str =
    "e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1";

/// Replace an object with other bytes of the same size, stored with their own sha256.
fn damage(store: &Store, key: &str) {
    let mut bytes = rt().block_on(store.get(key)).unwrap().unwrap().bytes;
    bytes[100] ^= 1;
    put(store, key, bytes, "application/gzip");
}

#[test]
fn a_damaged_blob_at_the_destination_fails_the_run_and_is_named() {
    let key = new_key();
    let src = signed_fixture(&key);
    let blob = spack::blob("sha256", FIXTURE_TARBALL_BLOB);
    for b in Backend::both() {
        let dest = b.url("dmg");
        publish_mirror(src.path(), &dest, &key).success();
        let store = b.store("dmg");
        damage(&store, &blob);
        let err = stderr_of(&publish_mirror(src.path(), &dest, &key).code(1));
        assert!(
            err.contains(&store.url_of(&blob)) && err.contains("damaged blob"),
            "{err}"
        );
    }
}

#[test]
fn the_change_list_and_record_of_a_failed_run_say_what_was_written() {
    let key = new_key();
    let src = signed_fixture(&key);
    // The plan's order; the last blob is found damaged, after the others went up.
    let plan = dry_run_plan(src.path(), &["--fingerprint", &key.fingerprint]);
    let blobs: Vec<String> = plan
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "blob")
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    let (last, before) = blobs.split_last().unwrap();
    for b in Backend::both() {
        let dest = b.url("failed");
        let store = b.store("failed");
        let bytes = std::fs::read(src.path().join(last)).unwrap();
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        put(&store, last, bad, "application/octet-stream");
        let results = tempfile::tempdir().unwrap();
        let list = results.path().join("changes.json");
        let err = fails(
            mirror(src.path(), &dest, &key.fingerprint)
                .args(["--concurrency", "1"])
                .arg("--change-list")
                .arg(&list)
                .arg("--results-dir")
                .arg(results.path()),
            1,
        );
        assert!(err.contains(&store.url_of(last)), "{err}");
        let list: Value = serde_json::from_slice(&std::fs::read(&list).unwrap()).unwrap();
        let written = column(&list["changes"], "key");
        assert_eq!(
            written,
            before.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(list["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "created" && c["kind"] == "blob"));
        let record = mirror_record(results.path());
        assert_eq!(record["status"], "failed", "{record}");
        assert_eq!(record["metrics"]["objects_uploaded"], before.len() as u64);
        let bytes_before: u64 = before
            .iter()
            .map(|k| std::fs::metadata(src.path().join(k)).unwrap().len())
            .sum();
        assert_eq!(record["metrics"]["bytes_uploaded"], bytes_before);
        assert_eq!(record["metrics"]["changes"], before.len() as u64);
        assert!(record["duration_ms"].as_u64().is_some(), "{record}");
        assert!(!listing(&store).iter().any(|k| k.starts_with("v3/")));
    }
}

#[test]
fn a_lost_index_race_is_retried_and_counted() {
    let key = new_key();
    let (first, first_hashes) = synthetic_mirror(&["racer".to_string()], &key);
    let (second, second_hashes) = synthetic_mirror(&["winner".to_string()], &key);
    let b = Backend::s3();
    let dest = b.url("race");
    // When the first publisher's index manifest PUT arrives, another publisher completes first;
    // the held PUT (If-None-Match: *) then fails and the first merges again.
    let (d, s, k) = (
        dest.clone(),
        second.path().to_path_buf(),
        key.fingerprint.clone(),
    );
    let proxy = proxy::on_put(
        &moto_url(),
        std::sync::Arc::new(move |_, target: &str| {
            if !target.ends_with(spack::INDEX_MANIFEST) {
                return None;
            }
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                mirror(&s, &d, &k).assert().success();
            });
            Some(proxy::Then::Forward)
        }),
    );
    let results = tempfile::tempdir().unwrap();
    let out = mirror(first.path(), &dest, &key.fingerprint)
        .env("S3_ENDPOINT_URL", &proxy.url)
        .args(["--concurrency", "1"])
        .arg("--results-dir")
        .arg(results.path())
        .assert()
        .success();
    let report = json_out(&out.get_output().stdout);
    assert_eq!(report["retries"], 1, "{report}");
    let record = mirror_record(results.path());
    assert_eq!(record["metrics"]["retries"], 1, "{record}");
    assert_eq!(
        record["metrics"]["bytes_uploaded"],
        report["bytes_uploaded"]
    );
    assert!(report["bytes_uploaded"].as_u64().unwrap() > 0);
    let (index, _) = read_index(&b.store("race"));
    for h in first_hashes.iter().chain(&second_hashes) {
        assert!(index.in_buildcache(h), "{h}");
    }
}

#[test]
fn reindex_refuses_a_destination_without_a_mirror() {
    for b in Backend::both() {
        if let Backend::Dir { dir } = &b {
            // A mistyped directory is not created.
            let err = fails(sf_publish().args(["reindex", &b.url("typo/deps")]), 2);
            assert!(
                err.contains("typo/deps") && err.contains("does not exist"),
                "{err}"
            );
            assert!(!dir.path().join("typo").exists());
            std::fs::create_dir_all(dir.path().join("empty/deps")).unwrap();
        }
        let url = b.url("empty/deps");
        let err = fails(sf_publish().args(["reindex", &url]), 2);
        assert!(
            err.contains("holds no build-cache mirror") && err.contains("--allow-empty"),
            "{err}"
        );
        assert_eq!(listing(&b.store("empty")), Vec::<String>::new());
        // Asked for: an empty index and the layout marker.
        let out = sf_publish()
            .args(["reindex", &url, "--allow-empty"])
            .assert()
            .success();
        assert_eq!(json_out(&out.get_output().stdout)["reindex"]["specs"], 0);
        assert_eq!(read_index(&b.store("empty/deps")).0.len(), 0);
    }
}

#[test]
fn status_of_a_missing_directory_is_pending_and_makes_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("file://{}/typo", dir.path().display());
    let cells = cells_at(
        &root,
        [&["noble"], &["25.11"], &["amd64"], &["cpu"]],
        &[Pipeline::Tarball, Pipeline::Deps],
    );
    let st = status(&cells);
    assert_eq!(st["published"], json!([]), "{st}");
    let reasons = column(&st["pending"], "reason");
    assert_eq!(reasons.len(), 2, "{st}");
    assert!(
        reasons
            .iter()
            .any(|r| *r == format!("{root} does not exist")),
        "{st}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&root) && r.ends_with("has no index")),
        "{st}"
    );
    assert!(!dir.path().join("typo").exists());
}

#[test]
fn every_kind_of_object_has_its_content_type_and_cache_control() {
    const IMMUTABLE: &str = "public, max-age=31536000, immutable";
    const REVALIDATE: &str = "public, no-cache";
    let key = new_key();
    let b = Backend::s3();
    let src = signed_fixture(&key);
    publish_mirror(src.path(), &b.url("meta"), &key).success();
    let (dir, file) = signed_tarball(&key, "slurm-25.11-noble-software.tar.gz", &noble_tarball());
    tarball(&file, &b.url("root"), &key).assert().success();
    let mirror = b.store("meta");
    let root = b.store("root");
    let keys = listing(&mirror);
    let spec_manifest = keys
        .iter()
        .find(|k| k.ends_with(".spec.manifest.json"))
        .unwrap()
        .clone();
    let record_of = |manifest: &str, media: &str| blob_key(&mirror, manifest, media);
    let index_blob = record_of(spack::INDEX_MANIFEST, media_type::INDEX);
    let key_blob = record_of(&spack::key_manifest(&key.fingerprint), media_type::PGP_KEYS);
    let key_index_blob = record_of(spack::KEYS_MANIFEST, media_type::KEY_INDEX);
    let spec_blob = record_of(&spec_manifest, media_type::SPEC);
    let tb = "builds/25.11/noble";
    let expected: Vec<(&Store, String, &str, &str)> = vec![
        (
            &mirror,
            spack::blob("sha256", FIXTURE_TARBALL_BLOB),
            "application/gzip",
            IMMUTABLE,
        ),
        (&mirror, spec_blob, "application/gzip", IMMUTABLE),
        (&mirror, index_blob, "application/json", IMMUTABLE),
        (&mirror, key_index_blob, "application/json", IMMUTABLE),
        (&mirror, key_blob, "application/pgp-keys", IMMUTABLE),
        (
            &mirror,
            spec_manifest,
            "text/plain; charset=utf-8",
            REVALIDATE,
        ),
        (
            &mirror,
            spack::key_manifest(&key.fingerprint),
            "application/json",
            REVALIDATE,
        ),
        (
            &mirror,
            spack::KEYS_MANIFEST.into(),
            "application/json",
            REVALIDATE,
        ),
        (
            &mirror,
            spack::LAYOUT_JSON.into(),
            "application/json",
            REVALIDATE,
        ),
        (
            &mirror,
            spack::INDEX_MANIFEST.into(),
            "application/json",
            REVALIDATE,
        ),
        (
            &root,
            format!("{tb}/slurm-25.11-noble-software.tar.gz"),
            "application/gzip",
            REVALIDATE,
        ),
        (
            &root,
            format!("{tb}/slurm-25.11-noble-software.tar.gz.asc"),
            "application/pgp-signature",
            REVALIDATE,
        ),
        (
            &root,
            format!("{tb}/SHA256SUMS"),
            "text/plain; charset=utf-8",
            REVALIDATE,
        ),
        (
            &root,
            format!("{tb}/SHA256SUMS.asc"),
            "application/pgp-signature",
            REVALIDATE,
        ),
    ];
    for (store, k, content_type, cache_control) in expected {
        let h = rt()
            .block_on(store.head(&k))
            .unwrap()
            .unwrap_or_else(|| panic!("{k}"));
        assert_eq!(h.content_type.as_deref(), Some(content_type), "{k}");
        assert_eq!(h.cache_control.as_deref(), Some(cache_control), "{k}");
        let bytes = rt().block_on(store.get(&k)).unwrap().unwrap().bytes;
        assert_eq!(h.sha256, Some(sf_store::sha256_hex(&bytes)), "{k}");
    }
    drop(dir);
}

#[test]
fn bad_tarball_folders_are_refused_naming_the_file() {
    let key = new_key();
    let other = new_key();
    let name = "slurm-25.11-noble-software.tar.gz";
    let b = Backend::dir();
    let dest = b.url("root");
    let refuse = |file: &Path| fails(&mut tarball(file, &dest, &key), 2);
    // The tarball signed by another key (its SHA256SUMS by the right one).
    let (dir, file) = signed_tarball(&key, name, &noble_tarball());
    let sig = sf_pgp::sign::sign_bytes(&other.signing, &std::fs::read(&file).unwrap()).unwrap();
    std::fs::write(format!("{}.asc", file.display()), sig).unwrap();
    let err = refuse(&file);
    assert!(err.contains(&file.display().to_string()), "{err}");
    drop(dir);
    // SHA256SUMS lists another sha256 (and is signed as such).
    let (dir, file) = signed_tarball(&key, name, &noble_tarball());
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  {name}\n", "0".repeat(64))).unwrap();
    let sig = sf_pgp::sign::sign_bytes(&key.signing, &std::fs::read(&sums).unwrap()).unwrap();
    std::fs::write(dir.path().join("SHA256SUMS.asc"), sig).unwrap();
    let err = refuse(&file);
    assert!(
        err.contains(&sums.display().to_string())
            && err.contains(&format!("lists {name} with sha256 {}", "0".repeat(64))),
        "{err}"
    );
    // SHA256SUMS.asc missing, then SHA256SUMS itself.
    std::fs::remove_file(dir.path().join("SHA256SUMS.asc")).unwrap();
    let err = refuse(&file);
    assert!(
        err.contains(&format!("{}.asc is missing", sums.display())),
        "{err}"
    );
    std::fs::remove_file(&sums).unwrap();
    let err = refuse(&file);
    assert!(err.contains(&sums.display().to_string()), "{err}");
    drop(dir);
    // A file name that is no cell's.
    let (dir, file) = signed_tarball(&key, "slurm-99.99-noble-software.tar.gz", &noble_tarball());
    let err = refuse(&file);
    assert!(
        err.contains("\"slurm-99.99-noble-software.tar.gz\" is not the name of a tarball"),
        "{err}"
    );
    drop(dir);
    assert!(
        !Path::new(&dest.trim_start_matches("file://")).exists()
            || listing(&b.store("root")).is_empty()
    );
}

#[test]
fn bad_destinations_are_named_by_every_subcommand() {
    let key = new_key();
    let (dir, file) = signed_tarball(&key, "slurm-25.11-noble-software.tar.gz", &noble_tarball());
    let cell = cells_at(
        "s3://placeholder-bucket",
        [&["noble"], &["25.11"], &[], &[]],
        &[Pipeline::Tarball],
    )
    .remove(0);
    let status_at = |dest: &str| {
        let mut cell = serde_json::to_value(&cell).unwrap();
        cell["destination"] = Value::from(dest);
        serde_json::to_string(&json!({ "include": [cell] })).unwrap()
    };
    let b = Backend::s3();
    for (dest, says) in [
        ("gs://bucket/x".to_string(), "unknown scheme"),
        (
            "s3://sf-publish-no-such-bucket/x".to_string(),
            "does not exist",
        ),
        (b.url("x"), "no AWS credentials"),
    ] {
        let creds = says != "no AWS credentials";
        let run = |c: &mut Command| {
            if !creds {
                c.env_remove("AWS_ACCESS_KEY_ID")
                    .env_remove("AWS_SECRET_ACCESS_KEY");
            }
            let err = fails(c, 2);
            assert!(err.contains(says), "{dest}: {err}");
        };
        run(sf_publish().args(["reindex", &dest]));
        run(&mut tarball(&file, &dest, &key));
        run(sf_publish()
            .args(["status", "-"])
            .write_stdin(status_at(&dest)));
    }
    assert!(listing(&b.store("")).is_empty());
    drop(dir);
}
