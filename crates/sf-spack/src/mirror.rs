//! A build-cache mirror in a local directory: find its layout, walk its spec manifests, check blobs
//! against their records, and add blobs and manifests.
//!
//! This is what a build container leaves behind (Spack pushed to a mounted directory) and what
//! signing and publishing start from. Paths inside the mirror come from [`sf_core::layout::spack`];
//! every write goes through a temporary file and a rename, so a reader never sees half an object.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sf_core::bad_input;
use sf_core::fsutil::write_atomic;
use sf_core::layout::spack;

use crate::manifest::{media_type, BlobRecord, KeyIndex, Manifest, ManifestFile};

/// The content of `v3/layout.json` as Spack writes it (no newline).
pub const LAYOUT_JSON_CONTENT: &str = "{\"signing\": \"gpg\"}";

/// File-name suffix of spec manifests.
pub const SPEC_MANIFEST_SUFFIX: &str = ".spec.manifest.json";

/// Which Spack build-cache layout a mirror directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorLayout {
    /// `v3/manifests/...` and `blobs/...` (Spack v1.0).
    V3,
    /// The flat `build_cache/` tree (Spack before v1.0), read only.
    V2,
}

/// A mirror root on the local file system.
#[derive(Clone, Debug)]
pub struct Mirror {
    root: PathBuf,
}

/// One spec manifest found in a mirror.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecManifestEntry {
    /// Mirror-relative key, `v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json`.
    pub key: String,
    /// The package name (its folder).
    pub name: String,
    /// The DAG hash from the file name (the last `-` part), when it looks like one.
    pub dag_hash: Option<String>,
}

/// What a blob on disk looks like against its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobStatus {
    Ok,
    Missing,
    WrongSize { expected: u64, actual: u64 },
    WrongChecksum { expected: String, actual: String },
}

/// Something wrong with one spec manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The manifest is not version 3.
    Version(u64),
    /// No record of a media type a spec manifest needs.
    MissingRecord(&'static str),
    /// A record names a blob that is missing or differs.
    Blob {
        media_type: String,
        key: String,
        status: BlobStatus,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Version(v) => write!(f, "manifest version {v}, expected 3"),
            Problem::MissingRecord(m) => write!(f, "no {m} record"),
            Problem::Blob {
                media_type,
                key,
                status,
            } => {
                match status {
                    BlobStatus::Ok => write!(f, "{media_type} blob {key} is fine"),
                    BlobStatus::Missing => write!(f, "{media_type} blob {key} is missing"),
                    BlobStatus::WrongSize { expected, actual } => {
                        write!(
                            f,
                            "{media_type} blob {key} is {actual} bytes, the record says {expected}"
                        )
                    }
                    BlobStatus::WrongChecksum { expected, actual } => {
                        write!(f, "{media_type} blob {key} has checksum {actual}, the record says {expected}")
                    }
                }
            }
        }
    }
}

/// A spec manifest read and checked against the blobs in its mirror.
#[derive(Clone, Debug)]
pub struct SpecCheck {
    pub entry: SpecManifestEntry,
    pub file: ManifestFile,
    /// Empty when the manifest is version 3, has its tarball and spec records, and both blobs match.
    pub problems: Vec<Problem>,
}

impl SpecCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Mirror {
    /// A mirror rooted at an existing directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(bad_input(format!(
                "mirror {} is not a directory",
                root.display()
            )));
        }
        Ok(Mirror { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of a mirror-relative key.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Which layout the directory holds: layout 3 wins when both are present, as in Spack.
    pub fn layout(&self) -> Result<MirrorLayout> {
        if self.path("v3").is_dir() {
            Ok(MirrorLayout::V3)
        } else if self.path(spack::V2_ROOT).is_dir() {
            Ok(MirrorLayout::V2)
        } else {
            Err(bad_input(format!(
                "{} is not a Spack build cache: it has neither v3/ (layout 3) nor {}/ (layout 2)",
                self.root.display(),
                spack::V2_ROOT
            )))
        }
    }

    /// Refuse anything but layout 3, with a message saying what was found.
    pub fn require_v3(&self) -> Result<()> {
        match self.layout()? {
            MirrorLayout::V3 => Ok(()),
            MirrorLayout::V2 => Err(bad_input(format!(
                "{} is a layout-2 mirror ({}/, Spack before v1.0); only layout 3 (v3/, blobs/) is accepted here: migrate it with `spack buildcache migrate`",
                self.root.display(),
                spack::V2_ROOT
            ))),
        }
    }

    /// Every spec manifest, sorted by key. Temporary files (dot files) are not manifests.
    pub fn spec_manifests(&self) -> Result<Vec<SpecManifestEntry>> {
        let dir = self.path(spack::SPEC_MANIFESTS_DIR);
        let mut out = Vec::new();
        if !dir.is_dir() {
            return Ok(out);
        }
        for pkg in read_dir_sorted(&dir)? {
            if !pkg.is_dir() {
                continue;
            }
            let name = file_name(&pkg);
            for file in read_dir_sorted(&pkg)? {
                let fname = file_name(&file);
                if fname.starts_with('.')
                    || !fname.ends_with(SPEC_MANIFEST_SUFFIX)
                    || !file.is_file()
                {
                    continue;
                }
                let stem = &fname[..fname.len() - SPEC_MANIFEST_SUFFIX.len()];
                let dag_hash = stem
                    .rsplit_once('-')
                    .map(|(_, h)| h)
                    .filter(|h| {
                        h.len() == 32
                            && h.bytes()
                                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
                    })
                    .map(str::to_string);
                let key = spack::join(&spack::join(spack::SPEC_MANIFESTS_DIR, &name), &fname);
                out.push(SpecManifestEntry {
                    key,
                    name: name.clone(),
                    dag_hash,
                });
            }
        }
        Ok(out)
    }

    /// Read and parse a manifest by key.
    pub fn read_manifest(&self, key: &str) -> Result<ManifestFile> {
        let bytes = fs::read(self.path(key)).with_context(|| format!("reading {key}"))?;
        ManifestFile::parse(&bytes).with_context(|| format!("parsing {key}"))
    }

    /// Read a manifest if it exists.
    pub fn read_manifest_opt(&self, key: &str) -> Result<Option<ManifestFile>> {
        if self.path(key).exists() {
            self.read_manifest(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The local path of a record's blob (the record's checksum is validated first).
    pub fn blob_path(&self, record: &BlobRecord) -> Result<PathBuf> {
        Ok(self.path(&record.blob_key()?))
    }

    /// Check a blob's size and checksum against its record, streaming the file.
    pub fn check_blob(&self, record: &BlobRecord) -> Result<BlobStatus> {
        let path = self.blob_path(record)?;
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(BlobStatus::Missing),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BlobStatus::Missing),
            // A symlink loop, a blob the mirror's owner cannot read: the mirror given is broken.
            Err(e) => {
                return Err(bad_input(format!(
                    "the blob {} cannot be read: {e}",
                    path.display()
                )))
            }
        };
        if meta.len() != record.content_length {
            return Ok(BlobStatus::WrongSize {
                expected: record.content_length,
                actual: meta.len(),
            });
        }
        let actual = hash_file(&path, &record.checksum_algorithm)?;
        if actual != record.checksum {
            return Ok(BlobStatus::WrongChecksum {
                expected: record.checksum.clone(),
                actual,
            });
        }
        Ok(BlobStatus::Ok)
    }

    /// Read a spec manifest and check it the way Spack's `update-index` and `install` would: version
    /// 3, a tarball and a spec record, both blobs present with the right size and checksum.
    pub fn check_spec_manifest(&self, entry: &SpecManifestEntry) -> Result<SpecCheck> {
        let file = self.read_manifest(&entry.key)?;
        let mut problems = Vec::new();
        if file.manifest.version != crate::manifest::MANIFEST_VERSION {
            problems.push(Problem::Version(file.manifest.version));
        }
        for wanted in [media_type::TARBALL, media_type::SPEC] {
            match file.manifest.record(wanted) {
                None => problems.push(Problem::MissingRecord(wanted)),
                Some(rec) => {
                    let status = self.check_blob(rec).with_context(|| {
                        format!(
                            "checking the {wanted} blob {} of {}",
                            rec.blob_key().unwrap_or_default(),
                            entry.key
                        )
                    })?;
                    if status != BlobStatus::Ok {
                        problems.push(Problem::Blob {
                            media_type: wanted.to_string(),
                            key: rec.blob_key()?,
                            status,
                        });
                    }
                }
            }
        }
        Ok(SpecCheck {
            entry: entry.clone(),
            file,
            problems,
        })
    }

    /// Store bytes as a blob (sha256) and return its record. An existing blob with the same
    /// checksum is left alone: blobs are immutable and content-addressed.
    pub fn write_blob(
        &self,
        bytes: &[u8],
        media_type: &str,
        compression: &str,
    ) -> Result<BlobRecord> {
        let record = BlobRecord::for_bytes(bytes, media_type, compression);
        if self.check_blob(&record)? != BlobStatus::Ok {
            let path = self.blob_path(&record)?;
            write_file(&path, bytes)?;
        }
        Ok(record)
    }

    /// Write a manifest (unsigned, Spack's exact JSON) at a key.
    pub fn write_manifest(&self, key: &str, manifest: &Manifest) -> Result<()> {
        write_file(&self.path(key), manifest.to_spack_json().as_bytes())
    }

    /// Write bytes at a mirror key, atomically, creating folders.
    pub fn write_key(&self, key: &str, bytes: &[u8]) -> Result<()> {
        write_file(&self.path(key), bytes)
    }

    /// Write `v3/layout.json` unless it already says `{"signing": "gpg"}`.
    pub fn write_layout_json(&self) -> Result<bool> {
        let path = self.path(spack::LAYOUT_JSON);
        if fs::read(&path).is_ok_and(|b| b == LAYOUT_JSON_CONTENT.as_bytes()) {
            return Ok(false);
        }
        write_file(&path, LAYOUT_JSON_CONTENT.as_bytes())?;
        Ok(true)
    }

    /// The key index the mirror's `keys.manifest.json` points at, if it has one.
    pub fn read_key_index(&self) -> Result<Option<KeyIndex>> {
        let Some(file) = self.read_manifest_opt(spack::KEYS_MANIFEST)? else {
            return Ok(None);
        };
        file.manifest
            .ensure_v3()
            .with_context(|| spack::KEYS_MANIFEST.to_string())?;
        let rec = file.manifest.record(media_type::KEY_INDEX).ok_or_else(|| {
            bad_input(format!(
                "{} has no {} record",
                spack::KEYS_MANIFEST,
                media_type::KEY_INDEX
            ))
        })?;
        match self.check_blob(rec)? {
            BlobStatus::Ok => {}
            status => {
                return Err(bad_input(format!(
                    "{}: {}",
                    spack::KEYS_MANIFEST,
                    Problem::Blob {
                        media_type: rec.media_type.clone(),
                        key: rec.blob_key()?,
                        status
                    }
                )))
            }
        }
        let bytes = fs::read(self.blob_path(rec)?)?;
        KeyIndex::parse(&bytes)
            .map(Some)
            .with_context(|| format!("the key index of {}", spack::KEYS_MANIFEST))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Hex digest of a file with one of the sha2 algorithms a record may name, in 1 MiB reads.
pub fn hash_file(path: &Path, algorithm: &str) -> Result<String> {
    use sha2::Digest;
    fn run<D: Digest>(mut f: fs::File) -> io::Result<String> {
        let mut d = D::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(hex::encode(d.finalize()));
            }
            d.update(&buf[..n]);
        }
    }
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let r = match algorithm {
        "sha224" => run::<sha2::Sha224>(f),
        "sha256" => run::<sha2::Sha256>(f),
        "sha384" => run::<sha2::Sha384>(f),
        "sha512" => run::<sha2::Sha512>(f),
        other => {
            return Err(bad_input(format!(
                "checksum algorithm {other:?} is not supported; valid: sha256"
            )))
        }
    };
    r.with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::compression;
    use sf_testkit::fixture;

    /// A private copy of a fixture mirror, to change freely.
    fn copy_fixture(name: &str) -> (tempfile::TempDir, Mirror) {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixture(name), tmp.path());
        let m = Mirror::open(tmp.path()).unwrap();
        (tmp, m)
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &dest);
            } else {
                fs::copy(e.path(), dest).unwrap();
            }
        }
    }

    #[test]
    fn layouts_are_told_apart() {
        assert_eq!(
            Mirror::open(fixture("spack-v3-unsigned"))
                .unwrap()
                .layout()
                .unwrap(),
            MirrorLayout::V3
        );
        let v2 = Mirror::open(fixture("spack-v2-signed")).unwrap();
        assert_eq!(v2.layout().unwrap(), MirrorLayout::V2);
        let e = v2.require_v3().unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2);
        assert!(e.to_string().contains("layout-2"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(Mirror::open(empty.path()).unwrap().layout().is_err());
        assert!(Mirror::open(empty.path().join("nope")).is_err());
    }

    #[test]
    fn a_blob_that_is_a_symlink_loop_is_bad_input_naming_the_blob() {
        let (_tmp, m) = copy_fixture("spack-v3-unsigned");
        let spec = m.spec_manifests().unwrap().remove(0);
        let file = m.read_manifest(&spec.key).unwrap();
        let rec = file.manifest.record(media_type::TARBALL).unwrap().clone();
        let blob = m.blob_path(&rec).unwrap();
        fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink(&blob, &blob).unwrap();
        let e = m.check_spec_manifest(&spec).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
        assert!(
            e.to_string().contains(&rec.blob_key().unwrap()),
            "the first line names the blob: {e}"
        );
        assert!(format!("{e:#}").contains("cannot be read"), "{e:#}");
    }

    #[test]
    fn walks_the_three_fixture_specs_and_all_check_out() {
        for name in ["spack-v3-unsigned", "spack-v3-signed"] {
            let m = Mirror::open(fixture(name)).unwrap();
            let specs = m.spec_manifests().unwrap();
            let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["greet", "greetdata", "libgreet"]);
            assert_eq!(
                specs[0].key,
                spack::spec_manifest("greet", "1.0", "vg6h5mxa7kdxvkzohnebjx3tcdjqufan"),
            );
            assert_eq!(
                specs[0].dag_hash.as_deref(),
                Some("vg6h5mxa7kdxvkzohnebjx3tcdjqufan")
            );
            for s in &specs {
                let c = m.check_spec_manifest(s).unwrap();
                assert!(c.is_ok(), "{name} {}: {:?}", s.key, c.problems);
                assert_eq!(c.file.is_signed(), name == "spack-v3-signed");
            }
        }
    }

    #[test]
    fn missing_short_and_altered_blobs_are_named() {
        let (_tmp, m) = copy_fixture("spack-v3-unsigned");
        let specs = m.spec_manifests().unwrap();
        let greet = m.read_manifest(&specs[0].key).unwrap().manifest;
        let tar = greet.record(media_type::TARBALL).unwrap();
        let spec = greet.record(media_type::SPEC).unwrap();

        // One byte changed, same size: the checksum catches it.
        let p = m.blob_path(tar).unwrap();
        let mut bytes = fs::read(&p).unwrap();
        bytes[100] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            m.check_blob(tar).unwrap(),
            BlobStatus::WrongChecksum { .. }
        ));
        fs::write(&p, &bytes[1..]).unwrap();
        assert_eq!(
            m.check_blob(tar).unwrap(),
            BlobStatus::WrongSize {
                expected: 3501,
                actual: 3500
            }
        );
        fs::remove_file(m.blob_path(spec).unwrap()).unwrap();

        let c = m.check_spec_manifest(&specs[0]).unwrap();
        let text: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("is 3500 bytes, the record says 3501"),
            "{text:?}"
        );
        assert!(
            text[1].contains("f123c35a") && text[1].ends_with("is missing"),
            "{text:?}"
        );
        // The other specs are untouched.
        assert!(m.check_spec_manifest(&specs[1]).unwrap().is_ok());
    }

    #[test]
    fn a_non_v3_manifest_is_a_problem() {
        let (_tmp, m) = copy_fixture("spack-v3-unsigned");
        let e = &m.spec_manifests().unwrap()[2];
        let text = fs::read_to_string(m.path(&e.key))
            .unwrap()
            .replace("\"version\":3", "\"version\":2");
        fs::write(m.path(&e.key), text).unwrap();
        let c = m.check_spec_manifest(e).unwrap();
        assert_eq!(c.problems, vec![Problem::Version(2)]);
    }

    #[test]
    fn writes_reproduce_the_signed_fixtures_key_objects() {
        let signed = Mirror::open(fixture("spack-v3-signed")).unwrap();
        let fpr = "756149701D5AF77338F02F92169016E7389B3308";
        let key_manifest = signed
            .read_manifest(&spack::key_manifest(fpr))
            .unwrap()
            .manifest;
        let key_blob = fs::read(signed.blob_path(&key_manifest.data[0]).unwrap()).unwrap();

        let (_tmp, m) = copy_fixture("spack-v3-unsigned");
        assert_eq!(m.read_key_index().unwrap(), None);
        let rec = m
            .write_blob(&key_blob, media_type::PGP_KEYS, compression::NONE)
            .unwrap();
        m.write_manifest(&spack::key_manifest(fpr), &Manifest::single(rec))
            .unwrap();
        let mut idx = KeyIndex::default();
        idx.insert(fpr);
        let rec = m
            .write_blob(&idx.to_bytes(), media_type::KEY_INDEX, compression::NONE)
            .unwrap();
        m.write_manifest(spack::KEYS_MANIFEST, &Manifest::single(rec))
            .unwrap();
        assert!(
            !m.write_layout_json().unwrap(),
            "the unsigned fixture has layout.json already"
        );

        for key in [
            spack::key_manifest(fpr).as_str(),
            spack::KEYS_MANIFEST,
            spack::LAYOUT_JSON,
        ] {
            assert_eq!(
                fs::read(m.path(key)).unwrap(),
                fs::read(signed.path(key)).unwrap(),
                "{key}"
            );
        }
        assert_eq!(
            m.read_key_index()
                .unwrap()
                .unwrap()
                .fingerprints()
                .collect::<Vec<_>>(),
            [fpr]
        );
        // Writing the same blob again is a no-op.
        m.write_blob(&key_blob, media_type::PGP_KEYS, compression::NONE)
            .unwrap();
        let leftovers: Vec<_> = fs::read_dir(m.path("blobs/sha256/a6"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn layout_json_is_written_when_missing() {
        let (_tmp, m) = copy_fixture("spack-v3-unsigned");
        fs::remove_file(m.path(spack::LAYOUT_JSON)).unwrap();
        assert!(m.write_layout_json().unwrap());
        assert_eq!(
            fs::read(m.path(spack::LAYOUT_JSON)).unwrap(),
            fs::read(fixture("spack-v3-signed/v3/layout.json")).unwrap()
        );
    }
}
