//! Which CloudFront paths a change list needs invalidated, and in which batches.
//!
//! Immutable blobs are left out (their URLs never change content). The remaining keys become
//! URL-encoded CDN paths; a folder's changed paths collapse into one `folder/*` only when that is
//! cheaper (CloudFront bills each path, a wildcard counting as one) and the folder cannot hold a
//! mirror's blobs. The result is cut into batches within CloudFront's limits of 3,000 paths and
//! 15 wildcard paths in flight per distribution.

use std::collections::BTreeMap;

use serde::Serialize;
use sf_core::layout::{spack, Layout};
use sha2::{Digest, Sha256};

/// CloudFront's limit of paths in progress per distribution.
pub const MAX_PATHS_IN_FLIGHT: usize = 3_000;
/// CloudFront's limit of wildcard paths in progress per distribution.
pub const MAX_WILDCARDS_IN_FLIGHT: usize = 15;

/// How keys map to paths: keys under `key_prefix` are served at `path_prefix` + the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathMap {
    pub key_prefix: String,
    pub path_prefix: String,
}

impl Default for PathMap {
    fn default() -> Self {
        PathMap {
            key_prefix: String::new(),
            path_prefix: "/".into(),
        }
    }
}

impl PathMap {
    /// `KEY_PREFIX=PATH_PREFIX`, e.g. `prod=/` when the origin path is `/prod`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (k, p) = s.split_once('=').ok_or_else(|| {
            sf_core::bad_input(format!(
                "--path-map {s:?}: expected KEY_PREFIX=PATH_PREFIX, e.g. prod=/"
            ))
        })?;
        let p = p.trim();
        if !p.starts_with('/') || p.contains(['*', '?', ' ']) {
            return Err(sf_core::bad_input(format!("--path-map {s:?}: the path prefix must start with '/' and hold no '*', '?' or spaces")));
        }
        Ok(PathMap {
            key_prefix: k.trim().trim_matches('/').to_string(),
            path_prefix: p.to_string(),
        })
    }

    /// The CDN path of a key, or `None` when the key is not under the mapped prefix. The key
    /// prefix itself is served at the path prefix itself.
    pub fn path_of(&self, key: &str) -> Option<String> {
        let under = |p: &str| key == p || key.starts_with(&format!("{p}/"));
        if !(self.key_prefix.is_empty() || under(&self.key_prefix)) {
            return None;
        }
        if !self.key_prefix.is_empty() && key == self.key_prefix {
            return Some(self.path_prefix.clone());
        }
        let rel = Layout::cdn_path(key, &self.key_prefix);
        Some(format!("{}{}", self.path_prefix.trim_end_matches('/'), rel))
    }
}

/// Planning knobs.
#[derive(Clone, Debug)]
pub struct Options {
    pub map: PathMap,
    /// Collapse a folder into a wildcard only from this many paths on (2: whenever cheaper).
    pub min_group: usize,
    pub max_paths: usize,
    pub max_wildcards: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            map: PathMap::default(),
            min_group: 2,
            max_paths: MAX_PATHS_IN_FLIGHT,
            max_wildcards: MAX_WILDCARDS_IN_FLIGHT,
        }
    }
}

/// One CreateInvalidation call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Batch {
    pub caller_reference: String,
    pub paths: Vec<String>,
    pub wildcards: usize,
}

/// What to invalidate.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Distinct keys in the change list.
    pub keys: usize,
    /// Blob keys left out.
    pub blobs_skipped: usize,
    /// Keys outside the mapped key prefix, left out.
    pub unmapped: Vec<String>,
    /// Paths before collapsing (what invalidating each key alone would bill).
    pub exact_paths: usize,
    /// All paths to invalidate, wildcards included.
    pub paths: Vec<String>,
    pub batches: Vec<Batch>,
}

#[derive(Default)]
struct Node {
    files: Vec<String>,
    children: BTreeMap<String, Node>,
}

enum Item {
    Exact(String),
    /// A folder's wildcard, with the keys it stands for (to expand it again if need be).
    Wild(String, Vec<String>),
}

impl Item {
    fn into_keys(self) -> Vec<String> {
        match self {
            Item::Exact(k) => vec![k],
            Item::Wild(_, ks) => ks,
        }
    }
}

/// Where a bucket key sits with respect to the destination's key prefix.
enum Place<'k> {
    /// Under the destination: its layout key, the prefix removed.
    Inside(&'k str),
    /// The destination's root or a folder above it: it holds the whole destination.
    Above,
    /// Outside the destination: the layout's templates say nothing about it.
    Outside,
}

/// The change list and `--paths` give bucket keys, which carry the destination's key prefix;
/// the layout's templates know keys without it.
fn place<'k>(layout: &Layout, key: &'k str) -> Place<'k> {
    let prefix = layout.destination.key_prefix();
    if prefix.is_empty() {
        return Place::Inside(key);
    }
    match key.strip_prefix(prefix) {
        Some("") => Place::Above,
        Some(rest) if rest.starts_with('/') => Place::Inside(&rest[1..]),
        _ if key.is_empty() || prefix.strip_prefix(key).is_some_and(|r| r.starts_with('/')) => {
            Place::Above
        }
        _ => Place::Outside,
    }
}

/// Whether a bucket key is an immutable blob of a mirror.
fn is_blob(layout: &Layout, key: &str) -> bool {
    match place(layout, key) {
        Place::Inside(rel) => spack::is_blob_anywhere(rel),
        // Whatever the layout, a key that looks like a blob is left out.
        Place::Above | Place::Outside => spack::is_blob_anywhere(key),
    }
}

/// Whether `dir/*` may be invalidated: it must not cover a mirror's blobs. Only folders under
/// the destination, which the layout's templates can vouch for, qualify.
fn safe_for_wildcard(layout: &Layout, dir: &str) -> bool {
    match place(layout, dir) {
        Place::Inside(rel) => {
            !rel.is_empty()
                && !layout.could_hold_mirror(rel)
                && !rel.split('/').any(|s| s == spack::BLOBS_DIR)
        }
        Place::Above | Place::Outside => false,
    }
}

/// Best paths for a folder: its own files and children, or one wildcard when strictly cheaper
/// (CloudFront bills a wildcard as one path) and safe. A folder's wildcard is only chosen over its
/// children's when it saves a path, so a wildcard never climbs to a parent (covering unchanged
/// siblings) for nothing.
fn solve(node: &Node, dir: &str, layout: &Layout, opts: &Options, out: &mut Vec<Item>) -> usize {
    let mut items = Vec::new();
    let mut cost = node.files.len();
    items.extend(node.files.iter().cloned().map(Item::Exact));
    for (name, child) in &node.children {
        let sub = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        cost += solve(child, &sub, layout, opts, &mut items);
    }
    if safe_for_wildcard(layout, dir) && cost >= opts.min_group.max(2) {
        let keys = items.into_iter().flat_map(Item::into_keys).collect();
        out.push(Item::Wild(dir.to_string(), keys));
        1
    } else {
        out.extend(items);
        cost
    }
}

/// When the exact paths fit one invalidation but the wildcards would not (more than the wildcard
/// limit, so a second batch waiting on the first), expand the smallest wildcards back into their
/// keys: one batch of a few more paths beats minutes of waiting.
fn fit_one_batch(items: Vec<Item>, exact_paths: usize, opts: &Options) -> Vec<Item> {
    let wilds = items.iter().filter(|i| matches!(i, Item::Wild(..))).count();
    if exact_paths > opts.max_paths || wilds <= opts.max_wildcards {
        return items;
    }
    // Smallest groups first (ties by folder, for a stable plan).
    let mut order: Vec<(usize, String)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Wild(d, ks) => Some((ks.len(), d.clone())),
            Item::Exact(_) => None,
        })
        .collect();
    order.sort();
    let expand: std::collections::BTreeSet<String> = order
        .into_iter()
        .take(wilds - opts.max_wildcards)
        .map(|(_, d)| d)
        .collect();
    items
        .into_iter()
        .flat_map(|i| match i {
            Item::Wild(d, ks) if expand.contains(&d) => ks.into_iter().map(Item::Exact).collect(),
            other => vec![other],
        })
        .collect()
}

/// What a change list's invalidations are derived from: each changed key with the sha256 of the
/// content it now has (or, for bare keys, whatever identifies the publish that wrote them, e.g.
/// the workflow run). A later publish of the same keys with new content gives a new source, so
/// it is invalidated again; the same change list retried gives the same one.
pub fn source_digest<I, S>(lines: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut lines: Vec<String> = lines.into_iter().map(|l| l.as_ref().to_string()).collect();
    lines.sort();
    lines.dedup();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// A reference CloudFront keeps with the invalidation: the same source (change list with its
/// content digests) and batch always give the same reference, so a retried step finds its
/// invalidation instead of making another, while new content under the same keys gets a new one.
pub fn caller_reference(
    distribution: &str,
    source: &str,
    paths: &[String],
    batch: usize,
    batches: usize,
) -> String {
    let mut h = Sha256::new();
    h.update(distribution.as_bytes());
    h.update(b"\n");
    h.update(source.as_bytes());
    for p in paths {
        h.update(b"\n");
        h.update(p.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    format!("sf-invalidate-{}-{}of{}", &digest[..32], batch + 1, batches)
}

/// Plan the invalidation of `keys` (bucket keys, any order, duplicates allowed); `source` is
/// [`source_digest`] of what changed.
pub fn plan(
    distribution: &str,
    source: &str,
    keys: &[String],
    layout: &Layout,
    opts: &Options,
) -> Plan {
    let mut keys: Vec<String> = keys
        .iter()
        .map(|k| k.trim().trim_start_matches('/').to_string())
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys.dedup();
    let mut blobs_skipped = 0;
    let mut unmapped = Vec::new();
    let mut root = Node::default();
    let mut exact_paths = 0;
    for key in &keys {
        if is_blob(layout, key) {
            blobs_skipped += 1;
            continue;
        }
        if opts.map.path_of(key).is_none() {
            unmapped.push(key.clone());
            continue;
        }
        exact_paths += 1;
        let mut node = &mut root;
        let mut segs: Vec<&str> = key.split('/').collect();
        segs.pop();
        for s in segs {
            node = node.children.entry(s.to_string()).or_default();
        }
        node.files.push(key.clone());
    }
    let mut items = Vec::new();
    solve(&root, "", layout, opts, &mut items);
    let items = fit_one_batch(items, exact_paths, opts);
    let mut wild: Vec<String> = Vec::new();
    let mut exact: Vec<String> = Vec::new();
    for i in items {
        match i {
            Item::Exact(k) => exact.extend(opts.map.path_of(&k)),
            // The folder's path, then `*`: CloudFront matches the prefix.
            Item::Wild(d, _) => wild.extend(
                opts.map
                    .path_of(&d)
                    .map(|p| format!("{}/*", p.trim_end_matches('/'))),
            ),
        }
    }
    wild.sort();
    exact.sort();
    // Batches: wildcards first (up to the wildcard limit each), filled up with exact paths.
    let mut raw: Vec<(Vec<String>, usize)> = Vec::new();
    let (mut wi, mut ei) = (0, 0);
    while wi < wild.len() || ei < exact.len() {
        let nw = (wild.len() - wi)
            .min(opts.max_wildcards)
            .min(opts.max_paths);
        let mut paths: Vec<String> = wild[wi..wi + nw].to_vec();
        wi += nw;
        let ne = (exact.len() - ei).min(opts.max_paths - paths.len());
        paths.extend_from_slice(&exact[ei..ei + ne]);
        ei += ne;
        raw.push((paths, nw));
    }
    let n = raw.len();
    let batches = raw
        .into_iter()
        .enumerate()
        .map(|(i, (paths, wildcards))| Batch {
            caller_reference: caller_reference(distribution, source, &paths, i, n),
            paths,
            wildcards,
        })
        .collect();
    let mut paths = wild;
    paths.extend(exact);
    Plan {
        keys: keys.len(),
        blobs_skipped,
        unmapped,
        exact_paths,
        paths,
        batches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(keys: &[String]) -> Plan {
        plan(
            "E2EXAMPLE",
            &source_digest(keys),
            keys,
            &Layout::default(),
            &Options::default(),
        )
    }

    fn blob(i: usize) -> String {
        let h = format!("{:064x}", i * 7919 + 1);
        format!("noble/slurm/25.11/{}", spack::blob("sha256", &h))
    }

    #[test]
    fn nothing_changed_is_nothing_to_do() {
        let p = run(&[]);
        assert!(p.paths.is_empty() && p.batches.is_empty());
    }

    #[test]
    fn one_key_is_one_encoded_path() {
        let p = run(&["builds/25.11/noble/slurm-25.11-noble-software.tar.gz".into()]);
        assert_eq!(
            p.paths,
            ["/builds/25.11/noble/slurm-25.11-noble-software.tar.gz"]
        );
        assert_eq!(p.batches.len(), 1);
        let p = run(&["x/a file*.json".into()]);
        assert_eq!(p.paths, ["/x/a%20file%2A.json"]);
        let p = run(&[blob(1)]);
        assert_eq!((p.blobs_skipped, p.paths.len()), (1, 0));
    }

    #[test]
    fn two_thousand_keys_of_a_mirror_push_never_touch_blobs() {
        // A publish of one version mirror: 1,000 blobs, 997 re-signed spec manifests, index, keys, layout.
        let mut keys: Vec<String> = (0..1000).map(blob).collect();
        for i in 0..997 {
            keys.push(format!(
                "noble/slurm/25.11/{}",
                spack::spec_manifest(&format!("pkg{}", i % 45), "1.0", &format!("{i:032}"))
            ));
        }
        keys.push(format!("noble/slurm/25.11/{}", spack::INDEX_MANIFEST));
        keys.push(format!("noble/slurm/25.11/{}", spack::KEYS_MANIFEST));
        keys.push(format!("noble/slurm/25.11/{}", spack::LAYOUT_JSON));
        assert_eq!(keys.len(), 2000);
        let p = run(&keys);
        assert_eq!(p.blobs_skipped, 1000);
        assert_eq!(p.exact_paths, 1000);
        // The mirror root holds blobs, so the wildcard stops at its v3 tree.
        assert_eq!(p.paths, ["/noble/slurm/25.11/v3/*"]);
        assert!(p.paths.iter().all(|p| !p.contains("/blobs/")));
    }

    #[test]
    fn a_lone_file_per_folder_stays_exact() {
        // Two tarball folders, each with a tarball, its signature and SHA256SUMS(.asc): 4 paths
        // per folder collapse; a folder with one changed file does not.
        let mut keys = Vec::new();
        for tc in ["noble", "jammy"] {
            let f = format!("builds/25.11/{tc}");
            keys.extend([
                format!("{f}/slurm-25.11-{tc}-software.tar.gz"),
                format!("{f}/slurm-25.11-{tc}-software.tar.gz.asc"),
                format!("{f}/SHA256SUMS"),
                format!("{f}/SHA256SUMS.asc"),
            ]);
        }
        keys.push("builds/24.11/rockylinux9/SHA256SUMS".into());
        let p = run(&keys);
        // builds/25.11 holds both folders: one wildcard beats two. `builds` itself could be a
        // toolchain folder of mirrors as far as the templates know, so it is never a wildcard.
        assert_eq!(
            p.paths,
            ["/builds/25.11/*", "/builds/24.11/rockylinux9/SHA256SUMS"]
        );
        let o = Options {
            min_group: 9,
            ..Options::default()
        };
        let p = plan("E", "s", &keys, &Layout::default(), &o);
        assert_eq!(p.paths.len(), 9);
    }

    #[test]
    fn ten_thousand_keys_respect_the_limits() {
        // 20 mirrors with 500 manifests each: 20 wildcards, so two batches (15 + 5).
        let mut keys = Vec::new();
        for m in 0..20 {
            for i in 0..500 {
                keys.push(format!(
                    "tc{m}/slurm/deps/{}",
                    spack::spec_manifest("dep", "1.0", &format!("{i:032}"))
                ));
            }
        }
        assert_eq!(keys.len(), 10_000);
        let p = run(&keys);
        assert_eq!(p.paths.len(), 20);
        assert_eq!(
            p.batches.iter().map(|b| b.wildcards).collect::<Vec<_>>(),
            [15, 5]
        );
        assert_ne!(p.batches[0].caller_reference, p.batches[1].caller_reference);

        // 10,000 files at mirror roots cannot collapse (the roots hold blobs): batches of 3,000.
        let keys: Vec<String> = (0..10_000)
            .map(|i| format!("noble/slurm/deps/file-{i}.json"))
            .collect();
        let p = run(&keys);
        assert_eq!(p.paths.len(), 10_000);
        assert_eq!(
            p.batches.iter().map(|b| b.paths.len()).collect::<Vec<_>>(),
            [3000, 3000, 3000, 1000]
        );
        assert!(p.batches.iter().all(|b| b.wildcards == 0));
    }

    #[test]
    fn the_reference_follows_the_change_list_not_its_order() {
        let a = run(&["a/x".into(), "b/y".into()]);
        let b = run(&["b/y".into(), "a/x".into(), "a/x".into()]);
        assert_eq!(a.batches[0].caller_reference, b.batches[0].caller_reference);
        let c = run(&["a/x".into()]);
        assert_ne!(a.batches[0].caller_reference, c.batches[0].caller_reference);
    }

    #[test]
    fn new_content_under_the_same_keys_gets_a_new_reference() {
        let keys: Vec<String> = vec!["builds/25.11/noble/SHA256SUMS".into()];
        let with = |sha: &str| {
            let src = source_digest([format!("{}\t{sha}", keys[0])]);
            plan("E", &src, &keys, &Layout::default(), &Options::default())
        };
        let (a, b) = (with(&"a".repeat(64)), with(&"b".repeat(64)));
        assert_eq!(a.paths, b.paths);
        assert_ne!(a.batches[0].caller_reference, b.batches[0].caller_reference);
        assert_eq!(
            a.batches[0].caller_reference,
            with(&"a".repeat(64)).batches[0].caller_reference
        );
    }

    #[test]
    fn forty_paths_in_twenty_folders_stay_one_batch() {
        // Two files in each of 20 tarball folders: 20 wildcards would need two batches (15 + 5,
        // the second waiting for the first); 40 exact paths fit one. The smallest groups are
        // expanded until the wildcards fit the limit.
        let keys: Vec<String> = (0..20)
            .flat_map(|i| {
                let f = format!("builds/25.{i}/noble");
                [format!("{f}/SHA256SUMS"), format!("{f}/SHA256SUMS.asc")]
            })
            .collect();
        let p = run(&keys);
        assert_eq!(p.exact_paths, 40);
        assert_eq!(p.batches.len(), 1);
        let b = &p.batches[0];
        assert!(b.wildcards <= MAX_WILDCARDS_IN_FLIGHT);
        assert_eq!(b.paths.len(), p.paths.len());
        // 20 folders collapse to one `builds/25.N/*` each; the 5 expanded give back 10 paths.
        assert_eq!((b.wildcards, b.paths.len()), (15, 25));
    }

    #[test]
    fn a_wildcard_never_climbs_past_what_it_saves() {
        // One changed folder: its wildcard stays there, not on the parent holding unchanged
        // siblings (`builds/25.11/*` would bill the same one path and flush more).
        let keys: Vec<String> = ["slurm.tar.gz", "slurm.tar.gz.asc", "SHA256SUMS"]
            .iter()
            .map(|f| format!("builds/25.11/noble/{f}"))
            .collect();
        assert_eq!(run(&keys).paths, ["/builds/25.11/noble/*"]);
    }

    #[test]
    fn keys_map_to_the_distribution_paths() {
        let o = Options {
            map: PathMap::parse("prod=/cache").unwrap(),
            ..Options::default()
        };
        let p = plan(
            "E",
            "s",
            &["prod/builds/x".into(), "other/y".into()],
            &Layout::default(),
            &o,
        );
        assert_eq!(p.paths, ["/cache/builds/x"]);
        assert_eq!(p.unmapped, ["other/y"]);
        assert!(PathMap::parse("nope").is_err());
    }

    fn at(destination: &str) -> Layout {
        Layout::new(Some(destination), None, Default::default()).unwrap()
    }

    #[test]
    fn under_a_destination_prefix_mirror_roots_are_still_mirror_roots() {
        // Bucket keys carry the destination's prefix: `prod/noble/slurm` holds both mirrors'
        // blobs, so it is no wildcard, whatever the prefix.
        let keys: Vec<String> = vec![
            "prod/noble/slurm/deps/v3/layout.json".into(),
            "prod/noble/slurm/25.11/v3/layout.json".into(),
        ];
        let p = plan("E", "s", &keys, &at("s3://bkt/prod"), &Options::default());
        assert_eq!(
            p.paths,
            [
                "/prod/noble/slurm/25.11/v3/layout.json",
                "/prod/noble/slurm/deps/v3/layout.json"
            ]
        );
        // Blobs are recognised under the prefix too, and a prefix named like a blob folder
        // does not make everything a blob.
        let blob = format!(
            "prod/noble/slurm/deps/{}",
            spack::blob("sha256", &"a".repeat(64))
        );
        let p = plan("E", "s", &[blob], &at("s3://bkt/prod"), &Options::default());
        assert_eq!((p.blobs_skipped, p.paths.len()), (1, 0));
        let p = plan(
            "E",
            "s",
            &["blobs/sha256/builds/25.11/noble/SHA256SUMS".into()],
            &at("s3://bkt/blobs/sha256"),
            &Options::default(),
        );
        assert_eq!(p.paths, ["/blobs/sha256/builds/25.11/noble/SHA256SUMS"]);
    }

    #[test]
    fn the_destination_root_is_never_one_wildcard() {
        // Destination `prod/x` served at the distribution's root. Its root (and `prod` above
        // it) holds every mirror, so changes in two of its folders stay two groups.
        let keys: Vec<String> = [
            "builds/25.11/noble/slurm-25.11-noble-software.tar.gz",
            "builds/25.11/noble/slurm-25.11-noble-software.tar.gz.asc",
            "noble/slurm/deps/v3/manifests/index/index.manifest.json",
            "noble/slurm/deps/v3/manifests/spec/a/a-1.spec.manifest.json",
            "noble/slurm/deps/v3/layout.json",
        ]
        .iter()
        .map(|k| format!("prod/x/{k}"))
        .collect();
        let o = Options {
            map: PathMap::parse("prod/x=/").unwrap(),
            ..Options::default()
        };
        let p = plan("E", "s", &keys, &at("s3://bkt/prod/x"), &o);
        assert_eq!(p.paths, ["/builds/25.11/noble/*", "/noble/slurm/deps/v3/*"]);
        // Keys outside the destination are unknown to the layout: exact paths only.
        let keys: Vec<String> = vec!["staging/a/1".into(), "staging/a/2".into()];
        let p = plan("E", "s", &keys, &at("s3://bkt/prod"), &Options::default());
        assert_eq!(p.paths, ["/staging/a/1", "/staging/a/2"]);
    }

    #[test]
    fn the_mapped_key_prefix_is_the_path_prefix() {
        let m = PathMap::parse("prod/x=/").unwrap();
        assert_eq!(m.path_of("prod/x").as_deref(), Some("/"));
        assert_eq!(m.path_of("prod/x/a b").as_deref(), Some("/a%20b"));
        let m = PathMap::parse("prod=/cache").unwrap();
        assert_eq!(m.path_of("prod").as_deref(), Some("/cache"));
        assert_eq!(m.path_of("prod/builds").as_deref(), Some("/cache/builds"));
        // A folder equal to the key prefix, as a wildcard: the mapped root's `/*`.
        let keys: Vec<String> = vec![
            "prod/builds/25.11/noble/SHA256SUMS".into(),
            "prod/builds/25.11/noble/SHA256SUMS.asc".into(),
        ];
        let o = Options {
            map: PathMap::parse("prod/builds/25.11/noble=/t").unwrap(),
            ..Options::default()
        };
        let p = plan("E", "s", &keys, &at("s3://bkt/prod"), &o);
        assert_eq!(p.paths, ["/t/*"]);
    }
}
