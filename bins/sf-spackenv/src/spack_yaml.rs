//! The Spack environment (`spack.yaml`) of one cell.
//!
//! The document is built as an ordered YAML mapping and serialised once, so the same cell and data
//! files always give the same bytes. It uses only keys Spack v1.0's configuration schema knows
//! (`lib/spack/spack/schema/*.py`); the tests walk the output against that key set.
//!
//! Pipelines differ in what they build: `deps` builds Slurm's dependencies (no Slurm, no view, no
//! modules); `version` and `tarball` build Slurm, list the same dependencies again so the
//! concretizer reuses the deps mirror's binaries, and add the merged view and the Lmod config.

use serde_yaml::{Mapping, Value};

use crate::cell::CheckedCell;
use crate::plan::Options;
use crate::stack::Stack;
use sf_core::{container, layout};

/// Mirror names in spack.yaml (what Spack's logs and `spack mirror list` show).
pub const DEPS_MIRROR_NAME: &str = "slurm-factory-deps";
pub const VERSION_MIRROR_NAME: &str = "slurm-factory-slurm";
pub const SOURCE_MIRROR_NAME: &str = "spack-sources";

/// The key of the repos section: `repos:` plus YAML's own `:` is Spack's `repos::` override.
pub const REPOS_OVERRIDE_KEY: &str = "repos:";

/// Build a mapping from (key, value) pairs, in order.
fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(Value::from(k), v);
    }
    Value::Mapping(m)
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Sequence(items.into_iter().map(|s| Value::from(s.as_ref())).collect())
}

/// The module name (and template path under `modules/`) of the cell's Slurm modulefile:
/// `slurm/{slurm_version}-{toolchain}`.
pub fn module_name(cell: &CheckedCell) -> Option<String> {
    cell.cell
        .slurm_version
        .as_ref()
        .map(|v| format!("slurm/{v}-{}", cell.cell.toolchain))
}

/// The specs the cell's environment installs, in order.
pub fn specs(cell: &CheckedCell, stack: &Stack) -> Vec<String> {
    let c = &cell.cell;
    let mut specs = Vec::new();
    if let Some(version) = &c.slurm_spack_version {
        let s = &stack.slurm;
        let gpu = s.gpu_switch(c.gpu, c.arch.as_str());
        let variants: Vec<&str> = [s.variants.as_str(), gpu]
            .into_iter()
            .filter(|v| !v.trim().is_empty())
            .collect();
        specs.push(
            format!("{}.slurm@{version} {}", s.namespace, variants.join(" "))
                .trim_end()
                .to_string(),
        );
        specs.extend(stack.with_slurm.iter().map(|p| p.spec()));
    }
    specs.extend(stack.dependencies.iter().map(|p| p.spec()));
    if c.gpu {
        specs.extend(
            stack
                .gpu_dependencies
                .iter()
                .filter(|p| p.applies_to(c.arch.as_str()))
                .map(|p| p.spec()),
        );
    }
    specs
}

/// Where a repository's git tree is in the build image, at the pinned commit: put there by the
/// image recipe (cloned, or from a local archive), so no build ever clones it again.
pub fn repo_tree(repo: &crate::stack::RepoPin) -> String {
    format!("{}/{}", container::REPOS_ROOT, repo.namespace)
}

/// The package repository (its `repo.yaml`) inside that tree: what Spack is pointed at.
pub fn repo_dir(repo: &crate::stack::RepoPin) -> String {
    format!("{}/{}", repo_tree(repo), repo.path)
}

fn repos(stack: &Stack) -> Value {
    let mut m = Mapping::new();
    for r in &stack.repos {
        m.insert(Value::from(r.namespace.as_str()), repo_dir(r).into());
    }
    Value::Mapping(m)
}

/// The source mirror as the build container sees it: a local one is mounted by sf-build.
fn source_mirror(stack: &Stack) -> String {
    match stack.local_source_mirror() {
        Some(_) => format!("file://{}", container::SOURCE_MIRROR_DIR),
        None => layout::source_mirror_url(&stack.source_mirror),
    }
}

fn mirrors(cell: &CheckedCell, stack: &Stack) -> Value {
    let binary = |url: &str, signed: bool| {
        map([
            ("url", url.into()),
            ("binary", true.into()),
            ("source", false.into()),
            ("signed", signed.into()),
        ])
    };
    let mut m = Mapping::new();
    // Order is priority: published binaries first (signed), then what this runner built before
    // (unsigned, never published as is), then sources.
    m.insert(
        DEPS_MIRROR_NAME.into(),
        binary(&cell.cell.deps_mirror.cdn_url, true),
    );
    if let Some(vm) = &cell.cell.version_mirror {
        m.insert(VERSION_MIRROR_NAME.into(), binary(&vm.cdn_url, true));
    }
    m.insert(
        container::LOCAL_MIRROR_NAME.into(),
        binary(&layout::local_mirror_url(), false),
    );
    m.insert(
        SOURCE_MIRROR_NAME.into(),
        map([
            ("url", source_mirror(stack).into()),
            ("binary", false.into()),
            ("source", true.into()),
        ]),
    );
    Value::Mapping(m)
}

fn config(cell: &CheckedCell, options: &Options) -> Value {
    let mut entries = vec![
        (
            "install_tree",
            map([
                ("root", container::INSTALL_ROOT.into()),
                // Room for the prefix to grow when binaries are relocated into another tree.
                ("padded_length", 128.into()),
            ]),
        ),
        // The runner's cores, as the build script's --jobs default (Spack's own would cap at 16).
        ("build_jobs", options.build_jobs.into()),
        ("source_cache", container::SOURCE_CACHE_DIR.into()),
        ("misc_cache", container::MISC_CACHE_DIR.into()),
    ];
    if cell.builds_slurm() {
        // The Slurm modulefile template is the rendered modulefile itself, next to spack.yaml.
        entries.push((
            "template_dirs",
            strings([format!("{}/modules", container::ENV_DIR)]),
        ));
    }
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(k.into(), v);
    }
    Value::Mapping(m)
}

fn packages(cell: &CheckedCell, stack: &Stack) -> Value {
    let mut m = Mapping::new();
    m.insert(
        "all".into(),
        map([
            ("target", strings([cell.cell.spack_target.as_str()])),
            (
                "providers",
                map([
                    ("c", strings(["gcc"])),
                    ("cxx", strings(["gcc"])),
                    ("fortran", strings(["gcc"])),
                    ("mpi", strings(["openmpi"])),
                ]),
            ),
        ]),
    );
    // The toolchain's own compiler, registered in the image by `spack compiler find`; Spack
    // must never build another one.
    m.insert("gcc".into(), map([("buildable", false.into())]));
    for e in &stack.externals {
        m.insert(
            e.name.as_str().into(),
            map([
                ("buildable", false.into()),
                (
                    "externals",
                    Value::Sequence(vec![map([
                        ("spec", format!("{}@{}", e.name, e.version).into()),
                        ("prefix", e.prefix.as_str().into()),
                    ])]),
                ),
            ]),
        );
    }
    Value::Mapping(m)
}

fn view(stack: &Stack) -> Value {
    map([(
        "default",
        map([
            ("root", container::VIEW_ROOT.into()),
            // Roots with their link and run dependencies: build-only dependencies stay out.
            ("link", "all".into()),
            // Copies, relocated by Spack into the view, so the tree stands alone in a tarball.
            ("link_type", "copy".into()),
            ("exclude", strings(&stack.view_exclude)),
        ]),
    )])
}

/// Spack's Lmod hierarchy puts what the core compiler builds in `Core`; left unset, Spack guesses
/// the core compiler from those it finds (and warns). The toolchain's gcc is the one compiler of a
/// cell (never built, see `packages`), named by its major version so the minor release the image
/// really ships still matches.
fn core_compiler(cell: &CheckedCell) -> String {
    let major = cell.cell.gcc.split('.').next().unwrap_or_default();
    format!("gcc@{major}")
}

fn modules(module: &str, core_compiler: String) -> Value {
    map([(
        "default",
        map([
            ("enable", strings(["lmod"])),
            ("roots", map([("lmod", container::MODULES_ROOT.into())])),
            ("arch_folder", false.into()),
            (
                "lmod",
                map([
                    ("core_compilers", strings([core_compiler])),
                    // `hierarchy::` (the key `hierarchy:`): a plain `hierarchy: []` merges with
                    // Spack's default list instead of clearing it.
                    ("hierarchy:", Value::Sequence(vec![])),
                    ("hash_length", 0.into()),
                    // Only Slurm gets a modulefile: nothing else is shipped as a module, so nothing
                    // else may be autoloaded.
                    ("exclude", strings(["platform=linux"])),
                    ("include", strings(["slurm"])),
                    ("projections", map([("slurm", module.into())])),
                    ("all", map([("autoload", "none".into())])),
                    (
                        "slurm",
                        map([
                            ("template", format!("{module}.lua").into()),
                            ("autoload", "none".into()),
                            ("conflict", strings(["slurm"])),
                        ]),
                    ),
                ]),
            ),
        ]),
    )])
}

/// The whole environment as a YAML value.
pub fn document(cell: &CheckedCell, stack: &Stack, options: &Options) -> Value {
    let mut spack = Mapping::new();
    let mut put = |k: &str, v: Value| {
        spack.insert(Value::from(k), v);
    };
    put("specs", strings(specs(cell, stack)));
    // `repos::` replaces Spack's default repos instead of merging into them: the default builtin
    // entry follows a branch, and a merged entry would carry both. In YAML `repos::` is the key
    // `repos:` (Spack reads the trailing colon as "override"), which is what is stored here.
    put(REPOS_OVERRIDE_KEY, repos(stack));
    put(
        "concretizer",
        // One consistent DAG, reusing installed and cached binaries (the deps mirror's above all).
        map([("unify", true.into()), ("reuse", true.into())]),
    );
    put("packages", packages(cell, stack));
    put("config", config(cell, options));
    put("mirrors", mirrors(cell, stack));
    match module_name(cell) {
        Some(module) => {
            put("view", view(stack));
            put("modules", modules(&module, core_compiler(cell)));
        }
        // The deps pipeline ships a build cache, not a tree.
        None => put("view", false.into()),
    }
    map([("spack", Value::Mapping(spack))])
}

/// The rendered file, with a header saying where it comes from.
pub fn render(cell: &CheckedCell, stack: &Stack, options: &Options) -> String {
    let body =
        serde_yaml::to_string(&document(cell, stack, options)).expect("a YAML value serialises");
    // serde_yaml quotes a key ending in ':'; write it the way Spack's documentation does. Both
    // spellings parse to the same key.
    let body = body
        .replacen("\n  'repos:':\n", "\n  repos::\n", 1)
        .replacen("'hierarchy:': []", "hierarchy:: []", 1);
    format!(
        "# Spack environment of cell {id}.\n\
         # Written by sf-spackenv from data/matrix.yaml and data/spack-stack.yaml (Spack {release});\n\
         # change those files, not this one. Build jobs follow the runner's cores (`spack install -j`).\n{body}",
        id = cell.id(),
        release = stack.spack.release,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::layout::Layout;
    use sf_core::matrix::{CellKey, Pipeline, SupportMatrix};

    const OPTS: Options = Options { build_jobs: 4 };

    fn cell(pipeline: Pipeline, v: Option<&str>, arch: &str, build: &str) -> CheckedCell {
        let m = SupportMatrix::embedded();
        let key = CellKey {
            pipeline,
            slurm_version: v.map(|v| m.slurm_version(v).unwrap()),
            toolchain: m.toolchain_name("noble").unwrap(),
            arch: m.arch_name(arch).unwrap(),
            build: m.build_kind(build).unwrap(),
        };
        crate::cell::check(&m, Layout::default().cell(&m, &key)).unwrap()
    }

    #[test]
    fn deps_build_the_dependencies_and_slurm_cells_reuse_them() {
        let stack = Stack::embedded();
        let deps = specs(&cell(Pipeline::Deps, None, "amd64", "cpu"), &stack);
        let slurm = specs(
            &cell(Pipeline::Version, Some("25.11"), "amd64", "cpu"),
            &stack,
        );
        assert!(deps.iter().all(|s| !s.contains("slurm")), "{deps:?}");
        assert_eq!(
            slurm[0],
            "slurm_factory.slurm@25-11-6-1 sysconfdir=/etc/slurm ~nvml ~rsmi"
        );
        assert!(slurm[1].starts_with("openmpi@") && slurm[1].contains("schedulers=slurm"));
        assert!(
            deps.iter().all(|d| slurm.contains(d)),
            "every deps spec is listed again for reuse"
        );
    }

    #[test]
    fn gpu_builds_add_nvml_and_rsmi_where_rocm_exists() {
        let stack = Stack::embedded();
        let amd = specs(
            &cell(Pipeline::Tarball, Some("24.11"), "amd64", "gpu"),
            &stack,
        );
        assert!(amd[0].ends_with("+nvml +rsmi"));
        assert!(
            amd.iter().any(|s| s.starts_with("cuda@"))
                && amd.iter().any(|s| s.starts_with("rocm-smi-lib@"))
        );
        let arm = specs(
            &cell(Pipeline::Tarball, Some("24.11"), "arm64", "gpu"),
            &stack,
        );
        assert!(arm[0].ends_with("+nvml ~rsmi"), "{}", arm[0]);
        assert!(
            arm.iter().any(|s| s.starts_with("cuda@"))
                && !arm.iter().any(|s| s.starts_with("rocm"))
        );
    }

    #[test]
    fn the_core_compiler_is_the_toolchains_gcc_by_major_version() {
        let stack = Stack::embedded();
        let m = SupportMatrix::embedded();
        for (toolchain, expected) in [("noble", "gcc@13"), ("jammy", "gcc@11")] {
            let key = CellKey {
                pipeline: Pipeline::Tarball,
                slurm_version: Some(m.slurm_version("25.11").unwrap()),
                toolchain: m.toolchain_name(toolchain).unwrap(),
                arch: m.arch_name("amd64").unwrap(),
                build: m.build_kind("cpu").unwrap(),
            };
            let c = crate::cell::check(&m, Layout::default().cell(&m, &key)).unwrap();
            let doc = document(&c, &stack, &OPTS);
            let lmod = &doc["spack"]["modules"]["default"]["lmod"];
            assert_eq!(
                lmod["core_compilers"],
                strings([expected]),
                "{toolchain}: {lmod:?}"
            );
        }
    }

    #[test]
    fn the_repos_section_replaces_spacks_defaults() {
        let stack = Stack::embedded();
        let text = render(&cell(Pipeline::Deps, None, "amd64", "cpu"), &stack, &OPTS);
        assert!(
            text.contains("\n  repos::\n    slurm_factory: /opt/spack-repos/slurm_factory/"),
            "{text}"
        );
        // Parsed as YAML (as Spack parses it), the key is `repos:`: Spack strips the colon and
        // marks the section as an override.
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        assert!(doc["spack"].as_mapping().unwrap().contains_key("repos:"));
        assert_eq!(
            doc,
            document(&cell(Pipeline::Deps, None, "amd64", "cpu"), &stack, &OPTS)
        );
    }

    #[test]
    fn mirrors_come_from_the_cell_in_priority_order() {
        let stack = Stack::embedded();
        let c = cell(Pipeline::Version, Some("23.11"), "amd64", "cpu");
        let doc = document(&c, &stack, &OPTS);
        let mirrors = doc["spack"]["mirrors"].as_mapping().unwrap();
        let names: Vec<&str> = mirrors.keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec![
                DEPS_MIRROR_NAME,
                VERSION_MIRROR_NAME,
                container::LOCAL_MIRROR_NAME,
                SOURCE_MIRROR_NAME
            ]
        );
        assert_eq!(
            mirrors[DEPS_MIRROR_NAME]["url"].as_str(),
            Some(c.cell.deps_mirror.cdn_url.as_str())
        );
        assert_eq!(
            mirrors[VERSION_MIRROR_NAME]["url"].as_str(),
            Some(c.cell.version_mirror.as_ref().unwrap().cdn_url.as_str())
        );
        assert_eq!(mirrors[VERSION_MIRROR_NAME]["signed"].as_bool(), Some(true));
        assert_eq!(
            mirrors[container::LOCAL_MIRROR_NAME]["signed"].as_bool(),
            Some(false)
        );
        assert_eq!(
            doc["spack"]["config"]["install_tree"]["padded_length"].as_u64(),
            Some(128)
        );
        assert_eq!(doc["spack"]["config"]["build_jobs"].as_u64(), Some(4));
        assert_eq!(
            doc["spack"]["packages"]["all"]["target"][0].as_str(),
            Some("x86_64_v3")
        );
        assert_eq!(
            doc["spack"][REPOS_OVERRIDE_KEY]["builtin"].as_str(),
            Some("/opt/spack-repos/builtin/repos/spack_repo/builtin")
        );
    }

    #[test]
    fn the_view_keeps_runtime_libraries_and_drops_build_only_tools() {
        let stack = Stack::embedded();
        let c = cell(Pipeline::Version, Some("25.11"), "amd64", "cpu");
        let doc = document(&c, &stack, &OPTS);
        let view = &doc["spack"]["view"]["default"];
        assert_eq!(view["root"].as_str(), Some(container::VIEW_ROOT));
        assert_eq!(view["link"].as_str(), Some("all"));
        let excluded: Vec<&str> = view["exclude"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for tool in [
            "cmake", "autoconf", "automake", "libtool", "m4", "pkgconf", "gmake", "meson", "ninja",
            "bison", "flex",
        ] {
            assert!(
                excluded.contains(&tool),
                "{tool} is not excluded: {excluded:?}"
            );
        }
        // Runtime libraries Slurm's binaries load stay in the view, and so does every package the
        // environment pins (they are what is shipped).
        let pinned = specs(&c, &stack);
        let pinned_names = pinned.iter().map(|s| {
            let name = s.split(['@', ' ']).next().unwrap();
            name.rsplit('.').next().unwrap()
        });
        for lib in [
            "gcc-runtime",
            "libmd",
            "gettext",
            "glibc",
            "zlib",
            "ncurses",
            "libxml2",
        ]
        .into_iter()
        .chain(pinned_names)
        {
            assert!(
                !excluded.contains(&lib),
                "{lib} must stay in the view: {excluded:?}"
            );
        }
        // A deps cell ships a build cache, not a tree: it has no view at all.
        let deps = document(&cell(Pipeline::Deps, None, "amd64", "cpu"), &stack, &OPTS);
        assert_eq!(deps["spack"]["view"].as_bool(), Some(false));
    }
}
