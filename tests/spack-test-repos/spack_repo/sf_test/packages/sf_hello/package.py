# An executable linked to sf-hello-lib, for the real-Spack build tests.
import os

from spack_repo.builtin.build_systems.generic import Package

from spack.package import *


class SfHello(Package):
    """A small C program linked to libsfhello, with a symlink to it and a data file naming the
    library's absolute install prefix."""

    homepage = "https://github.com/vantagecompute/slurm-factory"
    has_code = False

    license("Apache-2.0")

    version("1.0")

    depends_on("c", type="build")
    depends_on("sf-hello-lib")

    def install(self, spec, prefix):
        mkdirp(prefix.bin)
        mkdirp(prefix.share.sf_hello)
        lib = spec["sf-hello-lib"].prefix
        with open("main.c", "w") as f:
            f.write(
                "#include <stdio.h>\n#include <sfhello.h>\n"
                'int main(void) { puts(sf_hello()); return 0; }\n'
            )
        cc = Executable(spack_cc)
        cc("-o", join_path(prefix.bin, "sf-hello"), "main.c",
           "-I" + lib.include, "-L" + lib.lib, "-lsfhello")
        os.symlink("sf-hello", join_path(prefix.bin, "sf-hello-link"))
        with open(join_path(prefix.share.sf_hello, "lib-prefix.txt"), "w") as f:
            f.write(lib + "\n")
