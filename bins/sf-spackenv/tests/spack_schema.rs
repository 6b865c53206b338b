//! Every rendered spack.yaml parses and uses only keys Spack v1.0's configuration schema accepts.
//!
//! The key sets below are transcribed from Spack's schema modules at tag `v1.0.2`, commit
//! `5efd8eea1b8ea701074d72372a4acf0a972d736b` (github.com/spack/spack, `lib/spack/spack/schema/`:
//! `env.py` and `merged.py` for the top level, `config.py`, `concretizer.py`, `packages.py`,
//! `mirrors.py`, `repos.py`, `view.py`, `modules.py`, `environment.py`, `projections.py`): the
//! same commit `data/spack-stack.yaml` pins the build image to, which a test below holds them to.
//! When that pin moves, re-read those files at the new commit and update the sets and
//! [`SCHEMA_SPACK`] together. (Later development adds keys such as `config:concurrent_packages`
//! and `config:installer`; v1.0.2 does not know them, so they are not listed.) They cover the
//! sections sf-spackenv writes;
//! a section listed as a bare `Any` is one Spack knows but that is not walked further because
//! sf-spackenv never writes it. Keys ending in `:` or `::` are Spack's override syntax and are
//! looked up without it.

mod support;

use serde_yaml::Value;
use sf_spackenv::stack::Stack;

/// The Spack release and commit the key sets are transcribed from.
const SCHEMA_SPACK: (&str, &str) = ("v1.0.2", "5efd8eea1b8ea701074d72372a4acf0a972d736b");
use support::snapshots::{snapshot_cells, snapshot_files};

/// The shape of one part of the schema: what keys a mapping may have.
enum Node {
    /// A scalar (string, number, boolean).
    Scalar,
    /// A scalar from a fixed set.
    Enum(&'static [&'static str]),
    /// An integer of at least 1 (`{"type": "integer", "minimum": 1}`).
    PositiveInt,
    /// Anything (a section Spack knows that we never write).
    Any,
    /// A list whose items are the inner node.
    List(Box<Node>),
    /// A mapping with exactly these optional keys.
    Obj(Vec<(&'static str, Node)>),
    /// A mapping with these named keys, any other key taking the fallback node.
    MapWith(Vec<(&'static str, Node)>, Box<Node>),
    /// Either a scalar or the inner mapping node.
    ScalarOr(Box<Node>),
}

use Node::*;

fn list(n: Node) -> Node {
    List(Box::new(n))
}
fn obj(keys: Vec<(&'static str, Node)>) -> Node {
    Obj(keys)
}
fn map_of(n: Node) -> Node {
    MapWith(vec![], Box::new(n))
}
fn scalar_or(n: Node) -> Node {
    ScalarOr(Box::new(n))
}
fn strings() -> Node {
    list(Scalar)
}

/// `spack.schema.projections`: `projections: {spec: format}`.
fn projections() -> Node {
    map_of(Scalar)
}

/// `spack.schema.environment.definition`.
fn environment_modifications() -> Node {
    obj(vec![
        ("set", map_of(Scalar)),
        ("unset", strings()),
        ("prepend_path", map_of(Scalar)),
        ("append_path", map_of(Scalar)),
        ("remove_path", map_of(Scalar)),
    ])
}

/// `spack.schema.config.properties["config"]` (the keys of v1.0).
fn config() -> Node {
    obj(vec![
        ("shared_linking", Any),
        (
            "install_tree",
            obj(vec![
                ("root", Scalar),
                ("padded_length", Scalar),
                ("projections", projections()),
            ]),
        ),
        ("install_hash_length", Scalar),
        ("build_stage", scalar_or(strings())),
        ("stage_name", Scalar),
        ("develop_stage_link", Scalar),
        ("test_stage", Scalar),
        ("extensions", strings()),
        ("template_dirs", strings()),
        ("license_dir", Scalar),
        ("source_cache", Scalar),
        ("misc_cache", Scalar),
        ("environments_root", Scalar),
        ("connect_timeout", Scalar),
        ("verify_ssl", Scalar),
        ("ssl_certs", Scalar),
        ("suppress_gpg_warnings", Scalar),
        ("debug", Scalar),
        ("checksum", Scalar),
        ("deprecated", Scalar),
        ("locks", Scalar),
        ("dirty", Scalar),
        ("build_language", Scalar),
        ("build_jobs", PositiveInt),
        ("ccache", Scalar),
        ("db_lock_timeout", Scalar),
        ("package_lock_timeout", Scalar),
        ("allow_sgid", Scalar),
        ("install_status", Scalar),
        ("url_fetch_method", Scalar),
        ("additional_external_search_paths", strings()),
        ("binary_index_ttl", Scalar),
        ("aliases", map_of(Scalar)),
        (
            "flags",
            obj(vec![("keep_werror", Enum(&["all", "specific", "none"]))]),
        ),
        ("locations", Any),
    ])
}

/// `spack.schema.concretizer`.
fn concretizer() -> Node {
    obj(vec![
        ("reuse", scalar_or(Any)),
        ("unify", Enum(&["true", "false", "when_possible"])),
        (
            "targets",
            obj(vec![
                ("host_compatible", Scalar),
                ("granularity", Enum(&["generic", "microarchitectures"])),
            ]),
        ),
        (
            "duplicates",
            obj(vec![("strategy", Scalar), ("max_dupes", map_of(Scalar))]),
        ),
        ("timeout", Scalar),
        ("error_on_timeout", Scalar),
        ("static_analysis", Scalar),
        ("splice", Any),
        ("os_compatible", Any),
    ])
}

/// `spack.schema.packages`: `all` and per-package settings differ.
fn packages() -> Node {
    let requirements = || scalar_or(Any);
    let prefer = || {
        list(scalar_or(obj(vec![
            ("spec", Scalar),
            ("message", Scalar),
            ("when", Scalar),
        ])))
    };
    let all = obj(vec![
        ("require", requirements()),
        ("prefer", prefer()),
        ("conflict", prefer()),
        ("target", strings()),
        ("compiler", strings()),
        ("buildable", Scalar),
        (
            "permissions",
            obj(vec![("read", Scalar), ("write", Scalar), ("group", Scalar)]),
        ),
        ("package_attributes", map_of(Any)),
        ("providers", map_of(strings())),
        ("variants", scalar_or(strings())),
    ]);
    let package = obj(vec![
        ("require", requirements()),
        ("prefer", prefer()),
        ("conflict", prefer()),
        ("version", strings()),
        ("buildable", Scalar),
        (
            "permissions",
            obj(vec![("read", Scalar), ("write", Scalar), ("group", Scalar)]),
        ),
        ("package_attributes", map_of(Any)),
        ("variants", scalar_or(strings())),
        ("externals", list(Any)),
    ]);
    MapWith(vec![("all", all)], Box::new(package))
}

/// `spack.schema.mirrors`: a URL string, or an entry.
fn mirrors() -> Node {
    let connection = || {
        vec![
            ("url", Scalar),
            ("access_pair", Any),
            ("access_token_variable", Scalar),
            ("profile", Scalar),
            ("endpoint_url", Scalar),
        ]
    };
    let mut entry = vec![
        ("source", Scalar),
        ("binary", Scalar),
        ("signed", Scalar),
        ("fetch", scalar_or(obj(connection()))),
        ("push", scalar_or(obj(connection()))),
        ("autopush", Scalar),
    ];
    entry.extend(connection());
    map_of(scalar_or(obj(entry)))
}

/// `spack.schema.repos`: a path string, or a git repository.
fn repos() -> Node {
    map_of(scalar_or(obj(vec![
        ("git", Scalar),
        ("branch", Scalar),
        ("commit", Scalar),
        ("tag", Scalar),
        ("destination", Scalar),
        ("paths", strings()),
    ])))
}

/// `spack.schema.view` (inside an environment).
fn view() -> Node {
    scalar_or(map_of(obj(vec![
        ("root", Scalar),
        ("link", Enum(&["roots", "all", "run"])),
        ("link_type", Enum(&["symlink", "hardlink", "copy"])),
        ("select", strings()),
        ("exclude", strings()),
        ("projections", projections()),
    ])))
}

/// `spack.schema.modules`.
fn modules() -> Node {
    let module_file = || {
        obj(vec![
            ("filter", obj(vec![("exclude_env_vars", strings())])),
            ("template", Scalar),
            ("autoload", Enum(&["none", "run", "direct", "all"])),
            ("prerequisites", Enum(&["none", "run", "direct", "all"])),
            ("conflict", strings()),
            ("load", strings()),
            ("suffixes", map_of(Scalar)),
            ("environment", environment_modifications()),
        ])
    };
    let module_type = |extra: Vec<(&'static str, Node)>| {
        let mut keys = vec![
            ("verbose", Scalar),
            ("hash_length", Scalar),
            ("include", strings()),
            ("exclude", strings()),
            ("exclude_implicits", Scalar),
            ("defaults", strings()),
            ("hide_implicits", Scalar),
            ("naming_scheme", Scalar),
            ("projections", projections()),
            ("all", module_file()),
        ];
        keys.extend(extra);
        // Any other key is a spec whose modulefile it configures.
        MapWith(keys, Box::new(module_file()))
    };
    let module_set = obj(vec![
        ("use_view", Scalar),
        ("arch_folder", Scalar),
        ("roots", obj(vec![("tcl", Scalar), ("lmod", Scalar)])),
        ("enable", list(Enum(&["tcl", "lmod"]))),
        (
            "lmod",
            module_type(vec![
                ("core_compilers", strings()),
                ("hierarchy", strings()),
                ("core_specs", strings()),
                ("filter_hierarchy_specs", map_of(strings())),
            ]),
        ),
        ("tcl", module_type(vec![])),
        ("prefix_inspections", map_of(strings())),
    ]);
    MapWith(
        vec![("prefix_inspections", map_of(strings()))],
        Box::new(module_set),
    )
}

/// The environment file: `spack:` with the merged sections plus the environment-only ones.
fn environment_file() -> Node {
    obj(vec![(
        "spack",
        obj(vec![
            ("specs", list(scalar_or(Any))),
            ("include", list(Any)),
            ("include_concrete", strings()),
            ("definitions", list(Any)),
            ("develop", Any),
            ("view", view()),
            ("bootstrap", Any),
            ("cdash", Any),
            ("ci", Any),
            ("compilers", Any),
            ("concretizer", concretizer()),
            ("config", config()),
            ("container", Any),
            ("env_vars", Any),
            ("mirrors", mirrors()),
            ("modules", modules()),
            ("packages", packages()),
            ("repos", repos()),
            ("toolchains", Any),
            ("upstreams", Any),
        ]),
    )])
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Walk `value` against `node`, collecting the path of every violation.
fn walk(node: &Node, value: &Value, path: &str, errors: &mut Vec<String>) {
    match (node, value) {
        (Any, _) => {}
        (Scalar, v) => {
            if scalar_text(v).is_none() {
                errors.push(format!("{path}: expected a scalar"));
            }
        }
        (PositiveInt, v) => {
            if v.as_u64().is_none_or(|n| n < 1) {
                errors.push(format!("{path}: {v:?} is not an integer of at least 1"));
            }
        }
        (Enum(allowed), v) => match scalar_text(v) {
            Some(s) if allowed.contains(&s.as_str()) => {}
            other => errors.push(format!("{path}: {other:?} is not one of {allowed:?}")),
        },
        (List(inner), Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                walk(inner, item, &format!("{path}[{i}]"), errors);
            }
        }
        (ScalarOr(inner), v) => {
            if scalar_text(v).is_none() {
                walk(inner, v, path, errors);
            }
        }
        (Obj(keys), Value::Mapping(m)) => walk_mapping(keys, None, m, path, errors),
        (MapWith(keys, fallback), Value::Mapping(m)) => {
            walk_mapping(keys, Some(fallback), m, path, errors)
        }
        (_, _) => errors.push(format!("{path}: unexpected shape {value:?}")),
    }
}

fn walk_mapping(
    keys: &[(&'static str, Node)],
    fallback: Option<&Node>,
    m: &serde_yaml::Mapping,
    path: &str,
    errors: &mut Vec<String>,
) {
    for (k, v) in m {
        let Some(raw) = k.as_str() else {
            errors.push(format!("{path}: a non-string key {k:?}"));
            continue;
        };
        // `key::` replaces lower scopes, `key:` merges; both name `key`.
        let key = raw.trim_end_matches(':');
        let here = format!("{path}.{raw}");
        match keys
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, n)| n)
            .or(fallback)
        {
            Some(node) => walk(node, v, &here, errors),
            None => errors.push(format!("{here}: Spack v1.0 has no key {key:?} here")),
        }
    }
}

fn violations(text: &str) -> Vec<String> {
    let doc: Value = serde_yaml::from_str(text).expect("spack.yaml parses");
    let mut errors = Vec::new();
    walk(&environment_file(), &doc, "", &mut errors);
    errors
}

#[test]
fn every_spack_yaml_uses_only_keys_spack_v1_knows() {
    for cell in snapshot_cells() {
        for file in snapshot_files(&cell) {
            if file.rel_path == "spack.yaml" {
                let text = String::from_utf8(file.bytes).unwrap();
                let errors = violations(&text);
                assert!(errors.is_empty(), "{}: {errors:#?}", cell.id());
            }
        }
    }
}

#[test]
fn the_walker_catches_keys_spack_v1_does_not_know() {
    let cell = &snapshot_cells()[0];
    let text = String::from_utf8(snapshot_files(cell).remove(0).bytes).unwrap();
    // `config:verify` and a top-level `compilers` list are what older generators wrote; the first
    // is not in v1.0's schema at all.
    let bad = text.replacen(
        "  config:\n",
        "  config:\n    verify:\n      relocatable: true\n",
        1,
    );
    let errors = violations(&bad);
    assert!(errors.iter().any(|e| e.contains("verify")), "{errors:?}");
    for jobs in ["four", "0", "2.5"] {
        let bad = text.replacen(
            "    build_jobs: 4\n",
            &format!("    build_jobs: {jobs}\n"),
            1,
        );
        assert_ne!(bad, text);
        assert!(
            violations(&bad).iter().any(|e| e.contains("build_jobs")),
            "{jobs}"
        );
    }
    let bad = text.replacen("      link_type: copy", "      link_type: reflink", 1);
    assert!(violations(&bad).iter().any(|e| e.contains("reflink")));
    let bad = text.replacen(
        "  mirrors:\n",
        "  mirrors:\n    broken:\n      url: x\n      priority: 1\n",
        1,
    );
    assert!(violations(&bad).iter().any(|e| e.contains("priority")));
}

#[test]
fn the_key_sets_come_from_the_spack_commit_the_image_is_built_with() {
    let stack = Stack::embedded();
    assert_eq!(
        (stack.spack.release.as_str(), stack.spack.commit.as_str()),
        SCHEMA_SPACK,
        "data/spack-stack.yaml pins another Spack than the schema key sets here were taken from: \
         re-read lib/spack/spack/schema/*.py at the new commit and update this file"
    );
}
