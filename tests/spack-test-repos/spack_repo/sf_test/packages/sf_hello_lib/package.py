# A C shared library for the real-Spack build tests: nothing to download, the source is written
# at install time.
import os

from spack_repo.builtin.build_systems.generic import Package

from spack.package import *


class SfHelloLib(Package):
    """A small C shared library: libsfhello.so.1 with a libsfhello.so symlink, a header, and a
    data file that records its own absolute install prefix."""

    homepage = "https://github.com/vantagecompute/slurm-factory"
    has_code = False

    license("Apache-2.0")

    version("1.0")

    depends_on("c", type="build")

    def install(self, spec, prefix):
        mkdirp(prefix.lib)
        mkdirp(prefix.include)
        mkdirp(prefix.share.sf_hello)
        with open("sfhello.c", "w") as f:
            f.write('const char *sf_hello(void) { return "hello from libsfhello"; }\n')
        with open(join_path(prefix.include, "sfhello.h"), "w") as f:
            f.write("const char *sf_hello(void);\n")
        cc = Executable(spack_cc)
        cc("-shared", "-fPIC", "-Wl,-soname,libsfhello.so.1", "-o",
           join_path(prefix.lib, "libsfhello.so.1"), "sfhello.c")
        os.symlink("libsfhello.so.1", join_path(prefix.lib, "libsfhello.so"))
        # An absolute path in a text file: Spack relocates it with the prefix.
        with open(join_path(prefix.share.sf_hello, "prefix.txt"), "w") as f:
            f.write(prefix + "\n")
