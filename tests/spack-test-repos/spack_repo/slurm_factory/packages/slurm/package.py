# Slurm itself, for the real-Slurm tests: the project's namespace and variants, built from
# SchedMD's release archive with nothing but the compiler and the C library, so it builds
# offline in minutes. Authentication is Slurm's own auth/slurm (munge is left out); the optional
# libraries (hwloc, json-c, lz4, readline, ...) are not in the build image, so configure leaves
# out what needs them.
from spack_repo.builtin.build_systems.autotools import AutotoolsPackage

from spack.package import *


class Slurm(AutotoolsPackage):
    """Slurm workload manager: controller, node daemon, client commands, plugins."""

    homepage = "https://slurm.schedmd.com"
    url = "https://github.com/SchedMD/slurm/archive/slurm-24-11-5-1.tar.gz"

    license("GPL-2.0-or-later")

    # Debian's slurm-wlm_24.11.5.orig.tar.gz, which is SchedMD's tag archive; the test command
    # fetches it from Debian's source packages into the tests' local source mirror.
    version("24-11-5-1", sha256="e1a5547edd212c38b5e3230a284133f777b32746551f094aaa81cc4af375e332")

    variant("nvml", default=False, description="NVML (CUDA) GPU support")
    variant("rsmi", default=False, description="ROCm SMI GPU support")
    variant(
        "sysconfdir", default="PREFIX/etc", values=any, description="configuration directory"
    )

    depends_on("c", type="build")

    def configure_args(self):
        # Only what the image has: no munge, no optional libraries or daemons that need them.
        args = [
            "--with-munge=no",
            "--disable-x11",
            "--disable-pam",
            "--disable-slurmrestd",
            "--disable-sview",
            "--disable-debug",
        ]
        sysconfdir = self.spec.variants["sysconfdir"].value
        if sysconfdir != "PREFIX/etc":
            args.append(f"--sysconfdir={sysconfdir}")
        return args
