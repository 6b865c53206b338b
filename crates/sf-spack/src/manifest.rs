//! Build-cache manifests and the key index blob, parsed and written byte for byte as Spack does.
//!
//! A manifest is `{"version":3,"data":[record, ...]}` where each record names one blob by checksum.
//! Spack writes it with Python's `json.dump(obj, indent=0, separators=(",", ":"))`: every key and
//! array element on its own line, no indentation, ASCII only, no trailing newline. Spec manifests
//! may be wrapped in an OpenPGP cleartext signature; [`ManifestFile::parse`] takes either form and
//! keeps the signed text so a caller can verify it. Cryptography is not done here.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sf_core::bad_input;

/// The only manifest version Spack v1.0 reads or writes.
pub const MANIFEST_VERSION: u64 = 3;

/// Media types of the blobs a layout-3 mirror holds (Spack v1.0.2 constants).
pub mod media_type {
    /// Install-prefix tarball, gzip.
    pub const TARBALL: &str = "application/vnd.spack.install.v2.tar+gzip";
    /// Spec metadata (spec file format 5), gzip.
    pub const SPEC: &str = "application/vnd.spack.spec.v5+json";
    /// Package index, a Spack database v8, uncompressed.
    pub const INDEX: &str = "application/vnd.spack.db.v8+json";
    /// ASCII-armoured OpenPGP public key, uncompressed.
    pub const PGP_KEYS: &str = "application/pgp-keys";
    /// Key index `{"keys":{"<FPR>":{}}}`, uncompressed.
    pub const KEY_INDEX: &str = "application/vnd.spack.keyindex.v1+json";
}

/// Values of a record's `compression`.
pub mod compression {
    pub const GZIP: &str = "gzip";
    pub const NONE: &str = "none";
}

/// The checksum algorithm Spack v1.0 writes.
pub const SHA256: &str = "sha256";

/// Checksum algorithms a reader accepts in records, with their hex digest lengths. Spack can read
/// md5 and sha1 too; a mirror this project reads or writes never uses them.
const ALGORITHMS: [(&str, usize); 4] = [
    ("sha224", 56),
    ("sha256", 64),
    ("sha384", 96),
    ("sha512", 128),
];

const BEGIN_SIGNED: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";

/// One manifest record: a blob, by checksum, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobRecord {
    /// Size of the blob as stored (compressed).
    pub content_length: u64,
    pub media_type: String,
    pub compression: String,
    pub checksum_algorithm: String,
    /// Lowercase hex digest of the stored bytes.
    pub checksum: String,
    /// Properties Spack's schema allows beyond the five; kept so a rewrite loses nothing.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl BlobRecord {
    /// A sha256 record for stored bytes.
    pub fn for_bytes(bytes: &[u8], media_type: &str, compression: &str) -> Self {
        BlobRecord {
            content_length: bytes.len() as u64,
            media_type: media_type.to_string(),
            compression: compression.to_string(),
            checksum_algorithm: SHA256.to_string(),
            checksum: sha256_hex(bytes),
            extra: Map::new(),
        }
    }

    /// The blob's mirror-relative key, after checking the algorithm is known and the checksum is
    /// hex of the right length (a manifest must never name a path outside `blobs/`).
    pub fn blob_key(&self) -> Result<String> {
        let Some((_, len)) = ALGORITHMS
            .iter()
            .find(|(a, _)| *a == self.checksum_algorithm)
        else {
            return Err(bad_input(format!(
                "checksum algorithm {:?} is not supported; valid: sha256 (also sha224, sha384, sha512)",
                self.checksum_algorithm
            )));
        };
        let hex_ok = self.checksum.len() == *len
            && self
                .checksum
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(bad_input(format!(
                "checksum {:?} is not a lowercase hex {} digest",
                self.checksum, self.checksum_algorithm
            )));
        }
        Ok(sf_core::layout::spack::blob(
            &self.checksum_algorithm,
            &self.checksum,
        ))
    }
}

/// A manifest: `version` then `data`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub data: Vec<BlobRecord>,
    /// Top-level properties beyond the two, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// A version-3 manifest of one blob (index, key and key-index manifests).
    pub fn single(record: BlobRecord) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            data: vec![record],
            extra: Map::new(),
        }
    }

    /// Parse manifest JSON (no signature wrapper). Any version parses; see [`Manifest::ensure_v3`].
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            bad_input(format!(
                "not a build-cache manifest ({e}); expected {{\"version\":3,\"data\":[{{contentLength, mediaType, compression, checksumAlgorithm, checksum}}, ...]}}"
            ))
        })
    }

    /// Refuse anything but version 3, as Spack's reader does.
    pub fn ensure_v3(&self) -> Result<()> {
        if self.version != MANIFEST_VERSION {
            return Err(bad_input(format!(
                "manifest version {} is not supported; Spack v1.0 reads and writes version {MANIFEST_VERSION}",
                self.version
            )));
        }
        Ok(())
    }

    /// The first record of a media type, the one Spack uses.
    pub fn record(&self, media_type: &str) -> Option<&BlobRecord> {
        self.data.iter().find(|r| r.media_type == media_type)
    }

    /// The text Spack writes: `json.dump(indent=0, separators=(",", ":"))`, no trailing newline.
    pub fn to_spack_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a manifest serialises");
        python_json(&value, true)
    }
}

/// A manifest as read from a file: the JSON, and its signature wrapper if it had one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub manifest: Manifest,
    /// The manifest JSON text (for a signed one, the cleartext with dash-escapes removed).
    pub body: String,
    /// Present when the file is an OpenPGP cleartext-signed document.
    pub clearsigned: Option<Clearsigned>,
}

/// The parts of a cleartext-signed document that matter to a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clearsigned {
    /// Values of the `Hash:` armour headers (e.g. `SHA512`).
    pub hash_headers: Vec<String>,
    /// The whole file, for signature verification.
    pub text: String,
}

impl ManifestFile {
    /// Parse a manifest file, unsigned or clearsigned. Malformed input is a bad-input error.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| bad_input("manifest is not UTF-8 text"))?;
        let trimmed = text.trim_start_matches('\u{feff}');
        if trimmed.starts_with(BEGIN_SIGNED) {
            let (body, hash_headers) = split_clearsigned(trimmed)?;
            let manifest = Manifest::from_json(&body).context("in the signed text")?;
            Ok(ManifestFile {
                manifest,
                body,
                clearsigned: Some(Clearsigned {
                    hash_headers,
                    text: text.to_string(),
                }),
            })
        } else {
            let manifest = Manifest::from_json(text)?;
            Ok(ManifestFile {
                manifest,
                body: text.to_string(),
                clearsigned: None,
            })
        }
    }

    pub fn is_signed(&self) -> bool {
        self.clearsigned.is_some()
    }
}

/// Split a cleartext-signed document into its (dash-unescaped) text and `Hash:` header values.
///
/// The line break before `-----BEGIN PGP SIGNATURE-----` belongs to the signature framing, not to
/// the text (RFC 9580 section 7.1).
pub fn split_clearsigned(text: &str) -> Result<(String, Vec<String>)> {
    let malformed = |what: &str| bad_input(format!("malformed cleartext signature: {what}"));
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    if lines.next().map(str::trim_end) != Some(BEGIN_SIGNED) {
        return Err(malformed(
            "it does not start with -----BEGIN PGP SIGNED MESSAGE-----",
        ));
    }
    let mut hash_headers = Vec::new();
    loop {
        match lines.next() {
            None => return Err(malformed("no blank line after the armour headers")),
            Some("") => break,
            Some(h) => {
                let (name, value) = h
                    .split_once(": ")
                    .ok_or_else(|| malformed("bad armour header line"))?;
                if name == "Hash" {
                    hash_headers.extend(value.split(',').map(|v| v.trim().to_string()));
                }
            }
        }
    }
    let mut body: Vec<&str> = Vec::new();
    let mut ended = false;
    for line in lines.by_ref() {
        if line.trim_end() == BEGIN_SIGNATURE {
            ended = true;
            break;
        }
        body.push(line.strip_prefix("- ").unwrap_or(line));
    }
    if !ended {
        return Err(malformed("no -----BEGIN PGP SIGNATURE----- block"));
    }
    Ok((body.join("\n"), hash_headers))
}

/// The key index blob: `{"keys":{"<FPR>":{}, ...}}`, compact, keys in the order they were added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    keys: Map<String, Value>,
}

impl KeyIndex {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            bad_input(format!(
                "key index is not JSON ({e}); expected {{\"keys\":{{\"<FPR>\":{{}}}}}}"
            ))
        })?;
        match v.get("keys") {
            Some(Value::Object(keys)) => Ok(KeyIndex { keys: keys.clone() }),
            _ => Err(bad_input(
                "key index has no \"keys\" object; expected {\"keys\":{\"<FPR>\":{}}}",
            )),
        }
    }

    /// Add a fingerprint; false if it was already listed (its entry is kept as it was).
    pub fn insert(&mut self, fingerprint: &str) -> bool {
        if self.keys.contains_key(fingerprint) {
            return false;
        }
        self.keys
            .insert(fingerprint.to_string(), Value::Object(Map::new()));
        true
    }

    pub fn contains(&self, fingerprint: &str) -> bool {
        self.keys.contains_key(fingerprint)
    }

    pub fn fingerprints(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The blob bytes, as Spack writes them (compact JSON, no newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut top = Map::new();
        top.insert("keys".into(), Value::Object(self.keys.clone()));
        python_json(&Value::Object(top), false).into_bytes()
    }
}

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Serialise JSON as Python's `json.dumps(v, separators=(",", ":"))` does, with `indent=0` when
/// `indented`: ASCII only (`\uXXXX` escapes), keys in their stored order.
pub fn python_json(value: &Value, indented: bool) -> String {
    let mut out = String::new();
    write_python(&mut out, value, indented);
    out
}

fn write_python(out: &mut String, value: &Value, indented: bool) {
    let sep = if indented { ",\n" } else { "," };
    let (open_nl, close_nl) = if indented { ("\n", "\n") } else { ("", "") };
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_python_string(out, s),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            out.push('[');
            out.push_str(open_nl);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                write_python(out, item, indented);
            }
            out.push_str(close_nl);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            out.push_str(open_nl);
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                write_python_string(out, k);
                out.push(':');
                write_python(out, v, indented);
            }
            out.push_str(close_nl);
            out.push('}');
        }
    }
}

/// Python's `ensure_ascii` string encoding: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, and
/// `\uXXXX` (lowercase hex, surrogate pairs) for everything outside printable ASCII.
fn write_python_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_testkit::fixture;

    fn read(rel: &str) -> Vec<u8> {
        std::fs::read(fixture(rel)).unwrap()
    }

    const GREET: &str =
        "v3/manifests/spec/greet/greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json";

    #[test]
    fn every_unsigned_fixture_manifest_round_trips_byte_for_byte() {
        let root = fixture("spack-v3-signed");
        let mut seen = 0;
        for rel in [
            "v3/manifests/index/index.manifest.json",
            "v3/manifests/key/keys.manifest.json",
            "v3/manifests/key/756149701D5AF77338F02F92169016E7389B3308.key.manifest.json",
        ] {
            let bytes = std::fs::read(root.join(rel)).unwrap();
            let f = ManifestFile::parse(&bytes).unwrap();
            assert!(!f.is_signed());
            assert_eq!(f.manifest.to_spack_json().as_bytes(), &bytes[..], "{rel}");
            seen += 1;
        }
        let unsigned = read(&format!("spack-v3-unsigned/{GREET}"));
        let f = ManifestFile::parse(&unsigned).unwrap();
        assert_eq!(f.manifest.to_spack_json().as_bytes(), &unsigned[..]);
        assert_eq!(seen, 3);
    }

    #[test]
    fn a_clearsigned_manifest_yields_the_same_json_as_the_unsigned_one() {
        let signed = ManifestFile::parse(&read(&format!("spack-v3-signed/{GREET}"))).unwrap();
        let unsigned = ManifestFile::parse(&read(&format!("spack-v3-unsigned/{GREET}"))).unwrap();
        let cs = signed.clearsigned.as_ref().unwrap();
        assert_eq!(cs.hash_headers, vec!["SHA512"]);
        assert_eq!(signed.body, unsigned.body);
        assert_eq!(signed.manifest, unsigned.manifest);
        let m = &signed.manifest;
        m.ensure_v3().unwrap();
        let tar = m.record(media_type::TARBALL).unwrap();
        assert_eq!(tar.content_length, 3501);
        assert_eq!(
            tar.checksum,
            "e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1"
        );
        assert_eq!(m.record(media_type::SPEC).unwrap().content_length, 521);
        assert_eq!(
            tar.blob_key().unwrap(),
            "blobs/sha256/e1/e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1"
        );
    }

    #[test]
    fn records_serialise_in_spacks_key_order_and_keep_extra_properties() {
        let text = "{\"data\":[{\"checksum\":\"ab\",\"x-note\":\"é\",\"checksumAlgorithm\":\"sha256\",\"compression\":\"none\",\"mediaType\":\"m\",\"contentLength\":2}],\"version\":3}";
        let m = Manifest::from_json(text).unwrap();
        assert_eq!(
            m.to_spack_json(),
            "{\n\"version\":3,\n\"data\":[\n{\n\"contentLength\":2,\n\"mediaType\":\"m\",\n\"compression\":\"none\",\n\"checksumAlgorithm\":\"sha256\",\n\"checksum\":\"ab\",\n\"x-note\":\"\\u00e9\"\n}\n]\n}"
        );
        let empty = Manifest {
            version: 3,
            data: vec![],
            extra: Map::new(),
        };
        assert_eq!(empty.to_spack_json(), "{\n\"version\":3,\n\"data\":[]\n}");
    }

    #[test]
    fn python_string_escapes() {
        let v = Value::String("a\"b\\c\nd\te\u{1}\u{7f}😀".into());
        assert_eq!(
            python_json(&v, true),
            "\"a\\\"b\\\\c\\nd\\te\\u0001\\u007f\\ud83d\\ude00\""
        );
    }

    #[test]
    fn bad_manifests_are_bad_input() {
        for text in [
            "",
            "{",
            "{\"version\":3}",
            "{\"version\":\"3\",\"data\":[]}",
            "[1]",
        ] {
            let e = ManifestFile::parse(text.as_bytes()).unwrap_err();
            assert_eq!(sf_core::exit::code_for(&e), 2, "{text:?}");
        }
        let v2 = Manifest::from_json("{\"version\":2,\"data\":[]}").unwrap();
        let e = v2.ensure_v3().unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        let cut =
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{\"version\":3,\"data\":[]}\n";
        assert!(ManifestFile::parse(cut.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("SIGNATURE"));
        assert!(ManifestFile::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn records_cannot_name_paths_outside_blobs() {
        let mut r = BlobRecord::for_bytes(b"x", media_type::PGP_KEYS, compression::NONE);
        assert!(r.blob_key().unwrap().starts_with("blobs/sha256/"));
        for (algo, sum) in [
            ("sha256", "../../etc/passwd"),
            ("sha256", "ABC"),
            ("md5", "00"),
            ("../x", "00"),
        ] {
            r.checksum_algorithm = algo.into();
            r.checksum = sum.into();
            assert_eq!(sf_core::exit::code_for(&r.blob_key().unwrap_err()), 2);
        }
    }

    #[test]
    fn clearsigned_text_is_dash_unescaped_and_keeps_inner_line_breaks() {
        let doc = "-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\n- -dash\r\nplain\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nxx\r\n-----END PGP SIGNATURE-----\r\n";
        let (body, hashes) = split_clearsigned(doc).unwrap();
        assert_eq!(body, "-dash\nplain\n");
        assert_eq!(hashes, vec!["SHA256"]);
    }

    #[test]
    fn key_index_matches_the_fixture_and_merges() {
        let root = fixture("spack-v3-signed");
        let m = ManifestFile::parse(
            &std::fs::read(root.join("v3/manifests/key/keys.manifest.json")).unwrap(),
        )
        .unwrap();
        let rec = m.manifest.record(media_type::KEY_INDEX).unwrap();
        let bytes = std::fs::read(root.join(rec.blob_key().unwrap())).unwrap();
        let mut idx = KeyIndex::parse(&bytes).unwrap();
        assert_eq!(idx.to_bytes(), bytes);
        assert_eq!(
            BlobRecord::for_bytes(&bytes, media_type::KEY_INDEX, compression::NONE),
            *rec
        );
        assert!(!idx.insert("756149701D5AF77338F02F92169016E7389B3308"));
        assert!(idx.insert("AAAA"));
        assert_eq!(
            String::from_utf8(idx.to_bytes()).unwrap(),
            "{\"keys\":{\"756149701D5AF77338F02F92169016E7389B3308\":{},\"AAAA\":{}}}"
        );
        assert!(KeyIndex::parse(b"{\"nokeys\":1}").is_err());
    }
}
