//! Packing real views: ELF files compiled here with gcc into a padded install tree, packed,
//! extracted somewhere else and run without LD_LIBRARY_PATH; the archive checked by real `tar` and
//! `gzip`; determinism; unsafe views and archives refused.

use std::fs;
use std::os::unix::fs::symlink;

use std::path::{Path, PathBuf};
use std::process::Command;

use sf_archive::pack::{extra, BUILDINFO};
use sf_archive::{BuildInfo, GzOptions, PackInput};
use sf_testkit::require_tool;

/// A padded install root like Spack's `padded_length: 128`.
fn padded_root(base: &Path) -> PathBuf {
    base.join("opt/software")
        .join("__spack_path_placeholder__".repeat(4))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Build libgreet (a shared library), a plugin using it, and two executables (one RUNPATH, one
/// old-style RPATH) as if into per-package prefixes of a padded install tree, then assemble a
/// view from copies of them. Returns (view, install root).
fn build_view(base: &Path) -> (PathBuf, PathBuf) {
    require_tool("gcc");
    let root = padded_root(base);
    let greet = root.join("linux-debian12-x86_64/gcc-12.2.0/greet-1.0-abcdefgh");
    let slurm = root.join("linux-debian12-x86_64/gcc-12.2.0/slurm-25.11.0-ijklmnop");
    for d in [
        greet.join("lib"),
        slurm.join("bin"),
        slurm.join("lib/slurm"),
    ] {
        fs::create_dir_all(d).unwrap();
    }
    let src = base.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("greet.c"),
        "const char *greet_version(void) { return \"slurm 25.11.0\"; }\n",
    )
    .unwrap();
    fs::write(
        src.join("sinfo.c"),
        "#include <stdio.h>\n#include <string.h>\nconst char *greet_version(void);\n\
         int main(int c, char **v) { if (c > 1 && !strcmp(v[1], \"--version\")) { puts(greet_version()); return 0; } return 1; }\n",
    )
    .unwrap();
    fs::write(
        src.join("plugin.c"),
        "const char *greet_version(void);\nconst char *plugin(void) { return greet_version(); }\n",
    )
    .unwrap();
    let glib = greet.join("lib");
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(glib.join("libgreet.so"))
        .arg(src.join("greet.c")));
    let rpath = format!(
        "-Wl,-rpath,{}:{}",
        glib.display(),
        slurm.join("lib").display()
    );
    run(Command::new("gcc")
        .arg("-o")
        .arg(slurm.join("bin/sinfo"))
        .arg(src.join("sinfo.c"))
        .arg(format!("-L{}", glib.display()))
        .args(["-lgreet", &rpath, "-Wl,--enable-new-dtags"]));
    run(Command::new("gcc")
        .arg("-o")
        .arg(slurm.join("bin/squeue"))
        .arg(src.join("sinfo.c"))
        .arg(format!("-L{}", glib.display()))
        .args(["-lgreet", &rpath, "-Wl,--disable-new-dtags"]));
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(slurm.join("lib/slurm/auth_greet.so"))
        .arg(src.join("plugin.c"))
        .arg(format!("-L{}", glib.display()))
        .args(["-lgreet", &format!("-Wl,-rpath,{}", glib.display())]));

    let view = base.join("view");
    for d in ["bin", "lib/slurm", "etc/slurm"] {
        fs::create_dir_all(view.join(d)).unwrap();
    }
    fs::copy(slurm.join("bin/sinfo"), view.join("bin/sinfo")).unwrap();
    fs::copy(slurm.join("bin/squeue"), view.join("bin/squeue")).unwrap();
    fs::copy(glib.join("libgreet.so"), view.join("lib/libgreet.so.1")).unwrap();
    symlink("libgreet.so.1", view.join("lib/libgreet.so")).unwrap();
    fs::copy(
        slurm.join("lib/slurm/auth_greet.so"),
        view.join("lib/slurm/auth_greet.so"),
    )
    .unwrap();
    // A text file that still names the build prefix: listed in BUILDINFO.
    fs::write(
        view.join("etc/slurm/slurm.conf.example"),
        format!("PluginDir={}/lib/slurm\n", slurm.display()),
    )
    .unwrap();
    fs::write(view.join("etc/slurm/plain.txt"), "nothing to see\n").unwrap();
    (view, root)
}

fn input(view: &Path, root: &Path) -> PackInput {
    let mut info = BuildInfo::new();
    info.slurm_version = Some("25.11".into());
    info.toolchain = "bookworm".into();
    PackInput {
        view: view.to_path_buf(),
        build_prefixes: vec![root.display().to_string()],
        extras: vec![
            extra(
                "modules/slurm/25.11-bookworm.lua",
                "setenv(\"SLURM_ROOT\", \"/x\")\n",
                false,
            ),
            extra(
                "data/slurm_assets/slurm_install.sh",
                "#!/bin/sh\necho hi\n",
                true,
            ),
        ],
        buildinfo: info,
        source_date_epoch: Some(1_700_000_000),
        gzip: GzOptions {
            threads: 2,
            block_size: 64 * 1024,
            ..Default::default()
        },
    }
}

#[test]
fn relocated_binaries_run_from_another_prefix_without_ld_library_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (view, root) = build_view(tmp.path());
    // The same ELF file under a second name one level deeper: it needs its own $ORIGIN path, so
    // it cannot share the first name's bytes in the archive.
    fs::create_dir_all(view.join("libexec/slurm")).unwrap();
    fs::hard_link(view.join("bin/sinfo"), view.join("libexec/slurm/sinfo")).unwrap();
    let out = tmp.path().join("slurm.tar.gz");
    let report = sf_archive::pack(&input(&view, &root), &out, false).unwrap();
    assert_eq!(
        report.buildinfo.relocation.elf_relocated,
        [
            "view/bin/sinfo",
            "view/bin/squeue",
            "view/lib/slurm/auth_greet.so",
            "view/libexec/slurm/sinfo"
        ]
    );
    assert_eq!(
        report.buildinfo.relocation.files_with_build_prefix,
        ["view/etc/slurm/slurm.conf.example"]
    );

    // The build tree disappears, as it does when the tarball reaches a user's machine.
    fs::remove_dir_all(tmp.path().join("opt")).unwrap();
    let dest = tmp.path().join("elsewhere/prefix");
    let x = sf_archive::extract(&out, &dest).unwrap();
    assert_eq!(x.entries, report.entries);
    for bin in ["bin/sinfo", "bin/squeue", "libexec/slurm/sinfo"] {
        let o = Command::new(dest.join("view").join(bin))
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), "slurm 25.11.0\n");
    }
    let readelf = run(Command::new(require_tool("readelf"))
        .arg("-d")
        .arg(dest.join("view/bin/sinfo")));
    assert!(
        readelf.contains("Library runpath: [$ORIGIN/../lib]"),
        "{readelf}"
    );
    let readelf = run(Command::new("readelf")
        .arg("-d")
        .arg(dest.join("view/bin/squeue")));
    assert!(
        readelf.contains("Library rpath: [$ORIGIN/../lib]"),
        "{readelf}"
    );
    let readelf = run(Command::new("readelf")
        .arg("-d")
        .arg(dest.join("view/lib/slurm/auth_greet.so")));
    assert!(readelf.contains("[$ORIGIN/..]"), "{readelf}");
    let readelf = run(Command::new("readelf")
        .arg("-d")
        .arg(dest.join("view/libexec/slurm/sinfo")));
    assert!(readelf.contains("[$ORIGIN/../../lib]"), "{readelf}");
    let ldd = run(Command::new(require_tool("ldd"))
        .arg(dest.join("view/lib/slurm/auth_greet.so"))
        .env_clear());
    assert!(!ldd.contains("not found"), "{ldd}");
    // The view on disk is left as it was: only the archive's copy is patched.
    let original = run(Command::new("readelf")
        .arg("-d")
        .arg(view.join("bin/sinfo")));
    assert!(original.contains("__spack_path_placeholder__"));
    let info: BuildInfo = serde_json::from_slice(&fs::read(dest.join(BUILDINFO)).unwrap()).unwrap();
    assert_eq!(info.build_date, "2023-11-14T22:13:20Z");
    assert_eq!(info, report.buildinfo);
}

#[test]
fn tar_and_gzip_accept_the_archive_and_two_packs_are_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (view, root) = build_view(tmp.path());
    let a = tmp.path().join("a.tar.gz");
    let b = tmp.path().join("b.tar.gz");
    let mut inp = input(&view, &root);
    let ra = sf_archive::pack(&inp, &a, false).unwrap();
    inp.gzip.threads = 1; // the thread count must not change a byte
    let rb = sf_archive::pack(&inp, &b, false).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(ra.gzip.sha256, rb.gzip.sha256);
    let sum = run(Command::new(require_tool("sha256sum")).arg(&a));
    assert!(sum.starts_with(&ra.gzip.sha256));
    assert_eq!(ra.gzip.compressed_size, fs::metadata(&a).unwrap().len());

    run(Command::new(require_tool("gzip")).arg("-t").arg(&a));
    let listing = run(Command::new(require_tool("tar")).arg("-tvzf").arg(&a));
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1)
        .collect();
    let names: Vec<&str> = listing
        .lines()
        .zip(names)
        .map(|(l, n)| {
            if l.starts_with('l') {
                l.split(" -> ").next().unwrap().rsplit(' ').next().unwrap()
            } else {
                n
            }
        })
        .collect();
    assert_eq!(
        names,
        [
            "data/",
            "data/slurm_assets/",
            "data/slurm_assets/slurm_install.sh",
            "modules/",
            "modules/slurm/",
            "modules/slurm/25.11-bookworm.lua",
            "view/",
            "view/bin/",
            "view/bin/sinfo",
            "view/bin/squeue",
            "view/etc/",
            "view/etc/slurm/",
            "view/etc/slurm/plain.txt",
            "view/etc/slurm/slurm.conf.example",
            "view/lib/",
            "view/lib/libgreet.so",
            "view/lib/libgreet.so.1",
            "view/lib/slurm/",
            "view/lib/slurm/auth_greet.so",
            "BUILDINFO.json",
        ]
    );
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "{line}");
        assert!(line.contains("2023-11-14"), "mtime not clamped: {line}");
        let mode = &line[..10];
        assert!(
            ["drwxr-xr-x", "-rwxr-xr-x", "-rw-r--r--", "lrwxrwxrwx"].contains(&mode),
            "{line}"
        );
    }
    // GNU tar extracts it too, and the files match ours.
    let gnu = tmp.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    run(Command::new("tar").arg("-xzf").arg(&a).arg("-C").arg(&gnu));
    let ours = tmp.path().join("ours");
    sf_archive::extract(&a, &ours).unwrap();
    assert_eq!(
        fs::read(gnu.join("view/bin/sinfo")).unwrap(),
        fs::read(ours.join("view/bin/sinfo")).unwrap()
    );

    // Refuses to overwrite without force; replaces with it.
    let e = sf_archive::pack(&inp, &a, false).unwrap_err();
    assert_eq!(sf_core::exit::code_for(&e), 2);
    assert!(e.to_string().contains("--force"), "{e}");
    sf_archive::pack(&inp, &a, true).unwrap();
}

#[test]
fn large_streams_keep_working_across_many_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("share")).unwrap();
    // 6 MB of mixed data across a few files, packed with small blocks: many members in flight.
    for i in 0..6u32 {
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|j| ((j.wrapping_mul(2654435761) >> (i + 13)) % 251) as u8)
            .collect();
        fs::write(view.join(format!("share/blob{i}")), data).unwrap();
    }
    let mut inp = input(&view, Path::new("/nonexistent-prefix"));
    inp.gzip.block_size = 32 * 1024;
    let out = tmp.path().join("x.tar.gz");
    let r = sf_archive::pack(&inp, &out, false).unwrap();
    assert!(r.gzip.uncompressed_size > 6_000_000);
    run(Command::new("gzip").arg("-t").arg(&out));
    let dest = tmp.path().join("x");
    sf_archive::extract(&out, &dest).unwrap();
    for i in 0..6 {
        let name = format!("share/blob{i}");
        assert_eq!(
            fs::read(view.join(&name)).unwrap(),
            fs::read(dest.join("view").join(&name)).unwrap()
        );
    }
}

#[test]
fn unsafe_views_are_refused_and_nothing_is_written() {
    let cases: [(&str, &str); 3] = [
        ("../../../etc/passwd", "escapes the view"),
        ("/etc/passwd", "points outside the view"),
        ("../..", "escapes the view"),
    ];
    for (target, why) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let view = tmp.path().join("view");
        fs::create_dir_all(view.join("lib")).unwrap();
        symlink(target, view.join("lib/evil")).unwrap();
        let out = tmp.path().join("out.tar.gz");
        let e =
            sf_archive::pack(&input(&view, Path::new("/opt/nothing")), &out, false).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2, "{target}: {e:#}");
        assert!(format!("{e:#}").contains(why), "{target}: {e:#}");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "something was written for {target}"
        );
    }
    // A missing view is bad input too.
    let tmp = tempfile::tempdir().unwrap();
    let e = sf_archive::pack(
        &input(&tmp.path().join("nope"), Path::new("/x")),
        &tmp.path().join("o.tgz"),
        false,
    )
    .unwrap_err();
    assert_eq!(sf_core::exit::code_for(&e), 2);
}

#[test]
fn symlink_chains_that_leave_the_view_are_refused() {
    // `a/b/c/sh` names the view root and `esc` stays in `a/b` by its own text, yet
    // `esc` -> `a/b/c/sh/../..` resolves above the view once `sh` is followed.
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("a/b/c")).unwrap();
    symlink("../../..", view.join("a/b/c/sh")).unwrap();
    symlink("a/b/c/sh/../..", view.join("esc")).unwrap();
    // What the kernel makes of it: above the view.
    let real = fs::canonicalize(view.join("esc")).unwrap();
    assert!(!real.starts_with(&view), "{}", real.display());
    let out = tmp.path().join("out.tar.gz");
    let e = sf_archive::pack(&input(&view, Path::new("/opt/nothing")), &out, false).unwrap_err();
    assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("view/esc") && msg.contains("escapes the view"),
        "{msg}"
    );
    assert!(msg.contains("a/b/c/sh"), "{msg}");
    assert!(!out.exists());

    // A loop is refused too; a chain that stays inside is packed.
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("lib")).unwrap();
    symlink("b", view.join("lib/a")).unwrap();
    symlink("a", view.join("lib/b")).unwrap();
    let e =
        sf_archive::pack(&input(&view, Path::new("/x")), &tmp.path().join("o"), false).unwrap_err();
    assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
    assert!(format!("{e:#}").contains("loop"), "{e:#}");
    fs::remove_file(view.join("lib/b")).unwrap();
    fs::create_dir_all(view.join("a/b/c")).unwrap();
    symlink("../../..", view.join("a/b/c/sh")).unwrap();
    symlink("a/b/c/sh/lib", view.join("ok")).unwrap();
    sf_archive::pack(&input(&view, Path::new("/x")), &tmp.path().join("o"), false).unwrap();
}

#[test]
fn dangling_absolute_links_are_refused_and_the_view_root_is_a_target() {
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("lib")).unwrap();
    // Its target was never merged into the view: the longest tail that exists is the link.
    symlink(
        "/opt/build/linux-x86_64/gcc-13/pkg-1-abc/lib/libx.so",
        view.join("lib/libx.so"),
    )
    .unwrap();
    let out = tmp.path().join("o.tar.gz");
    let e = sf_archive::pack(&input(&view, Path::new("/opt/build")), &out, false).unwrap_err();
    assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
    assert!(format!("{e:#}").contains("points at nothing"), "{e:#}");
    assert!(!out.exists());

    // A link to the view's build-time location is a link to the view root.
    fs::remove_file(view.join("lib/libx.so")).unwrap();
    fs::create_dir_all(view.join("share/x")).unwrap();
    symlink("/opt/slurm/view", view.join("share/x/root")).unwrap();
    let mut inp = input(&view, Path::new("/opt/build"));
    inp.build_prefixes.push("/opt/slurm/view".into());
    sf_archive::pack(&inp, &out, false).unwrap();
    let dest = tmp.path().join("d");
    sf_archive::extract(&out, &dest).unwrap();
    assert_eq!(
        fs::read_link(dest.join("view/share/x/root")).unwrap(),
        Path::new("../..")
    );
    assert_eq!(
        fs::canonicalize(dest.join("view/share/x/root")).unwrap(),
        fs::canonicalize(dest.join("view")).unwrap()
    );
}

#[test]
fn hard_links_are_stored_once_and_come_back_as_links() {
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("lib/dri")).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    fs::write(view.join("lib/dri/b_dri.so"), &data).unwrap();
    fs::hard_link(view.join("lib/dri/b_dri.so"), view.join("lib/dri/a_dri.so")).unwrap();
    fs::hard_link(view.join("lib/dri/b_dri.so"), view.join("lib/dri/c_dri.so")).unwrap();
    let out = tmp.path().join("o.tar.gz");
    let r = sf_archive::pack(&input(&view, Path::new("/opt/build")), &out, false).unwrap();
    assert!(
        r.gzip.uncompressed_size < 2 * data.len() as u64,
        "stored more than once: {}",
        r.gzip.uncompressed_size
    );
    let listing = run(Command::new("tar").arg("-tvzf").arg(&out));
    assert!(
        listing.contains("view/lib/dri/b_dri.so link to view/lib/dri/a_dri.so"),
        "{listing}"
    );
    for dest in [tmp.path().join("ours"), tmp.path().join("gnu")] {
        if dest.ends_with("gnu") {
            fs::create_dir(&dest).unwrap();
            run(Command::new("tar")
                .arg("-xzf")
                .arg(&out)
                .arg("-C")
                .arg(&dest));
        } else {
            sf_archive::extract(&out, &dest).unwrap();
        }
        for n in ["a", "b", "c"] {
            assert_eq!(
                fs::read(dest.join(format!("view/lib/dri/{n}_dri.so"))).unwrap(),
                data
            );
        }
    }
}

#[test]
fn an_absolute_link_into_the_build_tree_becomes_relative() {
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("lib")).unwrap();
    fs::create_dir_all(view.join("bin")).unwrap();
    fs::write(view.join("lib/libx.so.1"), "x").unwrap();
    symlink("/opt/build/pkg-1-abc/lib/libx.so.1", view.join("bin/libx")).unwrap();
    let out = tmp.path().join("o.tar.gz");
    sf_archive::pack(&input(&view, Path::new("/opt/build")), &out, false).unwrap();
    let dest = tmp.path().join("d");
    sf_archive::extract(&out, &dest).unwrap();
    assert_eq!(
        fs::read_link(dest.join("view/bin/libx")).unwrap(),
        Path::new("../lib/libx.so.1")
    );
}

#[test]
fn an_rpath_that_would_grow_is_a_clear_error() {
    require_tool("gcc");
    let tmp = tempfile::tempdir().unwrap();
    // A short, unpadded prefix: "$ORIGIN/../lib" is longer than "/p/lib".
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("bin")).unwrap();
    fs::create_dir_all(view.join("lib")).unwrap();
    let src = tmp.path().join("m.c");
    fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    run(Command::new("gcc")
        .arg("-o")
        .arg(view.join("bin/m"))
        .arg(&src)
        .arg("-Wl,-rpath,/p/lib"));
    let e = sf_archive::pack(
        &input(&view, Path::new("/p")),
        &tmp.path().join("o.tgz"),
        false,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("padded"), "{e:#}");
    assert!(!tmp.path().join("o.tgz").exists());
}

/// One raw tar member: name, type, link target.
type Member<'a> = (&'a str, tar::EntryType, &'a str);

/// Write a tar.gz with raw member names (as an attacker would), bypassing the tar crate's checks.
fn evil_tarball(path: &Path, members: &[Member]) {
    let f = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, link) in members {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"pwned\n"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            let l = &mut h.as_gnu_mut().unwrap().linkname;
            l[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn unsafe_archives_are_refused_before_anything_is_extracted() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let cases: Vec<(Vec<Member>, &str)> = vec![
        (
            vec![("ok", Regular, ""), ("/tmp/sf-evil-abs", Regular, "")],
            "absolute",
        ),
        (
            vec![("ok", Regular, ""), ("a/../../sf-evil", Regular, "")],
            "'..'",
        ),
        (vec![("etc", Symlink, "/etc")], "escapes"),
        (
            vec![("d", Directory, ""), ("d/up", Symlink, "../..")],
            "escapes",
        ),
        (
            vec![
                ("d", Directory, ""),
                ("d/p", Symlink, ".."),
                ("d/p/x", Regular, ""),
            ],
            "below the symlink",
        ),
        (
            vec![
                ("a/b/c", Directory, ""),
                ("a/b/c/sh", Symlink, "../../.."),
                ("esc", Symlink, "a/b/c/sh/../.."),
            ],
            "escapes the destination",
        ),
        (
            vec![
                ("esc", Symlink, "a/b/c/sh/../.."),
                ("a/b/c", Directory, ""),
                ("a/b/c/sh", Symlink, "../../.."),
            ],
            "through the symlink \"a/b/c/sh\"",
        ),
        (vec![("l1", Symlink, "l2"), ("l2", Symlink, "l1")], "a loop"),
        (
            vec![("d/p/x", Regular, ""), ("d/p", Symlink, "..")],
            "below the symlink",
        ),
        (vec![("h", Link, "/etc/passwd")], "absolute"),
        (vec![("h", Link, "nothing")], "earlier regular file"),
        (vec![("ok", Regular, ""), ("ok", Regular, "")], "twice"),
        (vec![("fifo", tar::EntryType::Fifo, "")], "Fifo"),
    ];
    for (members, why) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("evil.tar.gz");
        evil_tarball(&t, &members);
        let dest = tmp.path().join("dest");
        let e = sf_archive::extract(&t, &dest).unwrap_err();
        assert_eq!(sf_core::exit::code_for(&e), 2, "{members:?}: {e:#}");
        assert!(format!("{e:#}").contains(why), "{members:?}: {e:#}");
        assert!(!dest.exists(), "{members:?}: the destination was touched");
    }
    assert!(!Path::new("/tmp/sf-evil-abs").exists());
}

#[test]
fn a_name_with_a_newline_is_refused_and_dangling_links_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let view = tmp.path().join("view");
    fs::create_dir_all(view.join("lib")).unwrap();
    fs::write(view.join("lib/libok.so"), b"ok").unwrap();
    fs::write(view.join("lib/two\nlines.so"), b"x").unwrap();
    let out = tmp.path().join("out.tar.gz");
    let e = sf_archive::pack(&input(&view, Path::new("/opt/nothing")), &out, false).unwrap_err();
    assert_eq!(sf_core::exit::code_for(&e), 2, "{e:#}");
    assert!(
        format!("{e:#}").contains("\"two\\nlines.so\" holds a control character"),
        "{e:#}"
    );
    assert!(!out.exists());

    // A link to nothing in the view ships (an excluded dependency, say) and is named.
    fs::remove_file(view.join("lib/two\nlines.so")).unwrap();
    symlink("libgone.so.1", view.join("lib/libgone.so")).unwrap();
    symlink("libok.so", view.join("lib/libok.so.1")).unwrap();
    let report = sf_archive::pack(&input(&view, Path::new("/opt/nothing")), &out, false).unwrap();
    assert_eq!(
        report.dangling_links,
        ["view/lib/libgone.so -> libgone.so.1"]
    );
}
