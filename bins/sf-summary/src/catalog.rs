//! The catalog: what a destination holds, for the docs page users read and for release notes.
//!
//! Tarballs are recognised by reading their keys back through the layout's templates, with
//! size, date, the sha256 their folder's `SHA256SUMS` lists and whether the `.asc` signatures are
//! there; mirrors by their layout-3 index manifest, with the number of specs the index lists.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;
use sf_core::bad_input;
use sf_core::layout::{
    spack, Destination, Layout, SHA256SUMS, SIGNING_KEY, SIGNING_KEY_FINGERPRINT,
};

use crate::markdown::{bytes, escape};

/// One object of the destination.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    /// RFC 3339 UTC.
    pub modified: Option<String>,
}

/// Read access to a destination's objects.
pub trait Source {
    fn list(&self) -> Result<Vec<Entry>>;
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>>;
}

/// A `file://` destination.
#[derive(Debug)]
pub struct DirSource {
    pub root: PathBuf,
}

impl Source for DirSource {
    fn list(&self) -> Result<Vec<Entry>> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
            for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
                let e = e?;
                let ft = e.file_type()?;
                let path = e.path();
                if ft.is_dir() {
                    walk(root, &path, out)?;
                } else if ft.is_file() && !e.file_name().to_string_lossy().starts_with('.') {
                    let meta = e.metadata()?;
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    let key = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    let modified = meta.modified().ok().map(sf_core::record::rfc3339);
                    out.push(Entry {
                        key,
                        size: meta.len(),
                        modified,
                    });
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {key}")),
        }
    }
}

/// An `s3://` destination, read through sf-store (its listing has each object's LastModified).
pub struct StoreSource {
    store: sf_store::Store,
    rt: tokio::runtime::Runtime,
}

impl Source for StoreSource {
    fn list(&self) -> Result<Vec<Entry>> {
        let listed = self.rt.block_on(self.store.list(""))?;
        Ok(listed
            .into_iter()
            .map(|l| Entry {
                key: l.key,
                size: l.size,
                modified: l.modified.map(sf_core::record::rfc3339),
            })
            .collect())
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.rt.block_on(self.store.get(key))?.map(|o| o.bytes))
    }
}

/// Open a destination for reading: a directory directly (with file dates), a bucket through
/// sf-store with the shared AWS settings.
pub fn open(dest: &Destination, aws: &sf_aws::AwsSettings) -> Result<Box<dyn Source>> {
    match dest {
        Destination::Dir { path } => {
            let root = PathBuf::from(path);
            if !root.is_dir() {
                return Err(bad_input(format!("{dest}: no such directory")));
            }
            Ok(Box::new(DirSource { root }))
        }
        Destination::S3 { .. } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let store = rt.block_on(sf_store::Store::open(dest, aws))?;
            Ok(Box::new(StoreSource { store, rt }))
        }
    }
}

/// One tarball.
#[derive(Clone, Debug, Serialize)]
pub struct Tarball {
    pub slurm_version: String,
    pub toolchain: String,
    /// Empty for amd64/cpu.
    pub variant: String,
    /// The architecture and build kind the variant stands for.
    pub arch: String,
    pub build: String,
    pub key: String,
    pub file_name: String,
    pub size: u64,
    pub modified: Option<String>,
    /// As its folder's `SHA256SUMS` lists it.
    pub sha256: Option<String>,
    /// Whether `<tarball>.asc` is there.
    pub signed: bool,
    /// Whether the folder's `SHA256SUMS.asc` is there.
    pub sums_signed: bool,
    pub cdn_url: String,
}

/// One build-cache mirror.
#[derive(Clone, Debug, Serialize)]
pub struct Mirror {
    pub key: String,
    pub toolchain: Option<String>,
    /// `None` for a deps mirror (or a mirror the templates do not name).
    pub slurm_version: Option<String>,
    /// Specs the index lists as in the build cache.
    pub specs: u64,
    /// Whether a key index is published beside it.
    pub keys: bool,
    pub index_modified: Option<String>,
    pub cdn_url: String,
}

/// What a destination holds.
#[derive(Clone, Debug, Serialize)]
pub struct Catalog {
    pub destination: String,
    pub generated_at: String,
    pub tarballs: Vec<Tarball>,
    pub mirrors: Vec<Mirror>,
    /// Keys of every `SHA256SUMS` (release assets).
    pub sums: Vec<String>,
    /// The signing key the destination publishes (`keys/signing-key.asc`), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKey>,
}

/// The public key that verifies what the destination serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SigningKey {
    /// As `keys/signing-key.fingerprint` says.
    pub fingerprint: String,
    pub key: String,
    pub cdn_url: String,
}

/// Parse `SHA256SUMS` lines (`<hex>  <name>` or `<hex> *<name>`) into name → sha256.
pub fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (hash, name) = l.trim_end().split_once(char::is_whitespace)?;
            let name = name.trim_start().trim_start_matches('*');
            (hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| (name.to_string(), hash.to_ascii_lowercase()))
        })
        .collect()
}

/// Count specs in a layout-3 mirror's index: manifest → index blob → `database.installs`.
fn count_specs(src: &dyn Source, root: &str) -> Result<u64> {
    let manifest_key = spack::join(root, spack::INDEX_MANIFEST);
    let manifest = src
        .read(&manifest_key)?
        .ok_or_else(|| anyhow::anyhow!("{manifest_key} vanished"))?;
    let m: serde_json::Value =
        serde_json::from_slice(&manifest).with_context(|| format!("{manifest_key} is not JSON"))?;
    let rec = m["data"]
        .as_array()
        .and_then(|d| {
            d.iter().find(|r| {
                r["mediaType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("application/vnd.spack.db."))
            })
        })
        .ok_or_else(|| anyhow::anyhow!("{manifest_key} lists no index blob"))?;
    let (algo, sum) = (
        rec["checksumAlgorithm"].as_str().unwrap_or("sha256"),
        rec["checksum"].as_str().unwrap_or_default(),
    );
    let blob_key = spack::join(root, &spack::blob(algo, sum));
    let blob = src
        .read(&blob_key)?
        .ok_or_else(|| anyhow::anyhow!("{blob_key}, the index blob, is missing"))?;
    let db: serde_json::Value =
        serde_json::from_slice(&blob).with_context(|| format!("{blob_key} is not JSON"))?;
    let installs = db["database"]["installs"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{blob_key} has no database.installs"))?;
    Ok(installs
        .values()
        .filter(|i| i["in_buildcache"].as_bool().unwrap_or(true))
        .count() as u64)
}

/// Build the catalog of a destination.
pub fn build(src: &dyn Source, layout: &Layout) -> Result<Catalog> {
    let entries = src.list()?;
    let by_key: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.key.as_str(), e)).collect();
    let mut sums_cache: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut tarballs = Vec::new();
    let mut mirrors = Vec::new();
    let mut sums = Vec::new();
    let matrix = sf_core::matrix::SupportMatrix::embedded();
    let builds: Vec<&str> = matrix.builds.iter().map(|b| b.name.as_str()).collect();
    for e in &entries {
        if e.key.rsplit('/').next() == Some(SHA256SUMS) {
            sums.push(e.key.clone());
        }
        if let Some(parts) = layout.parse_tarball_key(&e.key) {
            let (folder, file_name) = e.key.rsplit_once('/').unwrap_or(("", &e.key));
            let (sums_key, sums_sig) = Layout::sums_keys(folder);
            if !sums_cache.contains_key(folder) {
                let text = src
                    .read(&sums_key)?
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                sums_cache.insert(folder.to_string(), parse_sums(&text));
            }
            let (arch, build) = Layout::variant_parts(&parts.variant, &builds);
            tarballs.push(Tarball {
                slurm_version: parts.slurm_version,
                toolchain: parts.toolchain,
                variant: parts.variant,
                arch,
                build,
                file_name: file_name.to_string(),
                size: e.size,
                modified: e.modified.clone(),
                sha256: sums_cache[folder].get(file_name).cloned(),
                signed: by_key.contains_key(Layout::signature_key(&e.key).as_str()),
                sums_signed: by_key.contains_key(sums_sig.as_str()),
                cdn_url: layout.cdn_url_of(&e.key),
                key: e.key.clone(),
            });
        }
        let root = if e.key == spack::INDEX_MANIFEST {
            Some("")
        } else {
            e.key.strip_suffix(&format!("/{}", spack::INDEX_MANIFEST))
        };
        if let Some(root) = root {
            let parts = layout.parse_mirror_key(root);
            let specs = count_specs(src, root)
                .with_context(|| format!("reading the index of the mirror {root:?}"))?;
            mirrors.push(Mirror {
                key: root.to_string(),
                toolchain: parts.as_ref().map(|p| p.toolchain.clone()),
                slurm_version: parts.and_then(|p| p.slurm_version),
                specs,
                keys: by_key.contains_key(spack::join(root, spack::KEYS_MANIFEST).as_str()),
                index_modified: e.modified.clone(),
                cdn_url: layout.cdn_url_of(root),
            });
        }
    }
    tarballs.sort_by(|a, b| {
        (&b.slurm_version, &a.toolchain, &a.variant).cmp(&(
            &a.slurm_version,
            &b.toolchain,
            &b.variant,
        ))
    });
    let signing_key = if by_key.contains_key(SIGNING_KEY) {
        src.read(SIGNING_KEY_FINGERPRINT)?.map(|f| SigningKey {
            fingerprint: String::from_utf8_lossy(&f).trim().to_string(),
            key: SIGNING_KEY.to_string(),
            cdn_url: layout.cdn_url_of(SIGNING_KEY),
        })
    } else {
        None
    };
    Ok(Catalog {
        destination: layout.destination.to_string(),
        generated_at: sf_core::record::rfc3339(SystemTime::now()),
        tarballs,
        mirrors,
        sums,
        signing_key,
    })
}

/// The catalog as Markdown, with at most `cap` rows per table.
pub fn markdown(c: &Catalog, cap: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Slurm Factory catalog\n\n`{}`: {} tarballs, {} build-cache mirrors.\n",
        c.destination,
        c.tarballs.len(),
        c.mirrors.len()
    );
    if let Some(k) = &c.signing_key {
        let _ = writeln!(
            out,
            "Signed by `{}`: the public key is [{}]({}) (`sf-sign verify` finds it in a copy of the bucket; compare the fingerprint with the one the project announces).\n",
            escape(&k.fingerprint),
            k.key,
            k.cdn_url
        );
    }
    if !c.tarballs.is_empty() {
        out.push_str("### Tarballs\n\n| Slurm | toolchain | arch | build | tarball | size | date | sha256 (SHA256SUMS) | signature |\n|---|---|---|---|---|---|---|---|---|\n");
        for t in c.tarballs.iter().take(cap) {
            let date = t
                .modified
                .as_deref()
                .and_then(|m| m.get(..10))
                .unwrap_or("-");
            let sig = match (t.signed, t.sums_signed) {
                (true, true) => "✅ `.asc`, SHA256SUMS.asc",
                (true, false) => "✅ `.asc`",
                (false, true) => "SHA256SUMS.asc only",
                (false, false) => "❌ none",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | [{}]({}) | {} | {} | {} | {} |",
                escape(&t.slurm_version),
                escape(&t.toolchain),
                escape(&t.arch),
                escape(&t.build),
                escape(&t.file_name),
                t.cdn_url,
                bytes(t.size),
                date,
                t.sha256
                    .as_deref()
                    .map(|h| format!("`{h}`"))
                    .unwrap_or_else(|| "not listed".into()),
                sig
            );
        }
        if c.tarballs.len() > cap {
            let _ = writeln!(
                out,
                "\n_{} more tarballs not shown; the JSON catalog lists them all._",
                c.tarballs.len() - cap
            );
        }
        out.push('\n');
    }
    if !c.mirrors.is_empty() {
        out.push_str("### Build-cache mirrors\n\n| mirror | toolchain | Slurm | specs | keys | index date | `spack mirror add` URL |\n|---|---|---|---|---|---|---|\n");
        for m in c.mirrors.iter().take(cap) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                if m.key.is_empty() { "/" } else { &m.key },
                m.toolchain
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "-".into()),
                m.slurm_version
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "deps".into()),
                m.specs,
                if m.keys { "✅" } else { "❌" },
                m.index_modified
                    .as_deref()
                    .and_then(|d| d.get(..10))
                    .unwrap_or("-"),
                m.cdn_url
            );
        }
        if c.mirrors.len() > cap {
            let _ = writeln!(
                out,
                "\n_{} more mirrors not shown; the JSON catalog lists them all._",
                c.mirrors.len() - cap
            );
        }
        out.push('\n');
    }
    out
}

/// The largest Markdown catalog that fits in `budget` bytes.
pub fn markdown_fitting(c: &Catalog, budget: usize) -> String {
    let most = c.tarballs.len().max(c.mirrors.len());
    let (mut lo, mut hi) = (0usize, most);
    if markdown(c, most).len() <= budget {
        return markdown(c, most);
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if markdown(c, mid).len() <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    markdown(c, lo)
}

/// A release asset name for a key: the folder's path joined with `-` (`builds-25.11-noble-SHA256SUMS`),
/// so the sums of every folder can sit in one release.
pub fn asset_name(key: &str) -> String {
    key.replace('/', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_lines_parse_in_both_modes() {
        let h = "a".repeat(64);
        let m = parse_sums(&format!("{h}  x.tar.gz\n{h} *y.tar.gz\nbogus line\n"));
        assert_eq!(m.len(), 2);
        assert_eq!(m["y.tar.gz"], h);
    }
}
