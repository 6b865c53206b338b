# A stand-in for the project's Slurm recipe, for the real-Spack build tests: the same namespace,
# versions and variants, so sf-spackenv's specs concretize unchanged, but it compiles a small
# libslurm, sinfo, slurmctld and a plugin instead of Slurm itself (nothing to download).
import os

from spack_repo.builtin.build_systems.generic import Package

from spack.package import *


class Slurm(Package):
    """Stand-in Slurm: libslurm.so, sinfo, slurmctld and a plugin that report the release."""

    homepage = "https://slurm.schedmd.com"
    has_code = False

    license("GPL-2.0-or-later")

    # Spack names Slurm releases like their git tags: 25-11-6-1 is Slurm 25.11.6.
    version("25-11-6-1")
    version("24-11-6-1")
    version("24-11-5-1")
    version("23-11-11-1")

    variant("nvml", default=False, description="NVML (CUDA) GPU support")
    variant("rsmi", default=False, description="ROCm SMI GPU support")
    variant("sysconfdir", default="PREFIX/etc", values=any, description="configuration directory")

    depends_on("c", type="build")
    depends_on("sf-hello-lib")

    def release(self):
        return ".".join(str(self.spec.version).split("-")[:3])

    def install(self, spec, prefix):
        release = self.release()
        plugins = join_path(prefix.lib, "slurm")
        mkdirp(prefix.bin)
        mkdirp(prefix.sbin)
        mkdirp(plugins)
        mkdirp(prefix.include.slurm)
        with open("slurm.c", "w") as f:
            f.write(
                "#include <sfhello.h>\n"
                'const char *slurm_version_str(void) { return "slurm %s"; }\n'
                'const char *slurm_plugin_dir(void) { return "%s"; }\n'
                "const char *slurm_hello(void) { return sf_hello(); }\n" % (release, plugins)
            )
        with open("sinfo.c", "w") as f:
            f.write(
                "#include <stdio.h>\n#include <string.h>\n"
                "const char *slurm_version_str(void);\n"
                "int main(int c, char **v) {\n"
                '  if (c > 1 && !strcmp(v[1], "--version")) { puts(slurm_version_str()); return 0; }\n'
                "  return 2;\n}\n"
            )
        with open("plugin.c", "w") as f:
            f.write(
                "const char *slurm_version_str(void);\n"
                "const char *plugin_version(void) { return slurm_version_str(); }\n"
            )
        with open(join_path(prefix.include.slurm, "slurm_version.h"), "w") as f:
            f.write('#define SLURM_VERSION_STRING "%s"\n' % release)
        hello = spec["sf-hello-lib"].prefix
        cc = Executable(spack_cc)
        cc("-shared", "-fPIC", "-Wl,-soname,libslurm.so.1", "-I" + hello.include,
           "-o", join_path(prefix.lib, "libslurm.so.1"), "slurm.c",
           "-L" + hello.lib, "-lsfhello")
        os.symlink("libslurm.so.1", join_path(prefix.lib, "libslurm.so"))
        for exe, where in (("sinfo", prefix.bin), ("slurmctld", prefix.sbin)):
            cc("-o", join_path(where, exe), "sinfo.c", "-L" + prefix.lib, "-lslurm")
        cc("-shared", "-fPIC", "-o", join_path(plugins, "select_stand_in.so"), "plugin.c",
           "-L" + prefix.lib, "-lslurm")
