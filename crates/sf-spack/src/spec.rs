//! Spec metadata blobs (`application/vnd.spack.spec.v5+json`): parsing and the DAG hash.
//!
//! A spec blob is `{"spec":{"_meta":{"version":N},"nodes":[root, ...]},"buildcache_layout_version":2}`,
//! gzip-compressed or plain JSON (Spack's reader takes both). Nodes are kept as the JSON objects
//! Spack wrote, in their stored key order, because the index stores them verbatim and the DAG hash
//! is computed over exactly that text: the node without its `hash` key, serialised like Python's
//! `json.dumps(..., ensure_ascii=True, separators=(",", ":"))`, hashed with SHA-1 and written in
//! lowercase base32 (32 characters). Spec format 5 (Spack v1.0) and 4 (Spack 0.22-0.23, found in
//! migrated mirrors, with `compiler` fields) are read; the hash check covers both, since each was
//! hashed over its own node text.

use std::io::Read;

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use sf_core::bad_input;
use sha1::{Digest, Sha1};

use crate::manifest::python_json;

/// Spec-file format versions this reader accepts.
pub const SPEC_FORMATS: [u64; 2] = [4, 5];
/// The newest build-cache layout a spec blob may declare (Spack v1.0 reads up to 3).
pub const MAX_BUILDCACHE_LAYOUT: u64 = 3;

/// One dependency edge of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepEdge {
    pub name: String,
    pub hash: String,
    pub deptypes: Vec<String>,
}

/// One node of a spec DAG, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecNode {
    /// The node's JSON object, `hash` included, key order as stored.
    pub json: Map<String, Value>,
}

impl SpecNode {
    pub fn from_json(v: &Value) -> Result<Self> {
        let json = v
            .as_object()
            .ok_or_else(|| bad_input("a spec node is not a JSON object"))?
            .clone();
        let node = SpecNode { json };
        for field in ["name", "hash"] {
            if node.str_field(field).is_none() {
                return Err(bad_input(format!("a spec node has no string {field:?}")));
            }
        }
        node.dependencies()?;
        Ok(node)
    }

    fn str_field(&self, k: &str) -> Option<&str> {
        self.json.get(k).and_then(Value::as_str)
    }

    pub fn name(&self) -> &str {
        self.str_field("name").unwrap_or_default()
    }

    /// The version as a string (Spack stores it as one; numbers are shown as written).
    pub fn version(&self) -> String {
        match self.json.get("version") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }

    /// The DAG hash the node carries.
    pub fn hash(&self) -> &str {
        self.str_field("hash").unwrap_or_default()
    }

    /// `arch.platform_os` and `arch.target` (a target may be a string or `{"name": ...}`).
    pub fn platform_os(&self) -> Option<&str> {
        self.json.get("arch")?.get("platform_os")?.as_str()
    }

    pub fn target(&self) -> Option<&str> {
        let t = self.json.get("arch")?.get("target")?;
        t.as_str().or_else(|| t.get("name").and_then(Value::as_str))
    }

    pub fn is_external(&self) -> bool {
        self.json.get("external").is_some_and(|e| !e.is_null())
    }

    /// The dependency edges: v4/v5 write `parameters.deptypes`, older formats a `type` list.
    pub fn dependencies(&self) -> Result<Vec<DepEdge>> {
        let Some(deps) = self.json.get("dependencies") else {
            return Ok(Vec::new());
        };
        let deps = deps
            .as_array()
            .ok_or_else(|| bad_input(format!("{}: \"dependencies\" is not a list", self.name())))?;
        deps.iter()
            .map(|d| {
                let field = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
                let types = d
                    .get("parameters")
                    .and_then(|p| p.get("deptypes"))
                    .or_else(|| d.get("type"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                match (field("name"), field("hash")) {
                    (Some(name), Some(hash)) => Ok(DepEdge {
                        name,
                        hash,
                        deptypes: types,
                    }),
                    _ => Err(bad_input(format!(
                        "{}: a dependency has no name or hash",
                        self.name()
                    ))),
                }
            })
            .collect()
    }

    /// The DAG hash computed from the node's content.
    pub fn computed_hash(&self) -> String {
        let mut without = self.json.clone();
        without.shift_remove("hash");
        dag_hash_of(&Value::Object(without))
    }
}

/// A parsed spec blob.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecBlob {
    /// `_meta.version` of the spec (4 or 5).
    pub format: u64,
    pub buildcache_layout_version: Option<u64>,
    /// Root first, then every other node of the DAG.
    pub nodes: Vec<SpecNode>,
}

impl SpecBlob {
    /// Parse a spec blob (gzip or plain JSON) and check every node's DAG hash.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let json = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| bad_input(format!("spec blob is not valid gzip: {e}")))?;
            out
        } else {
            bytes.to_vec()
        };
        let doc: Value = serde_json::from_slice(&json)
            .map_err(|e| bad_input(format!("spec blob is not JSON: {e}")))?;
        Self::from_value(&doc)
    }

    pub fn from_value(doc: &Value) -> Result<Self> {
        let layout = doc.get("buildcache_layout_version").and_then(Value::as_u64);
        if let Some(l) = layout {
            if l > MAX_BUILDCACHE_LAYOUT {
                return Err(bad_input(format!(
                    "spec blob declares build-cache layout {l}; Spack v1.0 reads up to {MAX_BUILDCACHE_LAYOUT}"
                )));
            }
        }
        let spec = doc
            .get("spec")
            .ok_or_else(|| bad_input("spec blob has no \"spec\" object"))?;
        let format = spec
            .get("_meta")
            .and_then(|m| m.get("version"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if !SPEC_FORMATS.contains(&format) {
            return Err(bad_input(format!(
                "spec format {format} is not supported; supported: 4, 5"
            )));
        }
        let nodes = spec
            .get("nodes")
            .and_then(Value::as_array)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad_input("spec blob has no nodes"))?
            .iter()
            .map(SpecNode::from_json)
            .collect::<Result<Vec<_>>>()?;
        let blob = SpecBlob {
            format,
            buildcache_layout_version: layout,
            nodes,
        };
        blob.check_hashes()?;
        blob.check_closed()?;
        Ok(blob)
    }

    pub fn root(&self) -> &SpecNode {
        &self.nodes[0]
    }

    pub fn node(&self, hash: &str) -> Option<&SpecNode> {
        self.nodes.iter().find(|n| n.hash() == hash)
    }

    /// Every node's stored hash must be the hash of its content.
    fn check_hashes(&self) -> Result<()> {
        for n in &self.nodes {
            let computed = n.computed_hash();
            if computed != n.hash() {
                return Err(bad_input(format!(
                    "spec node {} says its DAG hash is {}, but its content hashes to {computed}",
                    n.name(),
                    n.hash()
                )));
            }
        }
        Ok(())
    }

    /// Every dependency named must be a node of the blob.
    fn check_closed(&self) -> Result<()> {
        for n in &self.nodes {
            for d in n.dependencies()? {
                if self.node(&d.hash).is_none() {
                    return Err(bad_input(format!(
                        "spec node {} depends on {}/{} which is not in the spec",
                        n.name(),
                        d.name,
                        d.hash
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Spack's DAG hash of a node dict (without its `hash` key): base32(sha1(python json)), lowercase.
pub fn dag_hash_of(node_without_hash: &Value) -> String {
    let text = python_json(node_without_hash, false);
    base32_lower(&Sha1::digest(text.as_bytes()))
}

/// RFC 4648 base32, lowercase, no padding (a 20-byte SHA-1 gives exactly 32 characters).
pub fn base32_lower(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Read a spec blob from a file.
pub fn read_spec_blob(path: &std::path::Path) -> Result<SpecBlob> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SpecBlob::parse(&bytes).with_context(|| format!("parsing the spec blob {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_blob(hash: &str) -> Vec<u8> {
        let p = sf_testkit::fixture("spack-v3-signed")
            .join(sf_core::layout::spack::blob("sha256", hash));
        std::fs::read(p).unwrap()
    }

    #[test]
    fn base32_matches_rfc_vectors() {
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32_lower(b"f"), "my");
    }

    #[test]
    fn fixture_spec_hashes_recompute() {
        let blob = SpecBlob::parse(&fixture_blob(
            "f123c35a29b173e85aea047e4ee7f22335aa8cbd5a2b5e2cc758e1138a2e16dc",
        ))
        .unwrap();
        assert_eq!(blob.format, 5);
        assert_eq!(blob.root().name(), "greet");
        assert_eq!(blob.root().hash(), "vg6h5mxa7kdxvkzohnebjx3tcdjqufan");
        assert_eq!(blob.nodes.len(), 3);
        assert_eq!(
            blob.root().dependencies().unwrap()[0].hash,
            "ckrbas73k7j2juaix33wt23ixqfu2or2"
        );
        assert_eq!(blob.root().target(), Some("x86_64_v4"));
    }

    #[test]
    fn v4_specs_of_a_layout_2_mirror_parse_and_hash() {
        let dir = sf_testkit::fixture("spack-v2-signed").join("build_cache");
        let f = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.to_string_lossy().contains("-greet-1.0-") && p.to_string_lossy().ends_with(".sig")
            })
            .unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        let (body, _) = crate::manifest::split_clearsigned(&text).unwrap();
        let blob = SpecBlob::parse(body.as_bytes()).unwrap();
        assert_eq!(blob.format, 4);
        assert_eq!(blob.root().hash(), "fr7f2wbxpaqhjgzybz3g6vmkcsluxo7x");
        assert!(blob.nodes.iter().any(SpecNode::is_external));
    }

    #[test]
    fn a_tampered_node_is_refused() {
        let bytes =
            fixture_blob("f123c35a29b173e85aea047e4ee7f22335aa8cbd5a2b5e2cc758e1138a2e16dc");
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut json)
            .unwrap();
        let text = String::from_utf8(json)
            .unwrap()
            .replace("\"version\":\"1.0\"", "\"version\":\"1.1\"");
        let e = SpecBlob::parse(text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("hashes to"), "{e}");
        assert_eq!(sf_core::exit::code_for(&e), 2);
    }
}
