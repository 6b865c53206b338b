//! Rendering the container recipe, the build script and the Slurm modulefile from their templates
//! (`docker/build-{apt,dnf}.Dockerfile.tmpl`, `templates/build.sh.tmpl`, `templates/slurm.lua.tmpl`).
//!
//! Every value placed into a template passes a character check for where it lands (a Dockerfile,
//! bash, a Lua string), so no template needs quoting rules of its own.

use anyhow::Result;
use sf_core::bad_input;
use sf_core::matrix::OsFamily;

use crate::cell::CheckedCell;
use crate::spack_yaml;
use crate::stack::Stack;
use crate::template;
use sf_core::container;

const APT_TEMPLATE: &str = include_str!("../../../docker/build-apt.Dockerfile.tmpl");
const DNF_TEMPLATE: &str = include_str!("../../../docker/build-dnf.Dockerfile.tmpl");
const BUILD_SCRIPT_TEMPLATE: &str = include_str!("../templates/build.sh.tmpl");
const MODULEFILE_TEMPLATE: &str = include_str!("../templates/slurm.lua.tmpl");

/// Where the project's default Slurm configuration is (Slurm is built with sysconfdir=/etc/slurm).
pub const DEFAULT_SLURM_CONF: &str = "/etc/slurm/slurm.conf";

/// Text that is safe inside double quotes in a Dockerfile, bash and Lua, and in comments.
fn plain(what: &str, s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    ' ' | '.' | ',' | '-' | '_' | '(' | ')' | '/' | ':' | '@' | '+' | '~' | '='
                )
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(bad_input(format!(
            "{what} {s:?} has characters that cannot be written into a recipe safely"
        )))
    }
}

/// The Dockerfile of the cell's build image. It depends on the toolchain only (and the Spack
/// pin), so every cell of a toolchain shares one image.
pub fn dockerfile(cell: &CheckedCell, stack: &Stack) -> Result<String> {
    let c = &cell.cell;
    let (name, text) = match cell.family {
        OsFamily::Apt => ("build-apt.Dockerfile.tmpl", APT_TEMPLATE),
        OsFamily::Dnf => ("build-dnf.Dockerfile.tmpl", DNF_TEMPLATE),
    };
    let mut vars = vec![
        ("os", plain("os", &c.os)?),
        ("toolchain", plain("toolchain", c.toolchain.as_str())?),
        ("base_image", plain("base_image", &c.base_image)?),
        (
            "spack_release",
            plain("spack release", &stack.spack.release)?,
        ),
        ("spack_git", plain("spack git URL", &stack.spack.git)?),
        ("spack_commit", stack.spack.commit.to_string()),
        ("spack_root", container::SPACK_ROOT.to_string()),
        (
            "bootstrap_root",
            format!("{}-bootstrap", container::SPACK_ROOT),
        ),
        ("build_home", container::BUILD_HOME.to_string()),
        ("build_uid", container::BUILD_UID.to_string()),
        ("env_dir", container::ENV_DIR.to_string()),
        ("cache_dir", container::CACHE_DIR.to_string()),
        ("slurm_root", container::SLURM_ROOT.to_string()),
    ];
    if cell.family == OsFamily::Dnf {
        let repos = stack.toolchain(c.toolchain.as_str()).dnf_repos;
        vars.push((
            "enable_repos",
            repos.iter().map(|r| format!(" --enablerepo={r}")).collect(),
        ));
        vars.push((
            "dnf_repos",
            if repos.is_empty() {
                "none".into()
            } else {
                repos.join(", ")
            },
        ));
    }
    template::render(name, text, &vars)
}

/// The script the build container runs.
pub fn build_script(cell: &CheckedCell, options: &crate::plan::Options) -> Result<String> {
    let c = &cell.cell;
    let gcc = &c.gcc;
    if gcc.is_empty() || !gcc.chars().all(|ch| ch.is_ascii_digit() || ch == '.') {
        return Err(bad_input(format!(
            "the expected gcc version {gcc:?} is not a version like 13 or 11.4.0"
        )));
    }
    template::render(
        "build.sh.tmpl",
        BUILD_SCRIPT_TEMPLATE,
        &[
            ("cell_id", plain("cell id", cell.id())?),
            ("env_dir", container::ENV_DIR.to_string()),
            ("log_dir", container::LOG_DIR.to_string()),
            ("out_mirror", container::OUT_MIRROR_DIR.to_string()),
            ("expected_gcc", gcc.clone()),
            ("builds_slurm", cell.builds_slurm().to_string()),
            ("build_jobs", options.build_jobs.to_string()),
        ],
    )
}

/// The relocatable Slurm modulefile; `None` for deps cells, which build no Slurm.
pub fn modulefile(cell: &CheckedCell) -> Result<Option<String>> {
    let c = &cell.cell;
    let (Some(series), Some(version)) = (&c.slurm_version, &c.slurm_spack_version) else {
        return Ok(None);
    };
    let text = template::render(
        "slurm.lua.tmpl",
        MODULEFILE_TEMPLATE,
        &[
            ("slurm_version", plain("slurm version", series.as_str())?),
            (
                "slurm_spack_version",
                plain("slurm spack version", version)?,
            ),
            ("os", plain("os", &c.os)?),
            ("toolchain", plain("toolchain", c.toolchain.as_str())?),
            ("arch", plain("arch", c.arch.as_str())?),
            ("build", plain("build", c.build.as_str())?),
            ("spack_target", plain("spack target", &c.spack_target)?),
            ("cell_id", plain("cell id", cell.id())?),
            ("default_prefix", container::VIEW_ROOT.to_string()),
            ("default_conf", DEFAULT_SLURM_CONF.to_string()),
        ],
    )?;
    // Spack renders this file as a Jinja template when it refreshes modules: it must hold no
    // Jinja syntax, so Spack's copy is byte-for-byte this one.
    debug_assert!(!["{{", "{%", "{#"].iter().any(|j| text.contains(j)));
    Ok(Some(text))
}

/// Path of the modulefile relative to the output directory: `modules/slurm/{v}-{tc}.lua`.
pub fn modulefile_path(cell: &CheckedCell) -> Option<String> {
    spack_yaml::module_name(cell).map(|m| format!("modules/{m}.lua"))
}
