//! Safe extraction of a `.tar.gz` into a fresh directory.
//!
//! Two passes: the first reads every header and refuses the archive if any member could land
//! outside the destination (absolute names, `..`, symlinks whose target leaves the root, members
//! below a symlink, hard links to anything but an earlier regular file, device files, duplicates),
//! so a refused archive changes nothing. The second writes it. Modes keep their permission bits
//! only (no set-id bits); owners are the extracting user's.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use sf_core::bad_input;

use crate::relocate::{resolve_link, Unresolved};

/// What an extraction wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberKind {
    Dir,
    File,
    Link,
    HardLink,
}

fn open(tarball: &Path) -> Result<tar::Archive<flate2::read::MultiGzDecoder<BufReader<File>>>> {
    let f = File::open(tarball).map_err(|e| {
        bad_input(format!(
            "cannot open the tarball {}: {e}",
            tarball.display()
        ))
    })?;
    Ok(tar::Archive::new(flate2::read::MultiGzDecoder::new(
        BufReader::with_capacity(256 * 1024, f),
    )))
}

/// A member name made safe: relative, no `..`, no empty segments; a leading `./` and a trailing
/// `/` are dropped. Errors say why.
pub fn safe_name(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| format!("{raw:?} is not UTF-8"))?;
    if s.starts_with('/') {
        return Err(format!("{s:?} is an absolute path"));
    }
    let parts: Vec<&str> = s
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return Err(format!("{s:?} names no file"));
    }
    if parts.contains(&"..") {
        return Err(format!("{s:?} contains '..'"));
    }
    Ok(parts.join("/"))
}

fn refuse(tarball: &Path, what: String) -> anyhow::Error {
    bad_input(format!("refusing to extract {}: {what}", tarball.display()))
}

/// Check every member without writing anything. Returns the number of members.
pub fn check(tarball: &Path) -> Result<u64> {
    check_members(tarball, &mut open(tarball)?, |_, _| Ok(()))
}

/// [`check`] of a `.tar.gz` stream (`tarball` names it in errors): what the fuzzer drives.
pub fn check_stream<R: io::Read>(tarball: &Path, stream: R) -> Result<u64> {
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(stream));
    check_members(tarball, &mut ar, |_, entry| {
        io::copy(entry, &mut io::sink())
            .map(|_| ())
            .map_err(|e| bad_input(format!("{} is corrupt: {e}", tarball.display())))
    })
}

/// The member checks of [`check`] over any tar stream; `each` sees every regular file (its safe
/// name and the entry, whose data it may read) as it goes by. `tarball` names the archive in
/// errors.
pub(crate) fn check_members<R: io::Read>(
    tarball: &Path,
    ar: &mut tar::Archive<R>,
    mut each: impl FnMut(&str, &mut tar::Entry<'_, R>) -> Result<()>,
) -> Result<u64> {
    let mut seen: HashMap<String, MemberKind> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut count = 0u64;
    let entries = ar.entries().map_err(|e| {
        bad_input(format!(
            "{} is not a readable tar.gz: {e}",
            tarball.display()
        ))
    })?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| bad_input(format!("{} is corrupt: {e}", tarball.display())))?;
        let name = safe_name(&entry.path_bytes()).map_err(|e| refuse(tarball, e))?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Directory => MemberKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::File,
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = std::str::from_utf8(&target).map_err(|_| refuse(tarball, format!("{name:?} has a non-UTF-8 link")))?;
                if target.starts_with('/') || target.is_empty() {
                    return Err(refuse(tarball, format!("the symlink {name:?} -> {target:?} escapes the destination")));
                }
                // Whether it stays inside is checked once every link is known (see below).
                links.insert(name.clone(), target.to_string());
                MemberKind::Link
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = safe_name(&target).map_err(|e| refuse(tarball, format!("hard link {name:?}: {e}")))?;
                if seen.get(&target) != Some(&MemberKind::File) {
                    return Err(refuse(tarball, format!("the hard link {name:?} does not point to an earlier regular file")));
                }
                MemberKind::HardLink
            }
            other => return Err(refuse(tarball, format!("{name:?} is a {other:?} entry; only files, directories and links are extracted"))),
        };
        if let Some(prev) = seen.insert(name.clone(), kind) {
            if !(prev == MemberKind::Dir && kind == MemberKind::Dir) {
                return Err(refuse(tarball, format!("{name:?} appears twice")));
            }
        }
        if kind == MemberKind::File {
            each(&name, &mut entry)?;
        }
        count += 1;
    }
    // Now that every link is known: nothing may lie below a symlink, wherever the link comes in
    // the archive (that is how a link's target would be followed out of the root), and link
    // chains (`esc -> a/sh/..` with `a/sh -> ../..`) are followed as the kernel will.
    let mut names: Vec<&String> = seen.keys().collect();
    names.sort();
    for name in names {
        let mut p = name.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if links.contains_key(parent) {
                return Err(refuse(
                    tarball,
                    format!("{name:?} lies below the symlink {parent:?}"),
                ));
            }
            p = parent;
        }
        if let Some(target) = links.get(name) {
            match resolve_link(&links, name) {
                Ok(_) => {}
                Err(why @ Unresolved::Loop) => {
                    return Err(refuse(
                        tarball,
                        format!("the symlink {name:?} -> {target:?} {why}"),
                    ))
                }
                Err(why) => {
                    return Err(refuse(
                        tarball,
                        format!(
                            "the symlink {name:?} -> {target:?} escapes the destination: it {why}"
                        ),
                    ))
                }
            }
        }
    }
    Ok(count)
}

/// Check, then extract `tarball` into `dest`, which must be missing or empty.
pub fn extract(tarball: &Path, dest: &Path) -> Result<ExtractReport> {
    if let Ok(mut rd) = fs::read_dir(dest) {
        if rd.next().is_some() {
            return Err(bad_input(format!(
                "the destination {} is not empty; extract into a fresh directory",
                dest.display()
            )));
        }
    } else if dest.symlink_metadata().is_ok() {
        return Err(bad_input(format!(
            "the destination {} exists and is not a directory",
            dest.display()
        )));
    }
    check(tarball)?;
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut report = ExtractReport::default();
    let mut dir_modes = Vec::new();
    let mut ar = open(tarball)?;
    for entry in ar.entries()? {
        let mut entry = entry?;
        let name = safe_name(&entry.path_bytes()).map_err(anyhow::Error::msg)?;
        let path = dest.join(&name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if !path.is_dir() {
                    fs::create_dir(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                }
                dir_modes.push((path, mode));
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = std::str::from_utf8(&target).map_err(anyhow::Error::msg)?;
                std::os::unix::fs::symlink(target, &path)
                    .with_context(|| format!("creating the link {}", path.display()))?;
            }
            tar::EntryType::Link => {
                let target = safe_name(&entry.link_name_bytes().unwrap_or_default())
                    .map_err(anyhow::Error::msg)?;
                fs::hard_link(dest.join(&target), &path)
                    .with_context(|| format!("linking {}", path.display()))?;
            }
            _ => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode | 0o200)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                report.bytes += io::copy(&mut entry, &mut out)
                    .with_context(|| format!("writing {}", path.display()))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                report.files += 1;
            }
        }
        report.entries += 1;
    }
    // Directory modes last, deepest first, so a read-only directory is filled before it closes.
    for (path, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700))?;
    }
    Ok(report)
}
