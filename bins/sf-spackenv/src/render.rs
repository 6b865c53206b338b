//! Rendering the container recipe, the build script and the Slurm modulefile from their templates
//! (`docker/build-{apt,dnf}.Dockerfile.tmpl`, `templates/build.sh.tmpl`, `templates/slurm.lua.tmpl`).
//!
//! Every value placed into a template passes a character check for where it lands (a Dockerfile,
//! bash, a Lua string), so no template needs quoting rules of its own.

use anyhow::Result;
use sf_core::bad_input;
use sf_core::matrix::OsFamily;

use crate::cell::CheckedCell;
use crate::inputs;
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

/// `git init` + fetch of one commit by id into `dir` (a moved tag or branch cannot change it).
fn git_fetch(url: &str, commit: &str, dir: &str) -> String {
    format!(
        "git init --quiet {dir} \\\n \
         && git -C {dir} fetch --quiet --depth 1 {url} {commit} \\\n \
         && git -C {dir} checkout --quiet FETCH_HEAD \\\n \
         && test \"$(git -C {dir} rev-parse HEAD)\" = \"{commit}\""
    )
}

/// Unpack a local archive of the build context into `dir`, checking its sha256 first.
fn unpack(rel: &str, sha256: &str, dir: &str) -> String {
    let file = format!(
        "{}/{}",
        inputs::CONTEXT_MOUNT,
        rel.trim_start_matches(&format!("{}/", inputs::INPUTS_DIR))
    );
    format!(
        "echo \"{sha256}  {file}\" | sha256sum --check --quiet - \\\n \
         && mkdir -p {dir} \\\n \
         && tar -xzf {file} -C {dir} --strip-components=1 --no-same-owner"
    )
}

/// The Spack part of a build image, the same for every OS family: Spack and the package
/// repositories at their pins (cloned, or unpacked from the local archives of the build
/// context), Spack's solver in a Python of its own, and the site configuration every user of the
/// image shares (the repositories, no bootstrap sources, a build stage without the user's name, the
/// OS compiler).
fn spack_section(stack: &Stack) -> Result<String> {
    let root = container::SPACK_ROOT;
    let mut out = String::new();
    let staged = stack.spack.archive.is_some()
        || stack.python_wheels.is_some()
        || stack.repos.iter().any(|r| r.archive.is_some());
    if staged {
        out.push_str(&format!(
            "# The air-gapped inputs sf-spackenv checked and put next to this recipe.\n\
             COPY {}/ {}/\n\n",
            inputs::INPUTS_DIR,
            inputs::CONTEXT_MOUNT
        ));
    }
    let spack = &stack.spack;
    let (how, fetch) = match &spack.archive {
        Some(a) => (
            "from the local archive of that commit".to_string(),
            unpack(&inputs::spack_archive_name(), a.sha256.as_str(), root),
        ),
        None => (
            format!("cloned from {}", plain("spack git URL", &spack.git)?),
            git_fetch(&spack.git, spack.commit.as_str(), root),
        ),
    };
    out.push_str(&format!(
        "# Spack {release} (commit {commit}), {how}.\n\
         RUN {fetch} \\\n \
         && grep -qx '__version__ = \"{version}\"' {root}/lib/spack/spack/__init__.py\n\n",
        release = plain("spack release", &spack.release)?,
        commit = spack.commit,
        version = plain("spack version", spack.version())?,
    ));
    let mut repos_yaml = vec!["'repos::'".to_string()];
    for r in &stack.repos {
        let dir = spack_yaml::repo_tree(r);
        let (how, fetch) = match &r.archive {
            Some(a) => (
                "from the local archive of that commit".to_string(),
                unpack(&inputs::repo_archive_name(r), a.sha256.as_str(), &dir),
            ),
            None => (
                format!("cloned from {}", plain("repo git URL", &r.git)?),
                git_fetch(&r.git, r.commit.as_str(), &dir),
            ),
        };
        let repo_dir = spack_yaml::repo_dir(r);
        out.push_str(&format!(
            "# Package repository {ns} (commit {commit}), {how}.\n\
             RUN {fetch} \\\n \
             && grep -Eq \"^ *namespace: *['\\\"]?{ns}['\\\"]? *$\" {repo_dir}/repo.yaml\n\n",
            ns = r.namespace,
            commit = r.commit,
        ));
        repos_yaml.push(format!("'  {}: {repo_dir}'", r.namespace));
    }
    let python = container::SPACK_PYTHON_ROOT;
    let (from, pip_source) = match &stack.python_wheels {
        Some(_) => (
            "the wheels given with the inputs",
            format!(" --no-index --find-links {}/wheels", inputs::CONTEXT_MOUNT),
        ),
        None => ("the Python package index", String::new()),
    };
    out.push_str(&format!(
        "ENV PATH={root}/bin:$PATH \\\n    SPACK_PYTHON={python}/bin/python3\n\n\
         # Spack's solver (clingo {clingo}) from {from}, in a Python of its own: Spack never\n\
         # bootstraps anything from GitHub.\n\
         RUN python3 -m venv {python} \\\n \
         && {python}/bin/pip install --no-cache-dir --disable-pip-version-check{pip_source} clingo=={clingo} \\\n \
         && {python}/bin/python3 -c 'import clingo'\n\n",
        clingo = spack.clingo,
    ));
    out.push_str(&format!(
        "# Site configuration for every user of the image: the pinned repositories only, no source\n\
         # to bootstrap from (clingo and GnuPG are here; disabling bootstrapping itself would also\n\
         # disable Spack's GnuPG), a build stage without the user's name in it, and the OS\n\
         # compiler. Spack's code is byte-compiled here, since no build user can write next to it.\n\
         RUN printf '%s\\n' {repos} >{root}/etc/spack/repos.yaml \\\n \
         && printf '%s\\n' 'bootstrap:' '  sources:: []' >{root}/etc/spack/bootstrap.yaml \\\n \
         && printf '%s\\n' 'config:' '  build_stage::' '  - /tmp/spack-stage' >{root}/etc/spack/config.yaml \\\n \
         && export SPACK_USER_CONFIG_PATH=/tmp/spack-image-user SPACK_USER_CACHE_PATH=/tmp/spack-image-user \\\n \
         && spack compiler find --scope site \\\n \
         && spack compiler list \\\n \
         && {python}/bin/python3 -m compileall -q {root}/lib/spack >/dev/null \\\n \
         && rm -rf /tmp/spack-image-user{cleanup}",
        repos = repos_yaml.join(" "),
        cleanup = if staged {
            format!(" {}", inputs::CONTEXT_MOUNT)
        } else {
            String::new()
        },
    ));
    Ok(out)
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
        ("spack_commit", stack.spack.commit.to_string()),
        ("spack_root", container::SPACK_ROOT.to_string()),
        ("spack_section", spack_section(stack)?),
        ("build_home", container::BUILD_HOME.to_string()),
        ("build_uid", container::BUILD_UID.to_string()),
        ("env_dir", container::ENV_DIR.to_string()),
        ("cache_dir", container::CACHE_DIR.to_string()),
        ("slurm_root", container::SLURM_ROOT.to_string()),
    ];
    let extras = stack.toolchain(c.toolchain.as_str());
    vars.push((
        "extra_packages",
        extras.packages.iter().map(|p| format!(" {p}")).collect(),
    ));
    if cell.family == OsFamily::Dnf {
        let repos = extras.dnf_repos;
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
            ("view_root", container::VIEW_ROOT.to_string()),
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
