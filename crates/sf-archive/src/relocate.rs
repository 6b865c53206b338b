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
        let path = path.trim_end_matches('/');
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

/// Resolve a relative symlink target lexically from view-relative directory `dir`; `None` when it
/// climbs out of the view.
pub fn resolve_relative(dir: &str, target: &str) -> Option<String> {
    let mut stack: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            p => stack.push(p),
        }
    }
    Some(stack.join("/"))
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

    #[test]
    fn relative_links() {
        assert_eq!(
            resolve_relative("lib", "libfoo.so.1").as_deref(),
            Some("lib/libfoo.so.1")
        );
        assert_eq!(
            resolve_relative("lib/slurm", "../../bin/x").as_deref(),
            Some("bin/x")
        );
        assert_eq!(resolve_relative("lib", "../../etc/passwd"), None);
    }
}
