//! Packing a view into the relocatable tarball: plan (walk, check, relocate), then write.
//!
//! The plan walks the view once, refuses what must not ship (symlinks that leave the view, device
//! files, names that are not plain relative paths), reads the program headers of every ELF file to
//! work out its new RPATH, and fixes every entry's header. Nothing is written until the plan is
//! whole, so a bad view leaves no output behind. Writing then streams every file once: bytes are
//! patched (RPATHs) as they pass, scanned for the build prefix, framed as tar and gzipped in
//! parallel straight into the output file, with the sha256 computed on the way out.
//!
//! Determinism: entries sorted by name, owner `root` (0/0), modes normalised to 0755/0644 (0777 for
//! symlinks), mtimes clamped to `SOURCE_DATE_EPOCH` (default: the newest mtime in the view, so the
//! same view always gives the same bytes), gzip headers without a time stamp. `BUILDINFO.json`
//! comes last, because it records what the pass found.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memchr::memmem::Finder;

use sf_core::bad_input;
use sf_core::fsutil::AtomicFile;

use crate::buildinfo::{BuildInfo, Relocation};
use crate::elf;
use crate::pargz::{GzOptions, GzSummary, ParGzWriter};
use crate::relocate::{resolve_link, Mapped, Relocator, Unresolved};

/// The top-level folder holding the view in the tarball.
pub const VIEW_DIR: &str = "view";
/// The build-info file at the top of the tarball.
pub const BUILDINFO: &str = "BUILDINFO.json";

/// A file the tarball carries besides the view (modulefile, install assets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraFile {
    /// Path in the tarball, e.g. `modules/slurm/25.11-noble.lua`.
    pub path: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

/// Everything a pack needs.
#[derive(Clone, Debug)]
pub struct PackInput {
    pub view: PathBuf,
    /// Absolute paths the build used for the install tree and the view (RPATHs and symlinks
    /// under them are relocated; text files holding them are listed in BUILDINFO).
    pub build_prefixes: Vec<String>,
    pub extras: Vec<ExtraFile>,
    /// Build facts; the relocation part and the dates are filled in by the pack.
    pub buildinfo: BuildInfo,
    /// Clamp mtimes here (seconds since the epoch); default: the newest mtime in the view.
    pub source_date_epoch: Option<u64>,
    pub gzip: GzOptions,
}

/// What a pack produced.
#[derive(Clone, Debug)]
pub struct PackReport {
    pub path: PathBuf,
    pub gzip: GzSummary,
    pub entries: u64,
    pub buildinfo: BuildInfo,
    /// Symlinks of the view (`view/...`) that point at nothing in it: shipped as they are, and
    /// worth a warning (an unbuilt or excluded dependency, say).
    pub dangling_links: Vec<String>,
}

#[derive(Debug)]
enum Kind {
    Dir,
    /// Source path, size, executable, in-place patches (offset, bytes), and (device, inode) when
    /// the file has other hard links.
    File {
        src: PathBuf,
        size: u64,
        exec: bool,
        patches: Vec<(u64, Vec<u8>)>,
        inode: Option<(u64, u64)>,
    },
    /// Another name of an earlier file (a hard link in the view): stored once, as tar does.
    HardLink {
        target: String,
        exec: bool,
    },
    Link {
        target: String,
    },
    Extra {
        index: usize,
    },
}

#[derive(Debug)]
struct Entry {
    name: String,
    mtime: u64,
    kind: Kind,
}

/// The checked, relocated plan of a tarball, before any byte is written.
#[derive(Debug)]
pub struct Plan {
    entries: Vec<Entry>,
    epoch: u64,
    relocation: Relocation,
    prefixes: Vec<String>,
    dangling_links: Vec<String>,
}

impl Plan {
    /// Entry names in archive order (BUILDINFO.json excluded: it is appended last).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn relocation(&self) -> &Relocation {
        &self.relocation
    }
}

/// Walk and check the view, relocate, and order the entries.
pub fn plan(input: &PackInput) -> Result<Plan> {
    let view = &input.view;
    let meta = fs::metadata(view)
        .map_err(|e| bad_input(format!("the view {} cannot be read: {e}", view.display())))?;
    if !meta.is_dir() {
        return Err(bad_input(format!(
            "the view {} is not a directory",
            view.display()
        )));
    }
    let reloc = Relocator::new(view, &input.build_prefixes);
    let mut entries = Vec::new();
    let mut relocation = Relocation {
        build_prefixes: reloc.prefixes().to_vec(),
        ..Default::default()
    };
    let mut newest = 0u64;
    entries.push(Entry {
        name: format!("{VIEW_DIR}/"),
        mtime: mtime_of(&meta),
        kind: Kind::Dir,
    });
    newest = newest.max(mtime_of(&meta));
    walk(view, "", &reloc, &mut entries, &mut relocation, &mut newest)?;
    let dangling_links = check_links(&entries)?;

    let mut dirs = BTreeSet::new();
    for (index, extra) in input.extras.iter().enumerate() {
        check_name(&extra.path)
            .map_err(|e| bad_input(format!("extra file {:?}: {e}", extra.path)))?;
        if extra.path == BUILDINFO || extra.path.starts_with(&format!("{VIEW_DIR}/")) {
            return Err(bad_input(format!(
                "extra file {:?} would replace part of the view or BUILDINFO.json",
                extra.path
            )));
        }
        let mut p = extra.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(format!("{parent}/"));
            p = parent;
        }
        entries.push(Entry {
            name: extra.path.clone(),
            mtime: u64::MAX,
            kind: Kind::Extra { index },
        });
    }
    for d in dirs {
        entries.push(Entry {
            name: d,
            mtime: u64::MAX,
            kind: Kind::Dir,
        });
    }
    let epoch = input.source_date_epoch.unwrap_or(newest);
    for e in &mut entries {
        e.mtime = e.mtime.min(epoch);
    }
    // Sort on the name without its trailing slash, so a directory comes right before its content.
    entries.sort_by(|a, b| {
        a.name
            .trim_end_matches('/')
            .cmp(b.name.trim_end_matches('/'))
    });
    if let Some(w) = entries
        .windows(2)
        .find(|w| w[0].name.trim_end_matches('/') == w[1].name.trim_end_matches('/'))
    {
        return Err(bad_input(format!("two entries are named {:?}", w[0].name)));
    }
    // The first name of a hard-linked file (in archive order) carries the data; later names link
    // to it, so the archive holds its bytes once. Only when their relocated bytes agree: an ELF
    // file linked from directories of different depth gets a different $ORIGIN path in each.
    type FirstName = (String, Vec<(u64, Vec<u8>)>);
    let mut first_names: std::collections::HashMap<(u64, u64), FirstName> =
        std::collections::HashMap::new();
    for e in &mut entries {
        if let Kind::File {
            inode: Some(inode),
            exec,
            patches,
            ..
        } = &e.kind
        {
            match first_names.get(inode) {
                Some((target, first_patches)) if first_patches == patches => {
                    let (target, exec) = (target.clone(), *exec);
                    relocation.elf_relocated.retain(|n| n != &e.name);
                    e.kind = Kind::HardLink { target, exec };
                }
                Some(_) => {}
                None => {
                    first_names.insert(*inode, (e.name.clone(), patches.clone()));
                }
            }
        }
    }
    relocation.elf_relocated.sort();
    Ok(Plan {
        entries,
        epoch,
        relocation,
        prefixes: reloc.prefixes().to_vec(),
        dangling_links,
    })
}

fn mtime_of(m: &fs::Metadata) -> u64 {
    u64::try_from(m.mtime()).unwrap_or(0)
}

/// A tar member name we are willing to write: relative, no `.`/`..`/empty segments, no NUL.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('/') {
        return Err("must be a relative path".into());
    }
    if name.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("has an empty, '.' or '..' segment".into());
    }
    Ok(())
}

fn walk(
    root: &Path,
    rel: &str,
    reloc: &Relocator,
    out: &mut Vec<Entry>,
    relocation: &mut Relocation,
    newest: &mut u64,
) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    for name in names {
        let name = name
            .into_string()
            .map_err(|n| bad_input(format!("{}: the name {n:?} is not UTF-8", dir.display())))?;
        // A newline (or any control character) in a name breaks SHA256SUMS-style listings,
        // logs and shell loops of everyone who unpacks it.
        if name.chars().any(char::is_control) {
            return Err(bad_input(format!(
                "{}: the name {name:?} holds a control character (a newline, say); names in a view must be printable",
                dir.display()
            )));
        }
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = root.join(&child_rel);
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let mtime = mtime_of(&meta);
        *newest = (*newest).max(mtime);
        let ft = meta.file_type();
        let archive_name = format!("{VIEW_DIR}/{child_rel}");
        if ft.is_dir() {
            out.push(Entry {
                name: format!("{archive_name}/"),
                mtime,
                kind: Kind::Dir,
            });
            walk(root, &child_rel, reloc, out, relocation, newest)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path)
                .with_context(|| format!("reading the link {}", path.display()))?;
            let target = target.into_os_string().into_string().map_err(|t| {
                bad_input(format!("the link {child_rel} has a non-UTF-8 target {t:?}"))
            })?;
            let target = link_target(reloc, &child_rel, &target)?;
            out.push(Entry {
                name: archive_name,
                mtime,
                kind: Kind::Link { target },
            });
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let patches = relocate_elf(reloc, &path, &child_rel, relocation)?;
            let inode = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
            out.push(Entry {
                name: archive_name,
                mtime,
                kind: Kind::File {
                    src: path,
                    size: meta.len(),
                    exec,
                    patches,
                    inode,
                },
            });
        } else {
            return Err(bad_input(format!(
                "view/{child_rel} is a device, socket or pipe; a view holds only files, directories and symlinks"
            )));
        }
    }
    Ok(())
}

/// The target a symlink gets in the tarball: relative links as they are (whether they stay in
/// the view is checked once every link is known, see [`check_links`]), absolute links into a build
/// prefix or the view made relative; anything else refused.
fn link_target(reloc: &Relocator, link: &str, target: &str) -> Result<String> {
    let dir = link.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    if target.is_empty() {
        return Err(bad_input(format!(
            "the symlink view/{link} has an empty target"
        )));
    }
    if !target.starts_with('/') {
        return Ok(target.to_string());
    }
    match reloc.map_link(link, target) {
        Mapped::InView(to) => {
            let rel = crate::relocate::origin_relative(dir, &to);
            let rel = rel.trim_start_matches("$ORIGIN").trim_start_matches('/');
            Ok(if rel.is_empty() { ".".to_string() } else { rel.to_string() })
        }
        Mapped::Gone => Err(bad_input(format!(
            "the symlink view/{link} -> {target} points at nothing: its target is under a build \
             prefix but has no counterpart in the view (a build-only dependency, or a file the view \
             left out); remove the link or add its target to the view"
        ))),
        Mapped::Outside => Err(bad_input(format!(
            "the symlink view/{link} -> {target} points outside the view: an absolute target must \
             be under a build prefix ({}); build the view with link_type copy or hardlink",
            reloc.prefixes().join(", ")
        ))),
    }
}

/// Follow every symlink of the view through the others, as the kernel will after extraction,
/// and refuse any that leaves the view or loops. Checking each link's own text is not enough: a
/// link can climb through another link that points higher up. Returns the links that resolve to
/// nothing in the view (`view/NAME -> TARGET`).
fn check_links(entries: &[Entry]) -> Result<Vec<String>> {
    let present: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|e| {
            e.name
                .trim_end_matches('/')
                .strip_prefix(&format!("{VIEW_DIR}/"))
        })
        .collect();
    let mut dangling = Vec::new();
    let links: std::collections::HashMap<String, String> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Link { target } => e
                .name
                .strip_prefix(&format!("{VIEW_DIR}/"))
                .map(|n| (n.to_string(), target.clone())),
            _ => None,
        })
        .collect();
    let mut names: Vec<&String> = links.keys().collect();
    names.sort();
    for name in names {
        let target = &links[name];
        match resolve_link(&links, name) {
            Ok(at) => {
                if !at.is_empty() && !present.contains(at.as_str()) {
                    dangling.push(format!("view/{name} -> {target}"));
                }
            }
            Err(why @ Unresolved::Escapes { .. }) => {
                return Err(bad_input(format!(
                    "the symlink view/{name} -> {target} escapes the view: it {why}; links must stay inside it"
                )))
            }
            Err(why) => {
                return Err(bad_input(format!(
                    "the symlink view/{name} -> {target} cannot be followed inside the view: it {why}"
                )))
            }
        }
    }
    Ok(dangling)
}

/// In-place RPATH patches for one file, if it is ELF with build-tree entries.
fn relocate_elf(
    reloc: &Relocator,
    path: &Path,
    rel: &str,
    relocation: &mut Relocation,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let rpaths = match elf::read_rpaths(&mut f) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(Vec::new()),
        // Files that start like ELF but are not (test data, truncated objects) ship untouched.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let mut patches = Vec::new();
    for r in rpaths {
        let old = String::from_utf8_lossy(&r.value).into_owned();
        let (new, dropped) = reloc.rewrite_rpath(rel, &old);
        if new == old {
            continue;
        }
        let bytes =
            elf::in_place(&r, new.as_bytes()).map_err(|e| anyhow::anyhow!("view/{rel}: {e}"))?;
        relocation.rpaths_dropped += dropped as u64;
        relocation.elf_relocated.push(format!("{VIEW_DIR}/{rel}"));
        patches.push((r.offset, bytes));
    }
    Ok(patches)
}

/// Pack the view into `out` (refusing an existing file unless `force`). The file appears whole
/// or not at all.
pub fn pack(input: &PackInput, out: &Path, force: bool) -> Result<PackReport> {
    if !force && out.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "{} already exists; pass --force to replace it",
            out.display()
        )));
    }
    let plan = plan(input)?;
    write(input, &plan, out)
}

/// Write a planned tarball.
pub fn write(input: &PackInput, plan: &Plan, out: &Path) -> Result<PackReport> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = AtomicFile::create(out).with_context(|| format!("creating {}", out.display()))?;
    let gz = ParGzWriter::new(file, input.gzip)?;
    let mut tar = tar::Builder::new(gz);
    let finders: Vec<Finder<'static>> = plan
        .prefixes
        .iter()
        .map(|p| Finder::new(p.as_bytes()).into_owned())
        .collect();
    let mut prefix_files = Vec::new();
    let mut entries = 0u64;
    for e in &plan.entries {
        let mut h = header(e.mtime);
        let name = e.name.trim_end_matches('/');
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, format!("{name}/"), io::empty())?;
            }
            Kind::Link { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, name, target)
                    .with_context(|| format!("writing the link {name}"))?;
            }
            Kind::Extra { index } => {
                let x = &input.extras[*index];
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if x.executable { 0o755 } else { 0o644 });
                h.set_size(x.bytes.len() as u64);
                tar.append_data(&mut h, name, &x.bytes[..])?;
            }
            Kind::HardLink { target, exec } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(if *exec { 0o755 } else { 0o644 });
                h.set_size(0);
                tar.append_link(&mut h, name, target)
                    .with_context(|| format!("writing the hard link {name}"))?;
            }
            Kind::File {
                src,
                size,
                exec,
                patches,
                ..
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if *exec { 0o755 } else { 0o644 });
                h.set_size(*size);
                let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
                let mut reader = BufReader::with_capacity(
                    256 * 1024,
                    StreamedFile {
                        inner: f,
                        pos: 0,
                        size: *size,
                        patches,
                        finders: &finders,
                        tail: Vec::new(),
                        found: false,
                    },
                );
                tar.append_data(&mut h, name, &mut reader)
                    .with_context(|| format!("packing {}", src.display()))?;
                if reader.get_ref().found {
                    prefix_files.push(name.to_string());
                }
            }
        }
        entries += 1;
    }
    let mut buildinfo = input.buildinfo.clone();
    buildinfo.source_date_epoch = plan.epoch;
    buildinfo.build_date = sf_core::record::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(plan.epoch),
    );
    buildinfo.relocation = plan.relocation.clone();
    buildinfo.relocation.files_with_build_prefix = prefix_files;
    let mut json = serde_json::to_vec_pretty(&buildinfo)?;
    json.push(b'\n');
    let mut h = header(plan.epoch);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(json.len() as u64);
    tar.append_data(&mut h, BUILDINFO, &json[..])?;
    entries += 1;
    let gz = tar.into_inner().context("finishing the tar stream")?;
    let (file, summary) = gz
        .finish()
        .with_context(|| format!("writing {}", out.display()))?;
    file.commit()
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(PackReport {
        path: out.to_path_buf(),
        gzip: summary,
        entries,
        buildinfo,
        dangling_links: plan.dangling_links.clone(),
    })
}

fn header(mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    // Names as well as ids, so that `tar -tv` shows root and extraction as root maps to root.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// A file's bytes as they go into the tarball: RPATH patches applied, scanned for build
/// prefixes, and checked to be exactly the size the header promised.
struct StreamedFile<'a> {
    inner: File,
    pos: u64,
    size: u64,
    patches: &'a [(u64, Vec<u8>)],
    finders: &'a [Finder<'static>],
    tail: Vec<u8>,
    found: bool,
}

impl Read for StreamedFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.size - self.pos) as usize);
        let n = if want == 0 {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        if n == 0 {
            if self.pos != self.size || self.inner.read(&mut [0u8; 1])? != 0 {
                return Err(io::Error::other(format!(
                    "the file changed size while being packed ({} bytes expected)",
                    self.size
                )));
            }
            return Ok(0);
        }
        let chunk = &mut buf[..n];
        for (off, bytes) in self.patches {
            let (start, end) = (*off, *off + bytes.len() as u64);
            let (lo, hi) = (start.max(self.pos), end.min(self.pos + n as u64));
            if lo < hi {
                chunk[(lo - self.pos) as usize..(hi - self.pos) as usize]
                    .copy_from_slice(&bytes[(lo - start) as usize..(hi - start) as usize]);
            }
        }
        self.pos += n as u64;
        if !self.found && !self.finders.is_empty() {
            self.scan(n, buf);
        }
        Ok(n)
    }
}

impl StreamedFile<'_> {
    fn scan(&mut self, n: usize, buf: &[u8]) {
        let chunk = &buf[..n];
        let longest = self
            .finders
            .iter()
            .map(|f| f.needle().len())
            .max()
            .unwrap_or(0);
        // A match may straddle two reads: search the end of the last read joined to this one.
        let mut seam = std::mem::take(&mut self.tail);
        seam.extend_from_slice(&chunk[..chunk.len().min(longest)]);
        self.found = self
            .finders
            .iter()
            .any(|f| f.find(chunk).is_some() || f.find(&seam).is_some());
        let keep = longest.saturating_sub(1).min(chunk.len());
        self.tail = chunk[chunk.len() - keep..].to_vec();
    }
}

impl std::fmt::Debug for StreamedFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedFile")
            .field("pos", &self.pos)
            .field("size", &self.size)
            .finish()
    }
}

/// An extra file from its path in the tarball and its content.
pub fn extra(path: &str, bytes: impl Into<Vec<u8>>, executable: bool) -> ExtraFile {
    ExtraFile {
        path: path.to_string(),
        bytes: bytes.into(),
        executable,
    }
}
