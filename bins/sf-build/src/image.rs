//! `sf-build image`: the Slurm runtime image, the tested tarball installed into the toolchain's
//! base image (`docker/slurm-image.Dockerfile.tmpl`), with OCI labels, built with the engine and
//! optionally pushed.
//!
//! Tags, under `{registry}/{name}`: `{version}-{toolchain}` always (plus `-{variant}` for arm64 or
//! GPU builds, as tarball keys do); `{version}` with `--tag-version` (the workflow passes it for
//! the default toolchain); `latest` with `--tag-latest` (the newest Slurm version, default
//! toolchain). The registry login reads its token from the environment (`SF_REGISTRY_TOKEN`, else
//! `GITHUB_TOKEN`) and hands it to the engine on stdin, never in argv.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

use sf_core::bad_input;
use sf_core::layout::{Cell, Layout};

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

/// The tags for a cell.
pub fn tags(
    cell: &Cell,
    registry: &str,
    name: &str,
    tag_version: bool,
    tag_latest: bool,
) -> Result<Vec<String>> {
    let registry = registry.trim_end_matches('/');
    if registry.is_empty() || registry.contains(char::is_whitespace) {
        return Err(bad_input(format!(
            "--registry {registry:?} is not a registry (e.g. ghcr.io/vantagecompute)"
        )));
    }
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

/// Log in (token on stdin) and push every tag.
pub fn push(
    engine: &Engine,
    tags: &[String],
    user: Option<&str>,
    token: Option<&str>,
    insecure: bool,
) -> Result<()> {
    let tls = |args: &mut Vec<String>| {
        if insecure && engine.kind == EngineKind::Podman {
            args.push("--tls-verify=false".into());
        }
    };
    if let Some(token) = token {
        let host = tags[0].split('/').next().unwrap_or_default().to_string();
        let mut args = vec![
            "login".to_string(),
            "--username".into(),
            user.unwrap_or("token").to_string(),
            "--password-stdin".into(),
        ];
        tls(&mut args);
        args.push(host.clone());
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
    }
    for t in tags {
        let mut args = vec!["push".to_string()];
        tls(&mut args);
        args.push(t.clone());
        engine
            .output(&args)
            .with_context(|| format!("pushing {t}"))?;
    }
    Ok(())
}
