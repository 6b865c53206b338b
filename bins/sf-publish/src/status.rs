//! `sf-publish status MATRIX`: which cells of a job matrix are already published and current, so
//! `sf-matrix --skip-published` can leave them out.
//!
//! - A tarball (or image) cell is published when its tarball and its signature are at their keys
//!   and the tarball is of the cell's Slurm build: its `BUILDINFO.json` (the last tar entry, read
//!   from the tail of the published file, see [`tail_buildinfo`]) names the cell's exact Spack
//!   version of Slurm and the cell's GPU setting. The key has no patch release, so a tarball of an
//!   older release at the same key is pending.
//! - A version cell is published when its version mirror's index lists, in the build cache, a
//!   `slurm` spec of the cell's exact Spack version for the cell's OS and target, with the cell's
//!   GPU variants (`+nvml`/`~rsmi`..., from the stack file): CPU and GPU cells share the mirror.
//! - A deps cell is published when its deps mirror's index lists every root spec of the cell's
//!   environment (the stack file's dependencies, plus its GPU dependencies for a GPU cell) at its
//!   pinned version and boolean variants, for the cell's OS and target. CPU and GPU deps cells
//!   share the mirror too; a GPU cell needs its GPU-only roots (CUDA, ...) there.
//!
//! Output: `{"schema_version":1,"published":[{"id","reason"}],"pending":[{"id","reason"}]}`.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use sf_aws::AwsSettings;
use sf_core::exit::bad_input;
use sf_core::layout::{spack, Cell, Destination};
use sf_spack::index::Index;
use sf_spack::spec::SpecNode;
use sf_spackenv::stack::Stack;
use sf_store::{ObjectInfo, Store};

use crate::merge::read_document;
use crate::publish::Publisher;

/// The package whose spec marks a version mirror as built.
pub const SLURM_PACKAGE: &str = "slurm";
/// The build facts every tarball ends with.
pub use sf_archive::pack::BUILDINFO;
/// The first tail read of a tarball: a pack's gzip members hold 1 MiB of tar each, so this takes
/// in at least two whole members, far more than `BUILDINFO.json` and the tar trailer.
const TAIL_FIRST: u64 = 4 << 20;
/// The largest tail read before giving up on finding `BUILDINFO.json`.
const TAIL_MAX: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellStatus {
    pub id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub schema_version: u32,
    pub published: Vec<CellStatus>,
    pub pending: Vec<CellStatus>,
}

#[derive(Deserialize)]
struct MatrixDoc {
    include: Vec<Cell>,
}

/// Parse `sf-matrix` output.
pub fn parse_matrix(text: &str) -> Result<Vec<Cell>> {
    let doc: MatrixDoc = serde_json::from_str(text).map_err(|e| {
        bad_input(format!(
            "not a job matrix from sf-matrix ({e}); expected {{\"include\":[cell, ...]}}"
        ))
    })?;
    Ok(doc.include)
}

/// A spec a cell needs in its mirror: name, version and boolean variants (`+x` true, `~x` false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub version: String,
    pub variants: Vec<(String, bool)>,
}

impl Wanted {
    fn new(name: &str, version: &str, variants: &str) -> Self {
        Wanted {
            name: name.to_string(),
            version: version.to_string(),
            variants: bool_variants(variants),
        }
    }

    /// Whether an index record's spec node is this one. A boolean variant the node does not
    /// carry counts as off (a package without `nvml` cannot have NVML support).
    fn matches(&self, node: &SpecNode) -> bool {
        node.name() == self.name
            && node.version() == self.version
            && self.variants.iter().all(|(v, on)| {
                let got = node
                    .json
                    .get("parameters")
                    .and_then(|p| p.get(v))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                got == *on
            })
    }
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)?;
        for (v, on) in &self.variants {
            write!(f, " {}{v}", if *on { '+' } else { '~' })?;
        }
        Ok(())
    }
}

/// The boolean variants of a Spack variant list (`+hl ~python key=value` gives hl on, python off).
fn bool_variants(list: &str) -> Vec<(String, bool)> {
    list.split_whitespace()
        .filter_map(|t| {
            if let Some(v) = t.strip_prefix('+') {
                Some((v.to_string(), true))
            } else {
                t.strip_prefix('~').map(|v| (v.to_string(), false))
            }
        })
        .filter(|(v, _)| !v.is_empty() && !v.contains('='))
        .collect()
}

/// The specs that mark a mirror cell as built: Slurm with the cell's GPU variants for a version
/// cell, every root of the environment for a deps cell.
pub fn wanted_specs(cell: &Cell, stack: &Stack) -> Vec<Wanted> {
    let arch = cell.arch.as_str();
    if let Some(v) = &cell.slurm_spack_version {
        let s = &stack.slurm;
        return vec![Wanted::new(
            SLURM_PACKAGE,
            v,
            &format!("{} {}", s.variants, s.gpu_switch(cell.gpu, arch)),
        )];
    }
    let gpu = stack
        .gpu_dependencies
        .iter()
        .filter(|p| cell.gpu && p.applies_to(arch));
    stack
        .dependencies
        .iter()
        .chain(gpu)
        .map(|p| Wanted::new(&p.name, &p.version, p.variants.as_deref().unwrap_or("")))
        .collect()
}

/// Opened stores and read indexes, shared by cells of one destination.
struct Cache<'a> {
    aws: &'a AwsSettings,
    stores: HashMap<String, Option<Store>>,
    indexes: HashMap<String, Option<Index>>,
}

impl Cache<'_> {
    /// A store, or `None` for a directory that does not exist (nothing is published there).
    async fn store(&mut self, url: &str) -> Result<Option<Store>> {
        if let Some(s) = self.stores.get(url) {
            return Ok(s.clone());
        }
        let dest = Destination::parse(url)?;
        let s = match crate::missing_dir(&dest) {
            Some(_) => None,
            None => Some(Store::open(&dest, self.aws).await?),
        };
        self.stores.insert(url.to_string(), s.clone());
        Ok(s)
    }

    async fn index(&mut self, mirror_url: &str) -> Result<Option<Index>> {
        if let Some(i) = self.indexes.get(mirror_url) {
            return Ok(i.clone());
        }
        let i = match self.store(mirror_url).await? {
            None => None,
            Some(store) => {
                let p = Publisher::new(store, 1);
                if p.store.head(spack::INDEX_MANIFEST).await?.is_none() {
                    None
                } else {
                    Some(read_document::<Index>(&p, spack::INDEX_MANIFEST).await?.0)
                }
            }
        };
        self.indexes.insert(mirror_url.to_string(), i.clone());
        Ok(i)
    }
}

/// Bytes `range` of the object `head` describes (a ranged read on S3), checked to come from that
/// very object: the end of a tarball is read in pieces, and a publish that replaces it between two
/// of them would splice two files into one tail that reads as having no `BUILDINFO.json`.
async fn read_range(store: &Store, head: &ObjectInfo, range: Range<u64>) -> Result<Vec<u8>> {
    let url = store.url_of(&head.key);
    // `None`: the object is no longer the one `head` saw.
    let got = store
        .read_range(head, range.clone())
        .await
        .with_context(|| format!("reading the end of {url}"))?;
    whole_piece(&url, &range, got)
}

/// A piece read from `url`, when it is all of `range` from the object the read was checked against
/// (`None` when it was not); a short piece means the object changed under the read as well.
fn whole_piece(url: &str, range: &Range<u64>, got: Option<Vec<u8>>) -> Result<Vec<u8>> {
    match got {
        Some(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
        _ => bail!(
            "{url} changed while its end was being read (bytes {}..{} are of another version of \
             it): a publish replaced it; run status again once that publish is done",
            range.start,
            range.end
        ),
    }
}

/// The next piece of the end of a tarball of `size` bytes to read, when its last `have` bytes
/// are read already: [`TAIL_FIRST`] bytes at first, then four times as much in all each time,
/// up to [`TAIL_MAX`] or the whole file (`None` once that is read). Each piece ends where the
/// bytes read already begin, so no byte is fetched twice.
fn next_tail_range(size: u64, have: u64) -> Option<Range<u64>> {
    if have >= size || have >= TAIL_MAX {
        return None;
    }
    let want = if have == 0 { TAIL_FIRST } else { have * 4 };
    Some(size - want.min(TAIL_MAX).min(size)..size - have)
}

/// `BUILDINFO.json` from the end of a tarball of `size` bytes, read through `read` (a byte range
/// of the file to its bytes) in widening pieces, each put in front of the tail read so far.
async fn find_buildinfo<F, Fut>(size: u64, mut read: F) -> Result<Option<Value>>
where
    F: FnMut(Range<u64>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>>>,
{
    let mut tail = Vec::new();
    let mut have = 0;
    while let Some(range) = next_tail_range(size, have) {
        have = size - range.start;
        let mut piece = read(range).await?;
        piece.extend_from_slice(&tail);
        tail = piece;
        if let Some(info) = tail_buildinfo(&tail) {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// `BUILDINFO.json` from the tail of a gzipped tar, if it is in it.
///
/// The tarball is a concatenation of gzip members (each a whole, independently decodable stream)
/// and `BUILDINFO.json` is its last entry, so the tail from the first member that starts in it
/// decodes to the end of the tar, entry and all. A gzip header (`1f 8b 08`) found by chance inside
/// compressed data fails to decode (CRC, lengths) and the next candidate is tried.
pub fn tail_buildinfo(tail: &[u8]) -> Option<Value> {
    let starts =
        (0..tail.len().saturating_sub(3)).filter(|&i| tail[i..i + 3] == [0x1f, 0x8b, 0x08]);
    for i in starts {
        let mut tar = Vec::new();
        if flate2::read::MultiGzDecoder::new(&tail[i..])
            .read_to_end(&mut tar)
            .is_err()
        {
            continue;
        }
        if let Some(v) = find_tar_entry(&tar, BUILDINFO) {
            return serde_json::from_slice(v).ok();
        }
        // Decoded but the entry is not whole in it: an earlier member is needed.
        return None;
    }
    None
}

/// The content of the last tar entry called `name` in a piece of a tar stream (found by its
/// header: the name, then a valid header checksum).
fn find_tar_entry<'a>(tar: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut field = [0u8; 100];
    field[..name.len()].copy_from_slice(name.as_bytes());
    let mut found = None;
    let mut at = 0;
    while let Some(off) = find(&tar[at..], &field[..name.len() + 1]) {
        let h = at + off;
        at = h + 1;
        let Some(header) = tar.get(h..h + 512) else {
            break;
        };
        if !tar_checksum_ok(header) {
            continue;
        }
        let size = octal(&header[124..136])?;
        let body = tar.get(h + 512..h + 512 + size as usize)?;
        found = Some(body);
    }
    found
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).ok()
}

/// A ustar header's checksum: the sum of its bytes with the checksum field read as spaces.
fn tar_checksum_ok(header: &[u8]) -> bool {
    let Some(want) = octal(&header[148..156]) else {
        return false;
    };
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == want
}

/// Whether the published tarball is the cell's build, by its `BUILDINFO.json`.
async fn tarball_current(store: &Store, cell: &Cell, head: &ObjectInfo) -> Result<(bool, String)> {
    let url = store.url_of(&head.key);
    let Some(info) = find_buildinfo(head.size, |range| read_range(store, head, range)).await?
    else {
        return Ok((
            false,
            format!("{url} has no readable {BUILDINFO} at its end; publish it again"),
        ));
    };
    let field = |k: &str| info.get(k).and_then(Value::as_str).map(str::to_string);
    let (have, want) = match &cell.slurm_spack_version {
        Some(v) => (field("slurm_spack_version"), v.clone()),
        None => (
            field("slurm_version"),
            cell.slurm_version
                .as_ref()
                .map(|v| v.as_str().to_string())
                .unwrap_or_default(),
        ),
    };
    let release = cell.slurm_release.as_deref().unwrap_or(want.as_str());
    if have.as_deref() != Some(want.as_str()) {
        return Ok((
            false,
            format!(
                "{url} is a build of slurm@{}, the cell wants {want} (release {release})",
                have.as_deref().unwrap_or("(unknown)")
            ),
        ));
    }
    if info.get("gpu").and_then(Value::as_bool) != Some(cell.gpu) {
        return Ok((
            false,
            format!(
                "{url} was built with gpu={}, the cell has gpu={}",
                info.get("gpu").unwrap_or(&Value::Null),
                cell.gpu
            ),
        ));
    }
    Ok((
        true,
        format!("{url} (slurm@{want}, release {release}) and its signature are published"),
    ))
}

async fn cell_status(cache: &mut Cache<'_>, cell: &Cell, stack: &Stack) -> Result<(bool, String)> {
    // Version cells name their tarball too, but their product is the version mirror.
    let tarball = matches!(cell.pipeline.as_str(), "tarball" | "image");
    if let Some(t) = cell.tarball.as_ref().filter(|_| tarball) {
        // The cell names its destination root; older matrices only carry full URLs.
        let from_url = t.url.strip_suffix(&format!("/{}", t.key)).unwrap_or(&t.url);
        let root = if cell.destination.is_empty() {
            from_url
        } else {
            cell.destination.as_str()
        };
        let Some(store) = cache.store(root).await? else {
            return Ok((false, format!("{root} does not exist")));
        };
        let Some(head) = store.head(&t.key).await? else {
            return Ok((false, format!("{} is missing", store.url_of(&t.key))));
        };
        if store.head(&t.signature_key).await?.is_none() {
            return Ok((
                false,
                format!("{} is missing", store.url_of(&t.signature_key)),
            ));
        }
        return tarball_current(&store, cell, &head).await;
    }
    let mirror = match (&cell.version_mirror, &cell.slurm_spack_version) {
        (Some(m), Some(_)) => m,
        _ => &cell.deps_mirror,
    };
    let Some(index) = cache.index(&mirror.url).await? else {
        return Ok((false, format!("{} has no index", mirror.url)));
    };
    let wanted = wanted_specs(cell, stack);
    // The index's specs for this cell's OS and target, in index order, taken once for every
    // wanted spec.
    let candidates: Vec<(&str, SpecNode)> = index
        .records()
        .filter(|(_, r)| r.in_buildcache)
        .map(|(h, r)| {
            (
                h,
                SpecNode {
                    json: r.spec.clone(),
                },
            )
        })
        .filter(|(_, node)| {
            cell.spack_os
                .as_deref()
                .is_none_or(|os| node.platform_os() == Some(os))
                && node.target() == Some(cell.spack_target.as_str())
        })
        .collect();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for w in &wanted {
        let hit = candidates.iter().find(|(_, node)| w.matches(node));
        match hit {
            Some((h, _)) => found.push(format!("{w}/{h}")),
            None => missing.push(w.to_string()),
        }
    }
    let os = cell.spack_os.as_deref().unwrap_or("any OS");
    Ok(if wanted.is_empty() {
        (
            false,
            format!("the cell has no specs to look for in {}", mirror.url),
        )
    } else if missing.is_empty() {
        (
            true,
            format!(
                "{} lists {} for {os} {}",
                mirror.url,
                found.join(", "),
                cell.spack_target
            ),
        )
    } else {
        (
            false,
            format!(
                "{} does not list {} for {os} {}",
                mirror.url,
                missing.join(", "),
                cell.spack_target
            ),
        )
    })
}

/// The status of every cell; `stack` says which specs mark a mirror cell as built.
pub async fn status(cells: &[Cell], aws: &AwsSettings, stack: &Stack) -> Result<StatusReport> {
    let mut cache = Cache {
        aws,
        stores: HashMap::new(),
        indexes: HashMap::new(),
    };
    let mut report = StatusReport {
        schema_version: 1,
        ..Default::default()
    };
    for cell in cells {
        let (done, reason) = cell_status(&mut cache, cell, stack)
            .await
            .with_context(|| format!("cell {}", cell.id))?;
        let s = CellStatus {
            id: cell.id.clone(),
            reason,
        };
        if done {
            report.published.push(s);
        } else {
            report.pending.push(s);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn each_wider_tail_read_fetches_only_the_bytes_before_the_last() {
        let size = 100 * MIB;
        let plan: Vec<Range<u64>> = std::iter::successors(next_tail_range(size, 0), |r| {
            next_tail_range(size, size - r.start)
        })
        .collect();
        assert_eq!(
            plan,
            [96 * MIB..100 * MIB, 84 * MIB..96 * MIB, 36 * MIB..84 * MIB]
        );
        // A smaller file: the second piece is the rest of it, then nothing.
        let size = 10 * MIB;
        assert_eq!(next_tail_range(size, 0), Some(6 * MIB..10 * MIB));
        assert_eq!(next_tail_range(size, 4 * MIB), Some(0..6 * MIB));
        assert_eq!(next_tail_range(size, size), None);
        assert_eq!(next_tail_range(1000, 0), Some(0..1000));
        assert_eq!(next_tail_range(1000, 1000), None);
        assert_eq!(next_tail_range(0, 0), None);
    }

    /// A tarball whose `BUILDINFO.json` is in one gzip member starting `filler` (incompressible)
    /// bytes before it: a member that starts before the last [`TAIL_FIRST`] bytes when `filler`
    /// is larger.
    fn one_member_tarball(filler: usize) -> Vec<u8> {
        let noise = sf_testkit::noise(filler, 0x2545_f491_4f6c_dd1d);
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let info: &[u8] = br#"{"slurm_version":"25.11","gpu":false}"#;
        sf_testkit::tar_into(gz, &[("view/lib/libfiller.so", &noise), (BUILDINFO, info)])
            .finish()
            .unwrap()
    }

    #[tokio::test]
    async fn buildinfo_before_the_last_4_mib_is_found_without_reading_a_byte_twice() {
        let bytes = one_member_tarball(6 << 20);
        let size = bytes.len() as u64;
        assert!(size > TAIL_FIRST, "{size}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.tar.gz"), &bytes).unwrap();
        let store = Store::Dir(sf_store::DirStore::open(dir.path()).unwrap());
        let head = store.head("t.tar.gz").await.unwrap().unwrap();

        let mut asked = Vec::new();
        let info = find_buildinfo(size, |range| {
            asked.push(range.clone());
            read_range(&store, &head, range)
        })
        .await
        .unwrap()
        .expect("BUILDINFO.json found");
        assert_eq!(info["slurm_version"], "25.11");
        assert_eq!(info["gpu"], false);
        // The last 4 MiB, then only the bytes before them: the whole file once, nothing again.
        assert_eq!(asked, [size - TAIL_FIRST..size, 0..size - TAIL_FIRST]);
        assert_eq!(asked.iter().map(|r| r.end - r.start).sum::<u64>(), size);
    }

    /// The message a read of pieces of two versions of `url` fails with, as a work failure.
    fn assert_changed(err: &anyhow::Error, url: &str) {
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("{url} changed while its end was being read")),
            "{text}"
        );
        assert_eq!(sf_core::exit::code_for(err), 1, "{text}");
    }

    #[test]
    fn a_piece_shorter_than_asked_or_of_another_version_is_an_error() {
        let url = "s3://b/builds/t.tar.gz";
        assert_eq!(
            whole_piece(url, &(10..14), Some(vec![1, 2, 3, 4])).unwrap(),
            [1, 2, 3, 4]
        );
        // The object ends sooner than when its size was taken.
        assert_changed(
            &whole_piece(url, &(10..14), Some(vec![1, 2])).unwrap_err(),
            url,
        );
        // The server refused the ETag (412) or the range (416).
        assert_changed(&whole_piece(url, &(10..14), None).unwrap_err(), url);
    }

    #[tokio::test]
    async fn a_file_replaced_between_two_tail_reads_is_an_error_not_a_missing_buildinfo() {
        let old = one_member_tarball(6 << 20);
        let new = one_member_tarball(5 << 20);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tar.gz");
        std::fs::write(&path, &old).unwrap();
        let store = Store::Dir(sf_store::DirStore::open(dir.path()).unwrap());
        let head = store.head("t.tar.gz").await.unwrap().unwrap();

        // A publish renames the new tarball in after the first piece is read.
        let mut reads = 0;
        let err = find_buildinfo(head.size, |range| {
            reads += 1;
            if reads == 2 {
                let staged = dir.path().join(".t.tar.gz.new");
                std::fs::write(&staged, &new).unwrap();
                std::fs::rename(&staged, &path).unwrap();
            }
            read_range(&store, &head, range)
        })
        .await
        .unwrap_err();
        assert_eq!(reads, 2);
        assert_changed(&err, &store.url_of("t.tar.gz"));
    }

    #[tokio::test]
    async fn an_s3_object_replaced_between_two_tail_reads_is_an_error_not_a_missing_buildinfo() {
        use sf_aws::aws_sdk_s3::primitives::ByteStream;
        let aws = AwsSettings::local(&sf_testkit::moto_url(), "test", "test");
        let s3 = aws.s3_client(&aws.load().await.unwrap());
        let bucket = format!("sf-status-{}", sf_core::fsutil::random_hex(6).unwrap());
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let store = Store::open(
            &Destination::parse(&format!("s3://{bucket}")).unwrap(),
            &aws,
        )
        .await
        .unwrap();
        let old = one_member_tarball(6 << 20);
        // Another object of the same length: only the ETag tells them apart.
        let mut new = old.clone();
        new[100] ^= 0xff;
        let put = |bytes: Vec<u8>| {
            s3.put_object()
                .bucket(&bucket)
                .key("t.tar.gz")
                .body(ByteStream::from(bytes))
                .send()
        };
        put(old.clone()).await.unwrap();
        let head = store.head("t.tar.gz").await.unwrap().unwrap();

        // Unchanged, both pieces are read under the ETag.
        let info = find_buildinfo(head.size, |range| read_range(&store, &head, range))
            .await
            .unwrap()
            .expect("BUILDINFO.json found");
        assert_eq!(info["slurm_version"], "25.11");

        // Replaced after the first piece is read: the second is refused (412).
        let mut reads = 0;
        let (store, head, new) = (&store, &head, &new);
        let err = find_buildinfo(head.size, |range| {
            reads += 1;
            let replace = (reads == 2).then(|| put(new.clone()));
            async move {
                if let Some(replace) = replace {
                    replace.await.unwrap();
                }
                read_range(store, head, range).await
            }
        })
        .await
        .unwrap_err();
        assert_eq!(reads, 2);
        assert_changed(&err, &store.url_of("t.tar.gz"));
    }
}
