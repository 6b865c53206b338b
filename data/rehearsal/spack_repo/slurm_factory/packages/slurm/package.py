# Slurm for the rehearsal stack: the project's namespace and variants, built from SchedMD's
# release archive (from a local source mirror) with the libraries the build image's OS provides
# as Spack externals, so it builds offline in minutes. Authentication is Slurm's own auth/slurm
# (it needs libjwt); munge is left out.
from spack_repo.builtin.build_systems.autotools import AutotoolsPackage

from spack.package import *


class Slurm(AutotoolsPackage):
    """Slurm workload manager: controller, node daemon, client commands, plugins."""

    homepage = "https://slurm.schedmd.com"
    url = "https://github.com/SchedMD/slurm/archive/slurm-24-11-5-1.tar.gz"

    license("GPL-2.0-or-later")

    # Debian's slurm-wlm_24.11.5.orig.tar.gz, which is SchedMD's tag archive
    # (scripts/offline-inputs.sh puts it into a local source mirror).
    version("24-11-5-1", sha256="e1a5547edd212c38b5e3230a284133f777b32746551f094aaa81cc4af375e332")

    variant("nvml", default=False, description="NVML (CUDA) GPU support")
    variant("rsmi", default=False, description="ROCm SMI GPU support")
    variant(
        "sysconfdir", default="PREFIX/etc", values=any, description="configuration directory"
    )

    depends_on("c", type="build")
    # auth/slurm and cred/slurm are built only with libjwt.
    depends_on("libjwt")
    depends_on("json-c")
    depends_on("lz4")
    depends_on("hwloc")
    depends_on("readline")
    # configure links libnuma whenever it finds it (no switch): named, so it is no hidden one.
    depends_on("numactl")

    def configure_args(self):
        spec = self.spec
        args = [
            "--with-munge=no",
            f"--with-jwt={spec['libjwt'].prefix}",
            f"--with-json={spec['json-c'].prefix}",
            f"--with-lz4={spec['lz4'].prefix}",
            f"--with-hwloc={spec['hwloc'].prefix}",
            "--with-readline",
            "--disable-x11",
            "--disable-pam",
            "--disable-slurmrestd",
            "--disable-sview",
            "--disable-debug",
        ]
        sysconfdir = spec.variants["sysconfdir"].value
        if sysconfdir != "PREFIX/etc":
            args.append(f"--sysconfdir={sysconfdir}")
        return args
