//! The storage layout: every S3 key, mirror root, destination URL and CDN URL is formatted here and
//! nowhere else.
//!
//! Keys come from templates (defaults per the published cache; each overridable by config or env),
//! rendered for a cell. The keys inside one Spack mirror (blobs, manifests, index, key index) are
//! fixed by Spack's layout 3 and live in [`spack`].

use std::fmt;

use anyhow::Result;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::exit::bad_input;
use crate::matrix::{Arch, BuildKind, CellKey, SlurmVersion, SupportMatrix, Toolchain};

/// The public bucket.
pub const DEFAULT_BUCKET: &str = "slurm-factory-spack-buildcache-4b670";
/// Its region.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The CloudFront distribution in front of it.
pub const DEFAULT_CDN_URL: &str = "https://slurm-factory-spack-binary-cache.vantagecompute.ai";

/// The default architecture and build kind; tarballs of any other carry a variant in their key.
const PLAIN_ARCH: &str = "amd64";
const PLAIN_BUILD: &str = "cpu";

/// Key templates. Placeholders: `{toolchain}`, `{slurm_version}`, `{variant}` (e.g. `arm64`,
/// `gpu`, `arm64-gpu`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Templates {
    pub deps_mirror: String,
    pub version_mirror: String,
    pub tarball: String,
    /// For tarballs that are not amd64/cpu: the variant is in folder and name, so none overwrites
    /// another.
    pub tarball_variant: String,
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            deps_mirror: "{toolchain}/slurm/deps".into(),
            version_mirror: "{toolchain}/slurm/{slurm_version}".into(),
            tarball: "builds/{slurm_version}/{toolchain}/slurm-{slurm_version}-{toolchain}-software.tar.gz".into(),
            tarball_variant:
                "builds/{slurm_version}/{toolchain}/{variant}/slurm-{slurm_version}-{toolchain}-{variant}-software.tar.gz"
                    .into(),
        }
    }
}

const PLACEHOLDERS: [&str; 3] = ["toolchain", "slurm_version", "variant"];

impl Templates {
    /// Check every template renders to a safe relative key.
    pub fn validate(&self) -> Result<()> {
        for (name, t) in [
            ("deps mirror", &self.deps_mirror),
            ("version mirror", &self.version_mirror),
            ("tarball", &self.tarball),
            ("tarball variant", &self.tarball_variant),
        ] {
            let mut rest = t.as_str();
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').ok_or_else(|| {
                    bad_input(format!("{name} template {t:?} has an unclosed '{{'"))
                })?;
                let ph = &rest[open + 1..open + close];
                if !PLACEHOLDERS.contains(&ph) {
                    return Err(bad_input(format!(
                        "{name} template {t:?} has unknown placeholder {{{ph}}}; valid: {{toolchain}}, {{slurm_version}}, {{variant}}"
                    )));
                }
                rest = &rest[open + close + 1..];
            }
            let sample = render(t, "tc", Some("1.0"), "v");
            check_key(&sample).map_err(|e| bad_input(format!("{name} template {t:?}: {e}")))?;
        }
        Ok(())
    }
}

fn render(template: &str, toolchain: &str, slurm_version: Option<&str>, variant: &str) -> String {
    template
        .replace("{toolchain}", toolchain)
        .replace("{slurm_version}", slurm_version.unwrap_or(""))
        .replace("{variant}", variant)
}

/// A key is relative, has no empty, `.` or `..` segments, and no characters that need escaping.
fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() || key.starts_with('/') {
        return Err("a key must be relative and non-empty".into());
    }
    for seg in key.trim_end_matches('/').split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!("segment {seg:?} is not allowed"));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        {
            return Err(format!(
                "segment {seg:?} has characters outside [A-Za-z0-9._+-]"
            ));
        }
    }
    Ok(())
}

/// Where the bucket is: S3 or a local directory standing in for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(into = "String", try_from = "String")]
pub enum Destination {
    /// `s3://bucket/prefix`
    S3 { bucket: String, prefix: String },
    /// `file:///dir`
    Dir { path: String },
}

impl Destination {
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')
                });
            if !bucket_ok {
                return Err(bad_input(format!(
                    "{url:?}: {bucket:?} is not a valid S3 bucket name"
                )));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                check_key(&prefix).map_err(|e| bad_input(format!("{url:?}: key prefix: {e}")))?;
            }
            Ok(Destination::S3 {
                bucket: bucket.to_string(),
                prefix,
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad_input(format!(
                    "{url:?}: a file:// destination needs an absolute path, e.g. file:///srv/cache"
                )));
            }
            let path = path.trim_end_matches('/');
            Ok(Destination::Dir {
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.to_string()
                },
            })
        } else {
            Err(bad_input(format!("destination {url:?} has an unknown scheme; valid: s3://bucket[/prefix], file:///dir")))
        }
    }

    /// The full URL of an object key under this destination.
    pub fn url_of(&self, key: &str) -> String {
        match self {
            Destination::S3 { bucket, prefix } if prefix.is_empty() => {
                format!("s3://{bucket}/{key}")
            }
            Destination::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{key}"),
            Destination::Dir { path } => format!("file://{}/{key}", path.trim_end_matches('/')),
        }
    }

    /// The key prefix objects get under this destination (S3), empty for a directory.
    pub fn key_prefix(&self) -> &str {
        match self {
            Destination::S3 { prefix, .. } => prefix,
            Destination::Dir { .. } => "",
        }
    }

    /// The object key in the bucket for a layout key (with the destination's prefix).
    pub fn object_key(&self, key: &str) -> String {
        match self.key_prefix() {
            "" => key.to_string(),
            p => format!("{p}/{key}"),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Destination::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Destination::Dir { path } => write!(f, "file://{path}"),
        }
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Destination {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Destination::parse(&s)
    }
}

/// A mirror root: the key of a Spack build cache, with its destination and CDN URLs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MirrorLocation {
    /// Key of the mirror root, relative to the destination (no trailing slash).
    pub key: String,
    /// `s3://...` or `file://...` URL of the root.
    pub url: String,
    /// Public HTTPS URL of the root, what `spack mirror add` takes.
    pub cdn_url: String,
}

/// Where one tarball and its companions go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TarballLocation {
    /// Tarball file name.
    pub file_name: String,
    pub key: String,
    pub signature_key: String,
    /// The folder's `SHA256SUMS` and its signature.
    pub sums_key: String,
    pub sums_signature_key: String,
    pub url: String,
    pub cdn_url: String,
    pub signature_cdn_url: String,
}

/// The folder at a destination's root where the signing key is published, so that whoever holds
/// only the bucket (or its CDN) can verify what it serves.
pub const KEYS_DIR: &str = "keys";

/// The key that signs now, and its fingerprint (one line), relative to the destination.
pub const SIGNING_KEY: &str = "keys/signing-key.asc";
pub const SIGNING_KEY_FINGERPRINT: &str = "keys/signing-key.fingerprint";

/// The keys of the published signing key (relative to the destination).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyKeys {
    /// `keys/signing-key.asc`: the key that signs now.
    pub current: String,
    /// `keys/signing-key.fingerprint`: its fingerprint, one line.
    pub fingerprint: String,
    /// `keys/{FINGERPRINT}.asc`: every key that has signed, kept after a rotation.
    pub archived: String,
}

/// The storage layout for one destination and CDN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub destination: Destination,
    pub cdn_url: String,
    pub templates: Templates,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            destination: Destination::S3 {
                bucket: DEFAULT_BUCKET.into(),
                prefix: String::new(),
            },
            cdn_url: DEFAULT_CDN_URL.into(),
            templates: Templates::default(),
        }
    }
}

impl Layout {
    /// A layout from optional overrides (flags or env), validated.
    pub fn new(
        destination: Option<&str>,
        cdn_url: Option<&str>,
        templates: Templates,
    ) -> Result<Self> {
        templates.validate()?;
        let destination = match destination {
            Some(d) => Destination::parse(d)?,
            None => Layout::default().destination,
        };
        let cdn_url = cdn_url
            .unwrap_or(DEFAULT_CDN_URL)
            .trim()
            .trim_end_matches('/')
            .to_string();
        // file:// serves a local rehearsal, where the bucket directory is what users would fetch.
        if !["https://", "http://", "file:///"]
            .iter()
            .any(|s| cdn_url.starts_with(s))
            || cdn_url.contains(char::is_whitespace)
        {
            return Err(bad_input(format!(
                "CDN URL {cdn_url:?} must be an http(s) URL (or file:/// for a local rehearsal)"
            )));
        }
        Ok(Layout {
            destination,
            cdn_url,
            templates,
        })
    }

    /// The URL path of a key on the CDN (`/` + the key, percent-encoded where RFC 1738 calls a
    /// character unsafe; `*` too, which CloudFront would read as a wildcard). A key prefix the
    /// distribution's origin path already covers is removed first, when given; the prefix itself
    /// is the origin's root, `/`.
    pub fn cdn_path(key: &str, origin_prefix: &str) -> String {
        let origin_prefix = origin_prefix.trim_matches('/');
        let rel = if origin_prefix.is_empty() {
            key
        } else if key.trim_matches('/') == origin_prefix {
            ""
        } else {
            key.strip_prefix(origin_prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(key)
        };
        let mut out = String::with_capacity(rel.len() + 1);
        out.push('/');
        for b in rel.bytes() {
            if b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'-' | b'_' | b'.' | b'+' | b'$' | b'!' | b'\'' | b'(' | b')' | b','
                )
            {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The public URL of a layout key.
    pub fn cdn_url_of(&self, key: &str) -> String {
        format!("{}/{}", self.cdn_url, key)
    }

    fn mirror(&self, key: String) -> MirrorLocation {
        MirrorLocation {
            url: self.destination.url_of(&key),
            cdn_url: self.cdn_url_of(&key),
            key,
        }
    }

    /// `{toolchain}/slurm/deps`: Slurm's dependencies, shared by all versions of a toolchain.
    pub fn deps_mirror(&self, toolchain: &Toolchain) -> MirrorLocation {
        self.mirror(render(
            &self.templates.deps_mirror,
            toolchain.as_str(),
            None,
            "",
        ))
    }

    /// `{toolchain}/slurm/{slurm_version}`: the Slurm packages of one version.
    pub fn version_mirror(&self, toolchain: &Toolchain, version: &SlurmVersion) -> MirrorLocation {
        self.mirror(render(
            &self.templates.version_mirror,
            toolchain.as_str(),
            Some(version.as_str()),
            "",
        ))
    }

    /// The variant part of a tarball key: empty for amd64/cpu.
    pub fn variant(arch: &Arch, build: &BuildKind) -> String {
        let mut parts = Vec::new();
        if arch.as_str() != PLAIN_ARCH {
            parts.push(arch.as_str());
        }
        if build.as_str() != PLAIN_BUILD {
            parts.push(build.as_str());
        }
        parts.join("-")
    }

    /// The tarball of one Slurm version, toolchain, arch and build.
    pub fn tarball(
        &self,
        version: &SlurmVersion,
        toolchain: &Toolchain,
        arch: &Arch,
        build: &BuildKind,
    ) -> TarballLocation {
        let variant = Self::variant(arch, build);
        let template = if variant.is_empty() {
            &self.templates.tarball
        } else {
            &self.templates.tarball_variant
        };
        let key = render(
            template,
            toolchain.as_str(),
            Some(version.as_str()),
            &variant,
        );
        let folder = key.rsplit_once('/').map(|(f, _)| f).unwrap_or("");
        let file_name = key.rsplit('/').next().unwrap_or(&key).to_string();
        let join = |name: &str| {
            if folder.is_empty() {
                name.to_string()
            } else {
                format!("{folder}/{name}")
            }
        };
        let signature_key = Self::signature_key(&key);
        TarballLocation {
            file_name,
            url: self.destination.url_of(&key),
            cdn_url: self.cdn_url_of(&key),
            signature_cdn_url: self.cdn_url_of(&signature_key),
            sums_key: join(SHA256SUMS),
            sums_signature_key: join(&format!("{SHA256SUMS}.asc")),
            signature_key,
            key,
        }
    }

    /// The full cell later steps read, for one cell key.
    pub fn cell(&self, m: &SupportMatrix, key: &CellKey) -> Cell {
        let tc = m.toolchain(&key.toolchain);
        let arch = m.arch(&key.arch);
        let release = key.slurm_version.as_ref().map(|v| m.release(v));
        Cell {
            id: key.id(),
            pipeline: key.pipeline.as_str().to_string(),
            toolchain: tc.name.clone(),
            os: tc.os.clone(),
            os_family: tc.family.as_str().to_string(),
            base_image: tc.base_image.clone(),
            spack_os: tc.spack_os.clone(),
            gcc: tc.gcc.clone(),
            glibc: tc.glibc.clone(),
            slurm_version: key.slurm_version.clone(),
            slurm_spack_version: release.map(|r| r.spack_version.clone()),
            slurm_release: release.map(|r| r.reported_version()),
            arch: arch.name.clone(),
            spack_target: arch.spack_target.clone(),
            runner_labels: arch.runner_labels.clone(),
            build: key.build.clone(),
            gpu: key.build.is_gpu(),
            destination: self.destination.to_string(),
            deps_mirror: self.deps_mirror(&key.toolchain),
            version_mirror: key
                .slurm_version
                .as_ref()
                .map(|v| self.version_mirror(&key.toolchain, v)),
            // Every cell that builds Slurm names where its tarball and signature live (a version
            // cell too, so later steps and people can follow it there); deps cells have none.
            tarball: key
                .slurm_version
                .as_ref()
                .map(|v| self.tarball(v, &key.toolchain, &key.arch, &key.build)),
        }
    }
}

/// The name of the per-folder checksum file.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// A tarball key read back through the templates: what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TarballKeyParts {
    pub slurm_version: String,
    pub toolchain: String,
    /// Empty for amd64/cpu, else e.g. `arm64`, `gpu`, `arm64-gpu`.
    pub variant: String,
}

/// A mirror root key read back through the templates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MirrorKeyParts {
    pub toolchain: String,
    /// `None` for the deps mirror.
    pub slurm_version: Option<String>,
}

impl Layout {
    /// Recognise a tarball key (relative to the destination) made by this layout's templates.
    pub fn parse_tarball_key(&self, key: &str) -> Option<TarballKeyParts> {
        let b = match_template(&self.templates.tarball, key)
            .filter(|b| !b.contains_key("variant"))
            .or_else(|| {
                match_template(&self.templates.tarball_variant, key)
                    .filter(|b| b.get("variant").is_some_and(|v| !v.is_empty()))
            })?;
        Some(TarballKeyParts {
            slurm_version: b.get("slurm_version")?.clone(),
            toolchain: b.get("toolchain")?.clone(),
            variant: b.get("variant").cloned().unwrap_or_default(),
        })
    }

    /// Recognise a mirror root key (relative to the destination); the deps mirror is tried first.
    pub fn parse_mirror_key(&self, key: &str) -> Option<MirrorKeyParts> {
        let key = key.trim_end_matches('/');
        if let Some(b) = match_template(&self.templates.deps_mirror, key) {
            return Some(MirrorKeyParts {
                toolchain: b.get("toolchain")?.clone(),
                slurm_version: None,
            });
        }
        let b = match_template(&self.templates.version_mirror, key)?;
        Some(MirrorKeyParts {
            toolchain: b.get("toolchain")?.clone(),
            slurm_version: Some(b.get("slurm_version")?.clone()),
        })
    }

    /// Whether a folder (a key prefix without trailing slash, `""` for the root) is a mirror root
    /// or an ancestor of one the mirror templates can make, so that a wildcard over it would also
    /// reach immutable blobs.
    pub fn could_hold_mirror(&self, dir: &str) -> bool {
        let dir = dir.trim_matches('/');
        if dir.is_empty() {
            return true;
        }
        let segs: Vec<&str> = dir.split('/').collect();
        [&self.templates.deps_mirror, &self.templates.version_mirror]
            .iter()
            .any(|t| {
                let tsegs: Vec<&str> = t.trim_matches('/').split('/').collect();
                segs.len() <= tsegs.len()
                    && segs.iter().zip(&tsegs).all(|(s, t)| {
                        if t.contains('{') {
                            match_template(t, s).is_some()
                        } else {
                            s == t
                        }
                    })
            })
    }

    /// Where the signing key with `fingerprint` is published.
    pub fn signing_key_keys(fingerprint: &str) -> SigningKeyKeys {
        SigningKeyKeys {
            current: SIGNING_KEY.to_string(),
            fingerprint: SIGNING_KEY_FINGERPRINT.to_string(),
            archived: format!("{KEYS_DIR}/{fingerprint}.asc"),
        }
    }

    /// The key of the `SHA256SUMS` file in a folder, and of its signature.
    pub fn sums_keys(folder: &str) -> (String, String) {
        let folder = folder.trim_end_matches('/');
        let join = |name: &str| {
            if folder.is_empty() {
                name.to_string()
            } else {
                format!("{folder}/{name}")
            }
        };
        let sums = join(SHA256SUMS);
        let sig = Self::signature_key(&sums);
        (sums, sig)
    }

    /// The detached signature published beside a signed object: `<key>.asc`.
    pub fn signature_key(key: &str) -> String {
        format!("{key}.asc")
    }

    /// The arch and build kind a tarball variant stands for (the inverse of [`Layout::variant`]),
    /// given the build kinds there are: amd64/cpu for the empty variant.
    pub fn variant_parts(variant: &str, builds: &[&str]) -> (String, String) {
        if variant.is_empty() {
            return (PLAIN_ARCH.into(), PLAIN_BUILD.into());
        }
        if builds.contains(&variant) {
            return (PLAIN_ARCH.into(), variant.into());
        }
        for b in builds {
            if let Some(arch) = variant.strip_suffix(&format!("-{b}")) {
                return (arch.into(), (*b).into());
            }
        }
        (variant.into(), PLAIN_BUILD.into())
    }
}

/// Match `key` against a template, binding each placeholder to a non-empty run of key characters
/// without `/`; a placeholder that occurs twice must bind the same text both times.
fn match_template(template: &str, key: &str) -> Option<std::collections::BTreeMap<String, String>> {
    #[derive(Debug)]
    enum Tok<'a> {
        Lit(&'a str),
        Ph(&'a str),
    }
    let mut toks = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}')?;
        if open > 0 {
            toks.push(Tok::Lit(&rest[..open]));
        }
        toks.push(Tok::Ph(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        toks.push(Tok::Lit(rest));
    }
    fn go(toks: &[Tok<'_>], key: &str, b: &mut std::collections::BTreeMap<String, String>) -> bool {
        match toks.split_first() {
            None => key.is_empty(),
            Some((Tok::Lit(l), tail)) => key.strip_prefix(l).is_some_and(|k| go(tail, k, b)),
            Some((Tok::Ph(p), tail)) => {
                if let Some(v) = b.get(*p).cloned() {
                    return key.strip_prefix(v.as_str()).is_some_and(|k| go(tail, k, b));
                }
                let limit = key.find('/').unwrap_or(key.len());
                for end in 1..=limit {
                    if !key.is_char_boundary(end) {
                        continue;
                    }
                    b.insert(p.to_string(), key[..end].to_string());
                    if go(tail, &key[end..], b) {
                        return true;
                    }
                    b.remove(*p);
                }
                false
            }
        }
    }
    let mut b = std::collections::BTreeMap::new();
    go(&toks, key, &mut b).then_some(b)
}

/// One cell of a job matrix: everything a later step needs, so no step re-derives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cell {
    /// Stable id: `{pipeline}-[{slurm_version}-]{toolchain}-{arch}-{build}`.
    pub id: String,
    pub pipeline: String,
    pub toolchain: Toolchain,
    pub os: String,
    pub os_family: String,
    pub base_image: String,
    pub spack_os: Option<String>,
    /// Expected system GCC version.
    pub gcc: String,
    pub glibc: String,
    pub slurm_version: Option<SlurmVersion>,
    /// The exact Spack package version built.
    pub slurm_spack_version: Option<String>,
    /// The release Slurm itself reports (`sinfo --version` prints `slurm 25.11.6`).
    #[serde(default)]
    pub slurm_release: Option<String>,
    pub arch: Arch,
    pub spack_target: String,
    pub runner_labels: Vec<String>,
    pub build: BuildKind,
    pub gpu: bool,
    /// The destination root every key below is relative to (`s3://bucket[/prefix]`, `file:///dir`).
    #[serde(default)]
    pub destination: String,
    pub deps_mirror: MirrorLocation,
    pub version_mirror: Option<MirrorLocation>,
    /// The tarball and its signature: for every cell with a Slurm version, whatever its pipeline.
    pub tarball: Option<TarballLocation>,
}

/// Where a step's `--cell` comes from, as sf-matrix prints it: the JSON itself (it starts with
/// `{`), `-` for stdin, or a file. Returns the text and how to name its origin in errors.
pub fn read_cell_source(source: &str) -> Result<(String, String)> {
    use crate::exit::ResultExt;
    use std::io::Read;
    if source.trim_start().starts_with('{') {
        Ok((source.to_string(), "the inline cell".to_string()))
    } else if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| anyhow::anyhow!("reading the cell from stdin: {e}"))?;
        Ok((s, "stdin".to_string()))
    } else {
        let s = std::fs::read_to_string(source)
            .bad_input(format!("cannot read the cell file {source}"))?;
        Ok((s, source.to_string()))
    }
}

/// Spack's public source mirror (last in every environment's mirror list), from the stack data
/// file's base URL: as written, without a trailing slash.
pub fn source_mirror_url(base: &str) -> String {
    base.trim().trim_end_matches('/').to_string()
}

/// The runner's shared local build cache as the build container reads it (unsigned, never
/// published as is): the `file://` URL of [`crate::container::LOCAL_MIRROR_DIR`].
pub fn local_mirror_url() -> String {
    format!("file://{}", crate::container::LOCAL_MIRROR_DIR)
}

/// Keys inside one Spack build-cache mirror (layout 3), relative to the mirror root. Fixed by
/// Spack (`url_buildcache.py`), so not templated.
pub mod spack {
    /// The layout marker, `{"signing": "gpg"}`.
    pub const LAYOUT_JSON: &str = "v3/layout.json";
    /// The package index manifest.
    pub const INDEX_MANIFEST: &str = "v3/manifests/index/index.manifest.json";
    /// The key index manifest.
    pub const KEYS_MANIFEST: &str = "v3/manifests/key/keys.manifest.json";
    /// Folder of spec manifests.
    pub const SPEC_MANIFESTS_DIR: &str = "v3/manifests/spec";
    /// Folder of key manifests.
    pub const KEY_MANIFESTS_DIR: &str = "v3/manifests/key";
    /// Folder of blobs.
    pub const BLOBS_DIR: &str = "blobs";
    /// Layout 2's root folder (read only).
    pub const V2_ROOT: &str = "build_cache";

    /// `blobs/<algo>/<first 2 hex>/<hex>`.
    pub fn blob(algorithm: &str, checksum: &str) -> String {
        let cc = checksum.get(..2).unwrap_or(checksum);
        format!("{BLOBS_DIR}/{algorithm}/{cc}/{checksum}")
    }

    /// Spack's `polite_filename`: anything outside `[A-Za-z0-9_+.-]` becomes `_`.
    pub fn polite_filename(s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// `v3/manifests/spec/<name>/<name>-<version>-<hash>.spec.manifest.json`.
    pub fn spec_manifest(name: &str, version: &str, dag_hash: &str) -> String {
        let base = polite_filename(&format!("{name}-{version}-{dag_hash}"));
        format!("{SPEC_MANIFESTS_DIR}/{name}/{base}.spec.manifest.json")
    }

    /// `v3/manifests/key/<FPR>.key.manifest.json`.
    pub fn key_manifest(fingerprint: &str) -> String {
        format!("{KEY_MANIFESTS_DIR}/{fingerprint}.key.manifest.json")
    }

    /// Whether a bucket key lies in the blobs of any mirror under it (`<root>/blobs/...`), wherever
    /// the mirror root is.
    pub fn is_blob_anywhere(key: &str) -> bool {
        is_blob(key) || key.match_indices('/').any(|(i, _)| is_blob(&key[i + 1..]))
    }

    /// Whether a mirror-relative key is an immutable, content-addressed blob.
    pub fn is_blob(key: &str) -> bool {
        key.starts_with(&format!("{BLOBS_DIR}/"))
    }

    /// Join a mirror root and a mirror-relative key.
    pub fn join(root: &str, rel: &str) -> String {
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            rel.to_string()
        } else {
            format!("{root}/{rel}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{ListArg, Pipeline, Selection};

    #[test]
    fn default_keys_match_the_published_cache() {
        let l = Layout::default();
        let m = SupportMatrix::embedded();
        let tc = m.toolchain_name("noble").unwrap();
        let v = m.slurm_version("25.11").unwrap();
        assert_eq!(l.deps_mirror(&tc).key, "noble/slurm/deps");
        assert_eq!(
            l.version_mirror(&tc, &v).cdn_url,
            "https://slurm-factory-spack-binary-cache.vantagecompute.ai/noble/slurm/25.11"
        );
        assert_eq!(
            l.deps_mirror(&tc).url,
            "s3://slurm-factory-spack-buildcache-4b670/noble/slurm/deps"
        );
        let t = l.tarball(
            &v,
            &tc,
            &m.arch_name("amd64").unwrap(),
            &m.build_kind("cpu").unwrap(),
        );
        assert_eq!(
            t.key,
            "builds/25.11/noble/slurm-25.11-noble-software.tar.gz"
        );
        assert_eq!(
            t.signature_key,
            "builds/25.11/noble/slurm-25.11-noble-software.tar.gz.asc"
        );
        assert_eq!(t.sums_key, "builds/25.11/noble/SHA256SUMS");
        assert_eq!(t.sums_signature_key, "builds/25.11/noble/SHA256SUMS.asc");
    }

    #[test]
    fn variants_never_share_a_tarball_key() {
        let l = Layout::default();
        let m = SupportMatrix::embedded();
        let sel = Selection {
            archs: ListArg::All,
            builds: ListArg::All,
            toolchains: ListArg::Named(vec!["noble".into()]),
            slurm_versions: ListArg::Named(vec!["25.11".into()]),
            ..Default::default()
        };
        let keys: Vec<String> = sel
            .expand(&m, Pipeline::Tarball)
            .unwrap()
            .iter()
            .map(|k| l.cell(&m, k).tarball.unwrap().key)
            .collect();
        assert_eq!(
            keys,
            vec![
                "builds/25.11/noble/slurm-25.11-noble-software.tar.gz",
                "builds/25.11/noble/gpu/slurm-25.11-noble-gpu-software.tar.gz",
                "builds/25.11/noble/arm64/slurm-25.11-noble-arm64-software.tar.gz",
                "builds/25.11/noble/arm64-gpu/slurm-25.11-noble-arm64-gpu-software.tar.gz",
            ]
        );
    }

    #[test]
    fn destinations_parse_and_reject() {
        assert_eq!(
            Destination::parse("s3://my-bucket/some/prefix/")
                .unwrap()
                .url_of("a/b"),
            "s3://my-bucket/some/prefix/a/b"
        );
        assert_eq!(
            Destination::parse("file:///tmp/bucket")
                .unwrap()
                .url_of("a"),
            "file:///tmp/bucket/a"
        );
        for bad in [
            "http://x",
            "s3://A_B",
            "file://relative",
            "s3://ok-bucket/../x",
            "gs://b",
        ] {
            let e = Destination::parse(bad).unwrap_err();
            assert_eq!(crate::exit::code_for(&e), 2, "{bad}");
        }
    }

    #[test]
    fn templates_are_validated() {
        let t = Templates {
            tarball: "builds/{version}/x.tar.gz".into(),
            ..Default::default()
        };
        assert!(t.validate().unwrap_err().to_string().contains("{version}"));
        for bad in ["/abs/{toolchain}", "{toolchain}/../x"] {
            let t = Templates {
                deps_mirror: bad.into(),
                ..Default::default()
            };
            assert!(t.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_read_back_through_the_templates() {
        let l = Layout::default();
        let m = SupportMatrix::embedded();
        let v = m.slurm_version("25.11").unwrap();
        let tc = m.toolchain_name("noble").unwrap();
        for (arch, build) in [("amd64", "cpu"), ("arm64", "gpu"), ("amd64", "gpu")] {
            let (a, b) = (m.arch_name(arch).unwrap(), m.build_kind(build).unwrap());
            let t = l.tarball(&v, &tc, &a, &b);
            let parts = l.parse_tarball_key(&t.key).unwrap();
            assert_eq!(
                (parts.slurm_version.as_str(), parts.toolchain.as_str()),
                ("25.11", "noble")
            );
            assert_eq!(parts.variant, Layout::variant(&a, &b));
            let builds: Vec<&str> = m.builds.iter().map(|b| b.name.as_str()).collect();
            assert_eq!(
                Layout::variant_parts(&parts.variant, &builds),
                (a.as_str().to_string(), b.as_str().to_string())
            );
        }
        assert_eq!(l.parse_tarball_key("builds/25.11/noble/SHA256SUMS"), None);
        assert_eq!(
            l.parse_tarball_key("builds/25.11/noble/slurm-25.11-jammy-software.tar.gz"),
            None
        );
        assert_eq!(
            l.parse_mirror_key("noble/slurm/deps/"),
            Some(MirrorKeyParts {
                toolchain: "noble".into(),
                slurm_version: None
            })
        );
        assert_eq!(
            l.parse_mirror_key("jammy/slurm/24.11"),
            Some(MirrorKeyParts {
                toolchain: "jammy".into(),
                slurm_version: Some("24.11".into())
            })
        );
        assert_eq!(l.parse_mirror_key("builds/25.11"), None);
        assert_eq!(
            Layout::sums_keys("builds/25.11/noble").1,
            "builds/25.11/noble/SHA256SUMS.asc"
        );
    }

    #[test]
    fn wildcard_safety_and_cdn_paths() {
        let l = Layout::default();
        for d in [
            "",
            "noble",
            "builds",
            "noble/slurm",
            "noble/slurm/deps",
            "jammy/slurm/25.11",
        ] {
            // `builds` too: as far as the templates know it could be a toolchain folder.
            assert!(l.could_hold_mirror(d), "{d}");
        }
        for d in ["builds/25.11/noble", "noble/slurm/deps/v3", "noble/other"] {
            assert!(!l.could_hold_mirror(d), "{d}");
        }
        assert!(spack::is_blob_anywhere(
            "noble/slurm/deps/blobs/sha256/ab/abcd"
        ));
        assert!(!spack::is_blob_anywhere(
            "noble/slurm/deps/v3/manifests/index/index.manifest.json"
        ));
        assert_eq!(
            Layout::cdn_path("a b/c*d%e+f.json", ""),
            "/a%20b/c%2Ad%25e+f.json"
        );
        assert_eq!(Layout::cdn_path("cache/builds/x", "cache/"), "/builds/x");
        // The prefix itself is the origin's root, not a folder of that name below it.
        assert_eq!(Layout::cdn_path("cache", "cache/"), "/");
        assert_eq!(Layout::cdn_path("prod/x", "prod/x"), "/");
        assert_eq!(Layout::cdn_path("prod/xy", "prod/x"), "/prod/xy");
    }

    #[test]
    fn spack_paths() {
        assert_eq!(
            spack::blob(
                "sha256",
                "e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1"
            ),
            "blobs/sha256/e1/e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1"
        );
        assert_eq!(
            spack::spec_manifest("greet", "1.0", "vg6h5mxa7kdxvkzohnebjx3tcdjqufan"),
            "v3/manifests/spec/greet/greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json"
        );
        assert_eq!(spack::polite_filename("git.abc=1.0"), "git.abc_1.0");
        assert!(spack::is_blob("blobs/sha256/aa/aa"));
        assert!(!spack::is_blob(spack::INDEX_MANIFEST));
    }

    #[test]
    fn mirrors_outside_the_bucket() {
        assert_eq!(
            super::source_mirror_url("https://mirror.spack.io/"),
            "https://mirror.spack.io"
        );
        assert_eq!(
            super::local_mirror_url(),
            "file:///opt/slurm-factory-cache/buildcache"
        );
    }
}
