//! The same behaviour from both backends: a real local S3 server (moto) and a directory.

use std::sync::Arc;

use sf_aws::AwsSettings;
use sf_core::layout::Destination;
use sf_store::{sha256_hex, Body, Condition, PutMeta, PutOutcome, Store};
use sf_testkit::noise;

fn meta(bytes: &[u8]) -> PutMeta {
    PutMeta {
        content_type: "application/json".into(),
        cache_control: "public, no-cache".into(),
        sha256: sha256_hex(bytes),
    }
}

fn settings() -> AwsSettings {
    AwsSettings::local(&sf_testkit::moto_url(), "test", "test")
}

/// A fresh bucket on the moto server, with a key prefix.
async fn s3_store() -> Store {
    let aws = settings();
    let sdk = aws.load().await.unwrap();
    let bucket = format!("sf-store-{}", sf_core::fsutil::random_hex(6).unwrap());
    aws.s3_client(&sdk)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    Store::open(
        &Destination::parse(&format!("s3://{bucket}/some/prefix")).unwrap(),
        &aws,
    )
    .await
    .unwrap()
}

async fn behaves(store: Store) {
    let key = "v3/manifests/index/index.manifest.json";
    assert!(store.get(key).await.unwrap().is_none());
    assert!(store.head(key).await.unwrap().is_none());

    // Create-only: the first wins, the second changes nothing.
    let PutOutcome::Written(first) = store
        .put(
            key,
            Body::Bytes(b"one".to_vec()),
            &meta(b"one"),
            Condition::CreateOnly,
        )
        .await
        .unwrap()
    else {
        panic!("first create-only write must succeed")
    };
    assert_eq!(
        store
            .put(
                key,
                Body::Bytes(b"two".to_vec()),
                &meta(b"two"),
                Condition::CreateOnly
            )
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    let got = store.get(key).await.unwrap().unwrap();
    assert_eq!(got.bytes, b"one");
    assert_eq!(got.info.etag, first);
    let head = store.head(key).await.unwrap().unwrap();
    assert_eq!(head.size, 3);
    assert_eq!(head.sha256.as_deref(), Some(sha256_hex(b"one").as_str()));
    assert_eq!(head.etag, first);

    // Compare-and-swap: a stale ETag loses, the current one wins.
    let PutOutcome::Written(second) = store
        .put(
            key,
            Body::Bytes(b"two".to_vec()),
            &meta(b"two"),
            Condition::IfMatch(first.clone()),
        )
        .await
        .unwrap()
    else {
        panic!("a write with the current ETag must succeed")
    };
    assert_ne!(second, first);
    assert_eq!(
        store
            .put(
                key,
                Body::Bytes(b"three".to_vec()),
                &meta(b"three"),
                Condition::IfMatch(first)
            )
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert_eq!(store.get(key).await.unwrap().unwrap().bytes, b"two");

    // A file body streams from disk.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), vec![7u8; 300_000]).unwrap();
    let big = vec![7u8; 300_000];
    store
        .put(
            "blobs/sha256/ab/abc",
            Body::File(tmp.path().to_path_buf()),
            &meta(&big),
            Condition::Always,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get("blobs/sha256/ab/abc")
            .await
            .unwrap()
            .unwrap()
            .bytes,
        big
    );

    // Listing under a prefix, relative keys, sorted.
    store
        .put(
            "v3/manifests/spec/a/a-1-x.spec.manifest.json",
            Body::Bytes(b"a".to_vec()),
            &meta(b"a"),
            Condition::Always,
        )
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list("v3/manifests/")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(
        listed,
        vec![
            "v3/manifests/index/index.manifest.json",
            "v3/manifests/spec/a/a-1-x.spec.manifest.json"
        ]
    );
    assert_eq!(store.list("").await.unwrap().len(), 3);
}

/// Many writers incrementing one counter by compare-and-swap lose no increment.
async fn cas_loses_nothing(store: Store) {
    let store = Arc::new(store);
    let counter = "counter";
    store
        .put(
            counter,
            Body::Bytes(b"0".to_vec()),
            &meta(b"0"),
            Condition::CreateOnly,
        )
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..5 {
                loop {
                    let cur = store.get(counter).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(cur.bytes).unwrap().parse().unwrap();
                    let next = (n + 1).to_string().into_bytes();
                    let m = meta(&next);
                    match store
                        .put(
                            counter,
                            Body::Bytes(next),
                            &m,
                            Condition::IfMatch(cur.info.etag),
                        )
                        .await
                        .unwrap()
                    {
                        PutOutcome::Written(_) => break,
                        PutOutcome::PreconditionFailed => continue,
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(store.get(counter).await.unwrap().unwrap().bytes, b"30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_behaves() {
    let store = s3_store().await;
    assert!(store.url_of("x").ends_with("/some/prefix/x"));
    behaves(store.clone()).await;
    // Metadata is kept on S3.
    let head = store
        .head("v3/manifests/index/index.manifest.json")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.content_type.as_deref(), Some("application/json"));
    assert_eq!(head.cache_control.as_deref(), Some("public, no-cache"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dir_behaves() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &Destination::parse(&format!("file://{}", dir.path().display())).unwrap(),
        &AwsSettings::new(),
    )
    .await
    .unwrap();
    behaves(store.clone()).await;
    cas_loses_nothing(store).await;
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.rsplit('/').next().unwrap().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn a_missing_bucket_is_bad_input() {
    let err = Store::open(
        &Destination::parse("s3://sf-no-such-bucket-here").unwrap(),
        &settings(),
    )
    .await
    .unwrap_err();
    assert_eq!(sf_core::exit::code_for(&err), 2, "{err:#}");
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_multipart_uploads_arrive_whole_and_leave_no_parts() {
    let Store::S3(s3) = s3_store().await else {
        unreachable!()
    };
    let store = Store::S3(s3.clone().with_transfer(sf_store::Transfer {
        multipart_threshold: 6 << 20,
        part_size: 5 << 20,
        concurrency: 3,
    }));
    let bytes = noise((23 << 20) + 12345, 7);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();
    let key = "builds/25.11/noble/slurm-25.11-noble-software.tar.gz";
    let m = meta(&bytes);
    assert!(matches!(
        store
            .put(
                key,
                Body::File(tmp.path().to_path_buf()),
                &m,
                Condition::CreateOnly
            )
            .await
            .unwrap(),
        PutOutcome::Written(_)
    ));
    let got = store.get(key).await.unwrap().unwrap();
    assert!(got.bytes == bytes, "the object differs from the file");
    assert_eq!(got.info.sha256.as_deref(), Some(m.sha256.as_str()));
    assert_eq!(got.info.cache_control.as_deref(), Some("public, no-cache"));

    // A failed completion (the key exists) aborts: nothing replaced, no parts left open.
    let other = noise(7 << 20, 9);
    std::fs::write(tmp.path(), &other).unwrap();
    assert_eq!(
        store
            .put(
                key,
                Body::File(tmp.path().to_path_buf()),
                &meta(&other),
                Condition::CreateOnly
            )
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert!(store.get(key).await.unwrap().unwrap().bytes == bytes);
    let open = s3
        .client()
        .list_multipart_uploads()
        .bucket(s3.bucket())
        .send()
        .await
        .unwrap();
    assert!(
        open.uploads().is_empty(),
        "open multipart uploads: {:?}",
        open.uploads()
    );
}

/// A create-only multipart write whose completion fails its condition on an object with the same
/// content and sha256 (our own completion whose answer was lost, or an identical one by another
/// publisher) is written, not refused, and leaves no upload open.
#[tokio::test]
async fn s3_a_refused_completion_over_the_same_content_counts_as_written() {
    let Store::S3(s3) = s3_store().await else {
        unreachable!()
    };
    let store = Store::S3(s3.clone().with_transfer(sf_store::Transfer {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        concurrency: 2,
    }));
    let bytes = noise((11 << 20) + 99, 11);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();
    let key = "blobs/sha256/ab/same";
    let m = meta(&bytes);
    // The identical object is there already (a single PUT, as another publisher might).
    assert!(matches!(
        Store::S3(s3.clone())
            .put(key, Body::Bytes(bytes.clone()), &m, Condition::Always)
            .await
            .unwrap(),
        PutOutcome::Written(_)
    ));
    assert!(matches!(
        store
            .put(
                key,
                Body::File(tmp.path().to_path_buf()),
                &m,
                Condition::CreateOnly
            )
            .await
            .unwrap(),
        PutOutcome::Written(_)
    ));
    assert_eq!(open_uploads(&s3).await, Vec::<String>::new());
    // Other content at the key is still a refusal.
    let other = noise(6 << 20, 12);
    std::fs::write(tmp.path(), &other).unwrap();
    assert_eq!(
        store
            .put(
                key,
                Body::File(tmp.path().to_path_buf()),
                &meta(&other),
                Condition::CreateOnly
            )
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert!(store.get(key).await.unwrap().unwrap().bytes == bytes);
    assert_eq!(open_uploads(&s3).await, Vec::<String>::new());
}

/// Keys of a bucket's open multipart uploads (moto's ListParts answer does not parse, so the
/// parts are counted by the bytes the store sent).
async fn open_uploads(s3: &sf_store::S3Store) -> Vec<String> {
    let open = s3
        .client()
        .list_multipart_uploads()
        .bucket(s3.bucket())
        .send()
        .await
        .unwrap();
    open.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_string())
        .collect()
}

/// Start a gated write of `file` in the background.
fn gated_put(
    store: &Store,
    key: &str,
    file: &std::path::Path,
    bytes: &[u8],
    gate: sf_store::Gate,
) -> tokio::task::JoinHandle<anyhow::Result<PutOutcome>> {
    let (store, key, file, m) = (
        store.clone(),
        key.to_string(),
        file.to_path_buf(),
        meta(bytes),
    );
    tokio::spawn(async move {
        store
            .put_gated(
                &key,
                Body::File(file),
                &m,
                Condition::CreateOnly,
                Some(gate),
            )
            .await
    })
}

/// Wait (up to 20 s) until `ready` holds.
async fn until(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if ready().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_a_gated_upload_sends_its_parts_but_completes_only_when_the_gate_passes() {
    let Store::S3(s3) = s3_store().await else {
        unreachable!()
    };
    let store = Store::S3(s3.clone().with_transfer(sf_store::Transfer {
        multipart_threshold: 6 << 20,
        part_size: 5 << 20,
        concurrency: 2,
    }));
    let bytes = noise((12 << 20) + 1, 3);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &bytes).unwrap();

    // Passes: all 3 parts are sent while the check runs, the object appears only after it.
    let key = "builds/25.11/noble/slurm-25.11-noble-software.tar.gz";
    let (keeper, gate) = sf_store::Gate::new();
    let put = gated_put(&store, key, tmp.path(), &bytes, gate);
    let (sent, size) = (store.sent(), bytes.len() as u64);
    until("all parts sent", async || store.sent() == sent + size).await;
    assert_eq!(open_uploads(&s3).await.len(), 1);
    assert!(
        store.head(key).await.unwrap().is_none(),
        "visible before its check passed"
    );
    keeper.verdict(true);
    assert!(matches!(
        put.await.unwrap().unwrap(),
        PutOutcome::Written(_)
    ));
    assert!(store.get(key).await.unwrap().unwrap().bytes == bytes);
    assert!(open_uploads(&s3).await.is_empty());

    // Fails: the upload is aborted, nothing is visible, no part is left.
    let key = "builds/25.11/jammy/slurm-25.11-jammy-software.tar.gz";
    let (keeper, gate) = sf_store::Gate::new();
    let put = gated_put(&store, key, tmp.path(), &bytes, gate);
    let (sent, size) = (store.sent(), bytes.len() as u64);
    until("all parts sent", async || store.sent() == sent + size).await;
    assert_eq!(open_uploads(&s3).await.len(), 1);
    keeper.verdict(false);
    let err = put.await.unwrap().unwrap_err();
    assert!(format!("{err:#}").contains("did not pass"), "{err:#}");
    assert!(store.head(key).await.unwrap().is_none());
    assert!(
        open_uploads(&s3).await.is_empty(),
        "{:?}",
        open_uploads(&s3).await
    );

    // A small file goes as one PUT, which waits for the gate before it starts; a keeper gone
    // without a verdict shuts the gate.
    let small = b"SHA256SUMS content".to_vec();
    std::fs::write(tmp.path(), &small).unwrap();
    let (keeper, gate) = sf_store::Gate::new();
    let put = gated_put(&store, "builds/25.11/SHA256SUMS", tmp.path(), &small, gate);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(store
        .head("builds/25.11/SHA256SUMS")
        .await
        .unwrap()
        .is_none());
    drop(keeper);
    assert!(put.await.unwrap().is_err());
    assert!(store
        .head("builds/25.11/SHA256SUMS")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dir_a_gated_write_is_staged_and_moved_in_only_when_the_gate_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &Destination::parse(&format!("file://{}", dir.path().display())).unwrap(),
        &AwsSettings::new(),
    )
    .await
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("t.tar.gz");
    let bytes = noise(3 << 20, 5);
    std::fs::write(&file, &bytes).unwrap();
    let staged = |d: &std::path::Path| walk(d).into_iter().filter(|p| p.ends_with(".tmp")).count();

    for passes in [false, true] {
        let key = "builds/25.11/noble/slurm-25.11-noble-software.tar.gz";
        let (keeper, gate) = sf_store::Gate::new();
        let put = gated_put(&store, key, &file, &bytes, gate);
        until("the staged file", async || staged(dir.path()) == 1).await;
        assert!(
            store.head(key).await.unwrap().is_none(),
            "visible before its check passed"
        );
        keeper.verdict(passes);
        let out = put.await.unwrap();
        assert_eq!(out.is_ok(), passes, "{out:?}");
        assert_eq!(store.head(key).await.unwrap().is_some(), passes);
        assert_eq!(staged(dir.path()), 0, "a staged file was left behind");
    }
    let got = store
        .get("builds/25.11/noble/slurm-25.11-noble-software.tar.gz")
        .await
        .unwrap()
        .unwrap();
    assert!(got.bytes == bytes);
}

/// A writer killed between staging and moving into place leaves its temporary file; the next
/// write of that key removes it (its process is gone), but never one a live writer or another
/// host is still writing.
#[tokio::test]
async fn dir_a_write_sweeps_the_temporary_files_of_dead_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &Destination::parse(&format!("file://{}", dir.path().display())).unwrap(),
        &AwsSettings::new(),
    )
    .await
    .unwrap();
    let folder = dir.path().join("v3/manifests/index");
    std::fs::create_dir_all(&folder).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let name = "index.manifest.json";
    let stale = folder.join(format!(".{name}.{host}-{dead}.0a1b2c.tmp"));
    let live = folder.join(format!(".{name}.{host}-{}.0a1b2d.tmp", std::process::id()));
    let elsewhere = folder.join(format!(".{name}.other-host-{dead}.0a1b2e.tmp"));
    let other_key = folder.join(format!(".other.json.{host}-{dead}.0a1b2f.tmp"));
    for f in [&stale, &live, &elsewhere, &other_key] {
        std::fs::write(f, b"half").unwrap();
    }
    store
        .put(
            &format!("v3/manifests/index/{name}"),
            Body::Bytes(b"{}".to_vec()),
            &meta(b"{}"),
            Condition::Always,
        )
        .await
        .unwrap();
    assert!(!stale.exists(), "a dead writer's file stays");
    assert!(live.exists() && elsewhere.exists() && other_key.exists());
}

#[tokio::test]
async fn an_s3_error_reads_as_one_line_naming_what_the_server_said() {
    // The bucket goes away under an open store: the write fails with S3's own code and message,
    // not a debug dump of the response (its headers and body).
    let store = s3_store().await;
    let Store::S3(s3) = &store else {
        unreachable!()
    };
    s3.client()
        .delete_bucket()
        .bucket(s3.bucket())
        .send()
        .await
        .unwrap();
    let err = store
        .put(
            "a",
            Body::Bytes(b"a".to_vec()),
            &meta(b"a"),
            Condition::Always,
        )
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("NoSuchBucket"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    for dump in ["SdkBody", "headers", "ErrorMetadata", "StatusCode("] {
        assert!(!text.contains(dump), "no {dump} in {text}");
    }
}
