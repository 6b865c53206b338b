//! The package index of a mirror: a Spack database, version 8 (`application/vnd.spack.db.v8+json`).
//!
//! `{"database":{"version":"8","installs":{"<dag hash>":{"spec":<node>,"ref_count":N,"in_buildcache":B}}}}`,
//! compact Python-style JSON, no newline. [`Index::add_spec`] does what Spack's `update-index` does
//! per spec manifest (`db.add(spec)` then `mark(spec, "in_buildcache", True)`): every node of the
//! spec's DAG gets a record, dependencies before dependents; a new record raises the `ref_count` of
//! each node it depends on; only the root of each pushed spec is marked `in_buildcache`, so nodes
//! that are only referenced (externals, build deps not pushed) stay `false` until their own manifest
//! is added. Adding the same spec again changes nothing, so merging new specs into an index read
//! from the mirror gives what a full rebuild over all manifests would give.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::{Map, Value};
use sf_core::bad_input;

use crate::manifest::{compression, media_type, python_json, BlobRecord, Manifest};
use crate::spec::SpecBlob;

/// The database version Spack v1.0 writes and reads.
pub const DB_VERSION: &str = "8";

/// One install record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The node as stored, with `hash` and hash-only `dependencies`.
    pub spec: Map<String, Value>,
    /// How many records in the index depend on this one.
    pub ref_count: u64,
    /// Whether the mirror holds this node's binary.
    pub in_buildcache: bool,
}

/// A package index, records in insertion order (the order Spack writes them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    records: Vec<(String, Record)>,
    position: HashMap<String, usize>,
}

impl Index {
    pub fn new() -> Self {
        Index::default()
    }

    /// Parse an index blob. Anything but a DB v8 is refused (Spack v1.0 ignores newer ones).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| bad_input(format!("index is not JSON: {e}")))?;
        let db = doc
            .get("database")
            .ok_or_else(|| bad_input("index has no \"database\" object"))?;
        let version = db.get("version").and_then(Value::as_str).unwrap_or("");
        if version != DB_VERSION {
            return Err(bad_input(format!(
                "index is database version {version:?}; Spack v1.0 uses {DB_VERSION:?}"
            )));
        }
        let installs = db
            .get("installs")
            .and_then(Value::as_object)
            .ok_or_else(|| bad_input("index has no \"installs\" object"))?;
        let mut index = Index::new();
        for (hash, rec) in installs {
            let spec = rec
                .get("spec")
                .and_then(Value::as_object)
                .ok_or_else(|| bad_input(format!("index record {hash} has no spec")))?
                .clone();
            let ref_count = rec.get("ref_count").and_then(Value::as_u64).unwrap_or(0);
            let in_buildcache = rec
                .get("in_buildcache")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            index.insert(
                hash.clone(),
                Record {
                    spec,
                    ref_count,
                    in_buildcache,
                },
            );
        }
        Ok(index)
    }

    fn insert(&mut self, hash: String, rec: Record) {
        self.position.insert(hash.clone(), self.records.len());
        self.records.push((hash, rec));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, hash: &str) -> Option<&Record> {
        self.position.get(hash).map(|&i| &self.records[i].1)
    }

    pub fn contains(&self, hash: &str) -> bool {
        self.position.contains_key(hash)
    }

    /// Records in stored order.
    pub fn records(&self) -> impl Iterator<Item = (&str, &Record)> {
        self.records.iter().map(|(h, r)| (h.as_str(), r))
    }

    /// Whether the mirror holds a binary for this hash, per the index.
    pub fn in_buildcache(&self, hash: &str) -> bool {
        self.get(hash).is_some_and(|r| r.in_buildcache)
    }

    /// Add a pushed spec (its whole DAG) and mark its root as in the build cache. Returns whether
    /// the index changed.
    pub fn add_spec(&mut self, spec: &SpecBlob) -> Result<bool> {
        let before = self.records.len();
        let root = spec.root().hash().to_string();
        self.add_node(spec, &root, 0)?;
        let i = self.position[&root];
        let flipped = !self.records[i].1.in_buildcache;
        self.records[i].1.in_buildcache = true;
        Ok(flipped || self.records.len() != before)
    }

    fn add_node(&mut self, spec: &SpecBlob, hash: &str, depth: usize) -> Result<()> {
        if depth > spec.nodes.len() {
            return Err(bad_input(format!(
                "the spec of {} has a dependency cycle",
                spec.root().name()
            )));
        }
        let node = spec
            .node(hash)
            .ok_or_else(|| bad_input(format!("spec node {hash} is missing from its spec")))?;
        let deps = node.dependencies()?;
        for d in &deps {
            if !self.contains(&d.hash) {
                self.add_node(spec, &d.hash, depth + 1)?;
            }
        }
        if !self.contains(hash) {
            self.insert(
                hash.to_string(),
                Record {
                    spec: node.json.clone(),
                    ref_count: 0,
                    in_buildcache: false,
                },
            );
            for d in &deps {
                let i = self.position[&d.hash];
                self.records[i].1.ref_count += 1;
            }
        }
        Ok(())
    }

    /// The reference counts the records' dependencies imply (a consistency check).
    pub fn implied_ref_counts(&self) -> HashMap<String, u64> {
        let mut counts: HashMap<String, u64> =
            self.records.iter().map(|(h, _)| (h.clone(), 0)).collect();
        for (_, r) in &self.records {
            if let Some(Value::Array(deps)) = r.spec.get("dependencies") {
                for d in deps {
                    if let Some(c) = d
                        .get("hash")
                        .and_then(Value::as_str)
                        .and_then(|h| counts.get_mut(h))
                    {
                        *c += 1;
                    }
                }
            }
        }
        counts
    }

    /// The blob bytes, exactly as Spack writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut installs = Map::new();
        for (hash, r) in &self.records {
            let mut rec = Map::new();
            rec.insert("spec".into(), Value::Object(r.spec.clone()));
            rec.insert("ref_count".into(), Value::from(r.ref_count));
            rec.insert("in_buildcache".into(), Value::Bool(r.in_buildcache));
            installs.insert(hash.clone(), Value::Object(rec));
        }
        let mut db = Map::new();
        db.insert("version".into(), Value::from(DB_VERSION));
        db.insert("installs".into(), Value::Object(installs));
        let mut top = Map::new();
        top.insert("database".into(), Value::Object(db));
        python_json(&Value::Object(top), false).into_bytes()
    }

    /// The index blob and the `index.manifest.json` that points at it.
    pub fn to_blob_and_manifest(&self) -> (Vec<u8>, Manifest) {
        let bytes = self.to_bytes();
        let record = BlobRecord::for_bytes(&bytes, media_type::INDEX, compression::NONE);
        (bytes, Manifest::single(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::layout::spack;

    fn fixture() -> std::path::PathBuf {
        sf_testkit::fixture("spack-v3-signed")
    }

    fn blob(hash: &str) -> Vec<u8> {
        std::fs::read(fixture().join(spack::blob("sha256", hash))).unwrap()
    }

    const INDEX: &str = "9a3a151a1d8fd8ee70181218d5c275d6b9ee96d3e028d109fa994d7fad6324ce";
    /// Spec blobs in the order `update-index` lists the manifests: greet, greetdata, libgreet.
    const SPECS: [&str; 3] = [
        "f123c35a29b173e85aea047e4ee7f22335aa8cbd5a2b5e2cc758e1138a2e16dc",
        "51fa65b66213869fb8178d9971994f34e76e913719b54a8626c9a60faa98eecf",
        "1729147755fa82ae25db21d2c535d08a3d24793baea46569b59fd12ed7b9b3d2",
    ];

    #[test]
    fn the_fixture_index_round_trips_byte_for_byte() {
        let bytes = blob(INDEX);
        let index = Index::parse(&bytes).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(index.to_bytes(), bytes);
        let (b, m) = index.to_blob_and_manifest();
        assert_eq!(b, bytes);
        let on_disk = std::fs::read_to_string(fixture().join(spack::INDEX_MANIFEST)).unwrap();
        assert_eq!(m.to_spack_json(), on_disk);
    }

    #[test]
    fn adding_the_fixture_specs_reproduces_spacks_index() {
        let mut index = Index::new();
        for h in SPECS {
            assert!(index.add_spec(&SpecBlob::parse(&blob(h)).unwrap()).unwrap());
        }
        assert_eq!(
            String::from_utf8(index.to_bytes()).unwrap(),
            String::from_utf8(blob(INDEX)).unwrap()
        );
        // Again, in another order, and twice: same content, nothing changes the second time.
        let mut other = Index::new();
        for h in SPECS.iter().rev() {
            other.add_spec(&SpecBlob::parse(&blob(h)).unwrap()).unwrap();
        }
        for h in SPECS {
            assert!(!other.add_spec(&SpecBlob::parse(&blob(h)).unwrap()).unwrap());
        }
        for (h, r) in index.records() {
            assert_eq!(other.get(h), Some(r));
        }
    }

    #[test]
    fn a_dependency_only_referenced_stays_out_of_the_build_cache() {
        let mut index = Index::new();
        index
            .add_spec(&SpecBlob::parse(&blob(SPECS[0])).unwrap())
            .unwrap();
        assert!(index.in_buildcache("vg6h5mxa7kdxvkzohnebjx3tcdjqufan"));
        assert!(!index.in_buildcache("ckrbas73k7j2juaix33wt23ixqfu2or2"));
        assert_eq!(
            index
                .get("ckrbas73k7j2juaix33wt23ixqfu2or2")
                .unwrap()
                .ref_count,
            1
        );
        assert_eq!(
            index
                .get("vg6h5mxa7kdxvkzohnebjx3tcdjqufan")
                .unwrap()
                .ref_count,
            0
        );
        for (h, c) in index.implied_ref_counts() {
            assert_eq!(index.get(&h).unwrap().ref_count, c, "{h}");
        }
    }

    #[test]
    fn other_database_versions_are_refused() {
        let e = Index::parse(br#"{"database":{"version":"9","installs":{}}}"#).unwrap_err();
        assert!(e.to_string().contains("\"9\""));
    }
}
