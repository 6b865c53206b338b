//! Where a build-time path lands in the view, and the `$ORIGIN`-relative RPATH that reaches it.
//!
//! At build time binaries carry absolute RPATHs into the install tree (one prefix per package,
//! `{root}/{arch}/{compiler}/{name}-{version}-{hash}/lib`) or into the view's build-time location.
//! The view merges every package's `lib/`, `lib64/`, `lib/slurm/`... into one tree, so a path
//! under a build prefix maps to the longest tail of it that exists in the view. An entry under a
//! build prefix with no counterpart in the view (a build-only dependency) is dropped: after
//! relocation it would point at nothing.

use std::path::Path;

/// Maps build-time paths into the view being packed.
#[derive(Clone, Debug)]
pub struct Relocator<'a> {
    view: &'a Path,
    /// Normalised (no trailing slash), longest first so the most specific prefix wins.
    prefixes: Vec<String>,
}

/// What became of one absolute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// Not under a build prefix: left as it is (system paths such as `/usr/lib`).
    Outside,
    /// Under a build prefix, and this view-relative path exists ("" is the view root).
    InView(String),
    /// Under a build prefix, with nothing in the view to point at.
    Gone,
}

impl<'a> Relocator<'a> {
    pub fn new(view: &'a Path, prefixes: &[String]) -> Self {
        let mut prefixes: Vec<String> = prefixes
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .filter(|p| p.starts_with('/') && p.len() > 1)
            .collect();
        prefixes.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        prefixes.dedup();
        Relocator { view, prefixes }
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Map an absolute path.
    pub fn map(&self, path: &str) -> Mapped {
        self.map_from(path, None)
    }

    /// Map the absolute target of the symlink at view-relative `link`. The longest tail that
    /// exists can be the link itself (its real target was never merged into the view); that is
    /// a link pointing at nothing, not at itself, so it maps to [`Mapped::Gone`].
    pub fn map_link(&self, link: &str, target: &str) -> Mapped {
        self.map_from(target, Some(link))
    }

    fn map_from(&self, path: &str, own: Option<&str>) -> Mapped {
        // Spack pads relocated paths with slashes (`////opt/slurm/...`) to keep their length.
        let collapsed = collapse_slashes(path);
        let path = collapsed.trim_end_matches('/');
        let Some(rest) = self.prefixes.iter().find_map(|p| {
            path.strip_prefix(p.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))
        }) else {
            return Mapped::Outside;
        };
        let parts: Vec<&str> = rest
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        if parts.is_empty() {
            return Mapped::InView(String::new());
        }
        if parts.contains(&"..") {
            return Mapped::Gone;
        }
        // Longest tail first, never the empty tail (that would send every package root to the
        // view root).
        for i in 0..parts.len() {
            let tail = parts[i..].join("/");
            if self.view.join(&tail).symlink_metadata().is_ok() {
                if own == Some(tail.as_str()) {
                    return Mapped::Gone;
                }
                return Mapped::InView(tail);
            }
        }
        Mapped::Gone
    }

    /// The new RPATH for a file at view-relative `file` (e.g. `bin/sinfo`) from its old value:
    /// build-tree entries become `$ORIGIN/...`, others stay, duplicates go. Also returns how many
    /// entries were dropped.
    pub fn rewrite_rpath(&self, file: &str, old: &str) -> (String, usize) {
        let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let mut out: Vec<String> = Vec::new();
        let mut dropped = 0;
        for entry in old.split(':').filter(|e| !e.is_empty()) {
            let new = if entry.starts_with('/') {
                match self.map(entry) {
                    Mapped::Outside => entry.to_string(),
                    Mapped::InView(target) => origin_relative(dir, &target),
                    Mapped::Gone => {
                        dropped += 1;
                        continue;
                    }
                }
            } else {
                entry.to_string()
            };
            if !out.contains(&new) {
                out.push(new);
            }
        }
        (out.join(":"), dropped)
    }
}

/// `path` with every run of slashes made one.
fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c != '/' || !out.ends_with('/') {
            out.push(c);
        }
    }
    out
}

/// `$ORIGIN` plus the relative path from view-relative directory `from` to `to`.
pub fn origin_relative(from: &str, to: &str) -> String {
    let a: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let b: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts = vec!["$ORIGIN".to_string()];
    parts.extend(std::iter::repeat_n("..".to_string(), a.len() - common));
    parts.extend(b[common..].iter().map(|s| s.to_string()));
    parts.join("/")
}

/// How many symlinks one resolution may pass through before it counts as a loop (Linux's limit).
pub const MAX_LINK_HOPS: usize = 40;

/// Why a symlink cannot be followed inside its tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// It climbs above the root; `via` names the symlink it passed through to get there, if any.
    Escapes { via: Option<String> },
    /// It reaches a symlink with an absolute target (`via -> target`).
    Absolute { via: String, target: String },
    /// More than [`MAX_LINK_HOPS`] symlinks: a loop.
    Loop,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolved::Escapes { via: None } => f.write_str("climbs above the root"),
            Unresolved::Escapes { via: Some(v) } => {
                write!(f, "climbs above the root through the symlink {v:?}")
            }
            Unresolved::Absolute { via, target } => write!(
                f,
                "passes through the symlink {via:?}, which points at the absolute path {target:?}"
            ),
            Unresolved::Loop => write!(
                f,
                "passes through more than {MAX_LINK_HOPS} symlinks (a loop)"
            ),
        }
    }
}

/// Resolve the symlink named `link` (a root-relative path) as the kernel would, following every
/// symlink of the tree on the way (`links`: root-relative name -> target, the link itself
/// included). Returns the root-relative path it finally names ("" is the root). A check on the
/// link's own text is not enough: `esc -> a/sh/..` stays inside textually but leaves the root
/// when `a/sh -> ../..`.
pub fn resolve_link<S: std::hash::BuildHasher>(
    links: &std::collections::HashMap<String, String, S>,
    link: &str,
) -> Result<String, Unresolved> {
    use std::collections::VecDeque;
    let Some(target) = links.get(link) else {
        return Ok(link.to_string());
    };
    if target.starts_with('/') {
        return Err(Unresolved::Absolute {
            via: link.to_string(),
            target: target.clone(),
        });
    }
    let mut stack: Vec<String> = link
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    stack.pop();
    let mut todo: VecDeque<String> = target.split('/').map(str::to_string).collect();
    let mut hops = 0usize;
    let mut via: Option<String> = None;
    while let Some(part) = todo.pop_front() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(Unresolved::Escapes { via });
                }
            }
            _ => {
                stack.push(part);
                let here = stack.join("/");
                if let Some(next) = links.get(&here) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(Unresolved::Loop);
                    }
                    if next.starts_with('/') {
                        return Err(Unresolved::Absolute {
                            via: here,
                            target: next.clone(),
                        });
                    }
                    stack.pop();
                    for p in next.split('/').rev() {
                        todo.push_front(p.to_string());
                    }
                    via = Some(here);
                }
            }
        }
    }
    Ok(stack.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_paths() {
        assert_eq!(origin_relative("bin", "lib"), "$ORIGIN/../lib");
        assert_eq!(origin_relative("lib", "lib"), "$ORIGIN");
        assert_eq!(origin_relative("lib/slurm", "lib"), "$ORIGIN/..");
        assert_eq!(origin_relative("", "lib64"), "$ORIGIN/lib64");
        assert_eq!(origin_relative("sbin", "lib/slurm"), "$ORIGIN/../lib/slurm");
    }

    #[test]
    fn maps_the_longest_tail_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib/slurm")).unwrap();
        let root = "/opt/software/__spack_path_placeholder__/__spack_path_placeh".to_string();
        let r = Relocator::new(dir.path(), &[root.clone(), "/opt/view/".into()]);
        assert_eq!(
            r.map(&format!(
                "{root}/linux-x86_64/gcc-13/slurm-25.11-abc/lib/slurm"
            )),
            Mapped::InView("lib/slurm".into())
        );
        assert_eq!(
            r.map(&format!("{root}/linux-x86_64/gcc-13/munge-0.5-xyz/lib")),
            Mapped::InView("lib".into())
        );
        assert_eq!(
            r.map(&format!("{root}/linux-x86_64/gcc-13/cmake-3-q/share")),
            Mapped::Gone
        );
        assert_eq!(r.map("/opt/view/lib"), Mapped::InView("lib".into()));
        assert_eq!(r.map("/opt/viewer/lib"), Mapped::Outside);
        assert_eq!(r.map("/usr/lib64"), Mapped::Outside);
        let old = format!("{root}/x/y/slurm-1-a/lib:/usr/lib:{root}/x/y/munge-1-b/lib:{root}/x/y/cmake/share:$ORIGIN");
        assert_eq!(
            r.rewrite_rpath("bin/sinfo", &old),
            ("$ORIGIN/../lib:/usr/lib:$ORIGIN".to_string(), 1)
        );
    }

    /// What a Spack view's binaries carry: RPATHs into `._view/<hash>` (where Spack keeps the
    /// view's tree), padded at the front with slashes to the length of the install prefix.
    #[test]
    fn slash_padded_view_store_paths_map_into_the_view() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib/slurm")).unwrap();
        let r = Relocator::new(dir.path(), &["/opt/slurm/._view".into()]);
        let pad = "/".repeat(96);
        let old = format!(
            "{pad}opt/slurm/._view/ltgjs4fv/lib/slurm:{pad}opt/slurm/._view/ltgjs4fv/lib:/opt/slurm/._view/ltgjs4fv/lib"
        );
        assert_eq!(
            r.rewrite_rpath("bin/sinfo", &old),
            ("$ORIGIN/../lib/slurm:$ORIGIN/../lib".to_string(), 0)
        );
        assert_eq!(r.map("//usr//lib"), Mapped::Outside);
    }

    fn links(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn relative_links() {
        let l = links(&[
            ("lib/libfoo.so", "libfoo.so.1"),
            ("lib/slurm/x", "../../bin/x"),
            ("lib/evil", "../../etc/passwd"),
        ]);
        assert_eq!(
            resolve_link(&l, "lib/libfoo.so").as_deref(),
            Ok("lib/libfoo.so.1")
        );
        assert_eq!(resolve_link(&l, "lib/slurm/x").as_deref(), Ok("bin/x"));
        assert_eq!(
            resolve_link(&l, "lib/evil"),
            Err(Unresolved::Escapes { via: None })
        );
    }

    #[test]
    fn chains_are_followed_through_every_link() {
        let l = links(&[
            ("a/b/c/sh", "../../.."),
            ("esc", "a/b/c/sh/../.."),
            ("ok", "a/b/c/sh/lib"),
            ("lib/libx.so", "libx.so.1"),
            ("lib/libx.so.1", "libx.so.1.2"),
            ("bin/libx", "../lib/libx.so"),
            ("abs", "/etc"),
            ("via_abs", "abs/passwd"),
            ("loop1", "loop2"),
            ("loop2", "loop1"),
        ]);
        assert_eq!(resolve_link(&l, "a/b/c/sh").as_deref(), Ok(""));
        assert_eq!(
            resolve_link(&l, "esc"),
            Err(Unresolved::Escapes {
                via: Some("a/b/c/sh".into())
            })
        );
        assert_eq!(resolve_link(&l, "ok").as_deref(), Ok("lib"));
        assert_eq!(
            resolve_link(&l, "bin/libx").as_deref(),
            Ok("lib/libx.so.1.2")
        );
        assert!(matches!(
            resolve_link(&l, "via_abs"),
            Err(Unresolved::Absolute { via, .. }) if via == "abs"
        ));
        assert_eq!(resolve_link(&l, "loop1"), Err(Unresolved::Loop));
    }

    #[test]
    fn a_dangling_link_does_not_map_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::os::unix::fs::symlink(
            "/opt/b/pkg-1-abc/lib/libx.so",
            dir.path().join("lib/libx.so"),
        )
        .unwrap();
        let r = Relocator::new(dir.path(), &["/opt/b".into(), "/opt/slurm/view".into()]);
        assert_eq!(
            r.map_link("lib/libx.so", "/opt/b/pkg-1-abc/lib/libx.so"),
            Mapped::Gone
        );
        assert_eq!(
            r.map_link("bin/other", "/opt/b/pkg-1-abc/lib/libx.so"),
            Mapped::InView("lib/libx.so".into())
        );
        assert_eq!(
            r.map_link("bin/v", "/opt/slurm/view"),
            Mapped::InView(String::new())
        );
    }
}
