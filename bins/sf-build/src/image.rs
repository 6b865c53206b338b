//! `sf-build image`: the Slurm runtime image, the tested tarball installed into the toolchain's
//! base image (`docker/slurm-image.Dockerfile.tmpl`), with OCI labels, built with the engine and
//! optionally pushed.
//!
//! Tags, under `{registry}/{name}`: `{version}-{toolchain}` always (plus `-{variant}` for arm64 or
//! GPU builds, as tarball keys do); `{version}` on the support matrix's recommended toolchain;
//! `latest` there too for the Slurm version whose channel is `latest` ([`moving_tags`]).
//! `--tag-version` / `--tag-latest` add them for any other cell. The registry login reads its token from the environment (`SF_REGISTRY_TOKEN`, else
//! `GITHUB_TOKEN`) and hands it to the engine on stdin, never in argv.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

use sf_core::bad_input;
use sf_core::layout::{Cell, Layout};
use sf_core::matrix::SupportMatrix;

use crate::engine::{Engine, EngineKind};

/// The Dockerfile template, shipped inside the binary.
pub const TEMPLATE: &str = include_str!("../../../docker/slurm-image.Dockerfile.tmpl");

/// Facts the labels carry.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub source: String,
    pub revision: String,
    pub created: String,
    pub tarball_name: String,
    pub tarball_sha256: String,
}

/// Values placed into a Dockerfile must not break out of their quotes or line.
fn safe(name: &str, v: &str) -> Result<String> {
    if v.chars()
        .any(|c| c == '"' || c == '\\' || c == '$' || c == '`' || c.is_control())
    {
        return Err(bad_input(format!(
            "{name} {v:?} has characters that cannot go into a Dockerfile label"
        )));
    }
    Ok(v.to_string())
}

/// Render the Dockerfile for a cell.
pub fn render(cell: &Cell, facts: &ImageFacts) -> Result<String> {
    let version = cell
        .slurm_version
        .as_ref()
        .map(|v| v.as_str().to_string())
        .ok_or_else(|| bad_input("a deps cell has no image"))?;
    let vars: Vec<(&str, String)> = vec![
        ("base_image", safe("base image", &cell.base_image)?),
        ("tarball_name", safe("tarball name", &facts.tarball_name)?),
        ("slurm_version", version.clone()),
        (
            "slurm_spack_version",
            safe(
                "slurm version",
                cell.slurm_spack_version.as_deref().unwrap_or(&version),
            )?,
        ),
        (
            "slurm_release",
            safe(
                "slurm release",
                cell.slurm_release.as_deref().unwrap_or(&version),
            )?,
        ),
        ("os", safe("os", &cell.os)?),
        ("toolchain", cell.toolchain.as_str().to_string()),
        ("arch", cell.arch.as_str().to_string()),
        ("build", cell.build.as_str().to_string()),
        ("source", safe("source", &facts.source)?),
        ("revision", safe("revision", &facts.revision)?),
        ("created", safe("created", &facts.created)?),
        ("tarball_sha256", safe("sha256", &facts.tarball_sha256)?),
    ];
    let mut out = TEMPLATE.to_string();
    for (k, v) in &vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(i) = out.find("{{") {
        anyhow::bail!(
            "the image template has an unknown placeholder near {:?}",
            &out[i..(i + 30).min(out.len())]
        );
    }
    Ok(out)
}

/// A registry and namespace (`ghcr.io/VantageCompute`) or image name, lowercased: repository
/// paths must be lowercase and registry hosts are case-insensitive, while a workflow's
/// `${{ github.repository_owner }}` often has capitals. Then checked: lowercase letters, digits,
/// `.`, `_`, `-` between slashes (and a `:port` on the host).
pub fn repository_path(flag: &str, value: &str) -> Result<String> {
    let lower = value.trim_end_matches('/').to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.split('/').enumerate().all(|(i, part)| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, '.' | '_' | '-')
                        || (i == 0 && c == ':')
                })
        });
    if !ok {
        return Err(bad_input(format!(
            "{flag} {value:?} is not a repository path: letters, digits, '.', '_' and '-' between \
             slashes, a ':port' only on the registry host (e.g. ghcr.io/vantagecompute)"
        )));
    }
    if lower != value.trim_end_matches('/') {
        eprintln!("sf-build: {flag} {value} is used as {lower} (repository paths are lowercase)");
    }
    Ok(lower)
}

/// Which moving tags a cell's image gets by the support matrix: `{version}` on the recommended
/// toolchain, and `latest` there for the Slurm version whose channel is `latest`.
pub fn moving_tags(m: &SupportMatrix, cell: &Cell) -> Result<(bool, bool)> {
    let toolchain = m.toolchain_name(cell.toolchain.as_str())?;
    let version = cell
        .slurm_version
        .as_ref()
        .ok_or_else(|| bad_input("a deps cell has no image"))?;
    let version = m.slurm_version(version.as_str())?;
    let recommended = m.toolchain(&toolchain).recommended;
    Ok((
        recommended,
        recommended && m.release(&version).channel == "latest",
    ))
}

/// The tags for a cell.
pub fn tags(
    cell: &Cell,
    registry: &str,
    name: &str,
    tag_version: bool,
    tag_latest: bool,
) -> Result<Vec<String>> {
    let registry = repository_path("--registry", registry)?;
    let name = repository_path("--name", name)?;
    let version = cell
        .slurm_version
        .as_ref()
        .ok_or_else(|| bad_input("a deps cell has no image"))?
        .as_str();
    let variant = Layout::variant(&cell.arch, &cell.build);
    let mut main = format!("{version}-{}", cell.toolchain.as_str());
    if !variant.is_empty() {
        main = format!("{main}-{variant}");
    }
    let mut t = vec![format!("{registry}/{name}:{main}")];
    if tag_version {
        t.push(format!(
            "{registry}/{name}:{}",
            if variant.is_empty() {
                version.to_string()
            } else {
                format!("{version}-{variant}")
            }
        ));
    }
    if tag_latest && variant.is_empty() {
        t.push(format!("{registry}/{name}:latest"));
    }
    Ok(t)
}

/// Build the image from a tarball: a context holding only the Dockerfile and the tarball.
pub fn build(
    engine: &Engine,
    cell: &Cell,
    tarball: &Path,
    facts: &ImageFacts,
    tags: &[String],
    scratch: &Path,
) -> Result<PathBuf> {
    let ctx = scratch.join("context");
    std::fs::create_dir_all(&ctx)?;
    let dockerfile = ctx.join("Dockerfile");
    std::fs::write(&dockerfile, render(cell, facts)?)?;
    let dest = ctx.join(&facts.tarball_name);
    if std::fs::hard_link(tarball, &dest).is_err() {
        std::fs::copy(tarball, &dest)
            .with_context(|| format!("copying {} into the build context", tarball.display()))?;
    }
    let log = scratch.join("image-build.log");
    engine.build(&dockerfile, &ctx, tags, &[], &log)?;
    Ok(dockerfile)
}

/// Log in (token on stdin), push every tag, and log out again whatever the push did, so the
/// token does not stay in the runner's credentials file for whatever runs next.
pub fn push(
    engine: &Engine,
    tags: &[String],
    user: Option<&str>,
    token: Option<&str>,
    insecure: bool,
) -> Result<()> {
    let Some(token) = token else {
        return push_tags(engine, tags, insecure);
    };
    let host = tags[0].split('/').next().unwrap_or_default().to_string();
    login(engine, &host, user, token, insecure)?;
    let pushed = push_tags(engine, tags, insecure);
    if let Err(e) = engine.output(["logout", host.as_str()]) {
        eprintln!(
            "sf-build: warning: logging out of {host} failed, its credentials may remain in the engine's auth file: {e:#}"
        );
    }
    pushed
}

fn tls_args(engine: &Engine, insecure: bool, args: &mut Vec<String>) {
    if insecure && engine.kind == EngineKind::Podman {
        args.push("--tls-verify=false".into());
    }
}

fn push_tags(engine: &Engine, tags: &[String], insecure: bool) -> Result<()> {
    for t in tags {
        let mut args = vec!["push".to_string()];
        tls_args(engine, insecure, &mut args);
        args.push(t.clone());
        engine
            .output(&args)
            .with_context(|| format!("pushing {t}"))?;
    }
    Ok(())
}

fn login(
    engine: &Engine,
    host: &str,
    user: Option<&str>,
    token: &str,
    insecure: bool,
) -> Result<()> {
    let mut args = vec![
        "login".to_string(),
        "--username".into(),
        user.unwrap_or("token").to_string(),
        "--password-stdin".into(),
    ];
    tls_args(engine, insecure, &mut args);
    args.push(host.to_string());
    let mut child = engine
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the registry login")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(token.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "logging in to {host} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sf_core::matrix::{ListArg, Pipeline, Selection, SlurmRelease, ToolchainInfo};

    fn cell() -> Cell {
        cell_of("25.11", "noble")
    }

    fn cell_of(version: &str, toolchain: &str) -> Cell {
        let m = SupportMatrix::embedded();
        let sel = Selection {
            slurm_versions: ListArg::Named(vec![version.into()]),
            toolchains: ListArg::Named(vec![toolchain.into()]),
            ..Default::default()
        };
        let keys = sel.expand(&m, Pipeline::Image).unwrap();
        Layout::default().cell(&m, &keys[0])
    }

    #[test]
    fn moving_tags_follow_the_recommended_toolchain_and_the_latest_channel() {
        let m = SupportMatrix::embedded();
        let recommended = m.toolchains.iter().find(|t| t.recommended).unwrap();
        let other = m.toolchains.iter().find(|t| !t.recommended).unwrap();
        let latest = m
            .slurm_versions
            .iter()
            .find(|v| v.channel == "latest")
            .unwrap();
        let older = m
            .slurm_versions
            .iter()
            .find(|v| v.channel != "latest")
            .unwrap();
        let of = |v: &SlurmRelease, t: &ToolchainInfo| {
            moving_tags(&m, &cell_of(v.name.as_str(), t.name.as_str())).unwrap()
        };
        assert_eq!(of(latest, recommended), (true, true));
        assert_eq!(of(older, recommended), (true, false));
        assert_eq!(of(latest, other), (false, false));
        assert_eq!(of(older, other), (false, false));

        // As the image step tags the newest version on the recommended toolchain.
        let c = cell_of(latest.name.as_str(), recommended.name.as_str());
        let (v, l) = moving_tags(&m, &c).unwrap();
        let t = tags(&c, "ghcr.io/vantagecompute", "slurm", v, l).unwrap();
        let n = latest.name.as_str();
        let tc = recommended.name.as_str();
        assert_eq!(
            t,
            [
                format!("ghcr.io/vantagecompute/slurm:{n}-{tc}"),
                format!("ghcr.io/vantagecompute/slurm:{n}"),
                "ghcr.io/vantagecompute/slurm:latest".to_string()
            ]
        );
    }

    #[test]
    fn registry_paths_with_capitals_are_lowercased() {
        let t = tags(&cell(), "GHCR.io/VantageCompute/", "Slurm", true, false).unwrap();
        assert_eq!(
            t,
            [
                "ghcr.io/vantagecompute/slurm:25.11-noble",
                "ghcr.io/vantagecompute/slurm:25.11"
            ]
        );
        assert_eq!(
            repository_path("--registry", "127.0.0.1:5000/Team").unwrap(),
            "127.0.0.1:5000/team"
        );
    }

    #[test]
    fn what_no_registry_accepts_is_bad_input_naming_the_rule() {
        for (reg, name) in [
            ("ghcr.io/a b", "slurm"),
            ("ghcr.io//x", "slurm"),
            ("ghcr.io/x:y", "slurm"),
            ("", "slurm"),
            ("ghcr.io/x", "slurm$"),
        ] {
            let e = tags(&cell(), reg, name, false, false).unwrap_err();
            assert_eq!(sf_core::exit::code_for(&e), 2, "{reg} {name}");
            assert!(e.to_string().contains("letters, digits"), "{e}");
        }
    }
}
