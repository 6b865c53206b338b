# shellcheck shell=bash
# A small Slurm-like view for rehearsals without the container build: real ELF binaries compiled
# here (libslurm, sinfo, an auth plugin) linked with RPATHs into a padded build prefix, as Spack
# leaves them, plus a man page and a header. Sourced by scripts/local-pipeline.sh and
# scripts/checks/act.sh; needs cc.
#
#   small_view PREFIX RELEASE SRC_DIR   (PREFIX is the view; sources go to SRC_DIR)

small_view() {
    local prefix=$1 release=$2 src=$3
    mkdir -p "$src" "$prefix/lib/slurm" "$prefix/bin"
    printf 'const char *slurm_version_str(void) { return "slurm %s"; }\n' "$release" >"$src/slurm.c"
    cat >"$src/sinfo.c" <<'C'
#include <stdio.h>
#include <string.h>
const char *slurm_version_str(void);
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) { puts(slurm_version_str()); return 0; }
    puts("PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST");
    return 0;
}
C
    printf 'const char *slurm_version_str(void);\nconst char *plugin_version(void) { return slurm_version_str(); }\n' >"$src/plugin.c"
    cc -shared -fPIC -Wl,-soname,libslurm.so.1 -o "$prefix/lib/libslurm.so.1" "$src/slurm.c"
    ln -sf libslurm.so.1 "$prefix/lib/libslurm.so"
    cc -o "$prefix/bin/sinfo" "$src/sinfo.c" -L"$prefix/lib" -lslurm -Wl,-rpath,"$prefix/lib"
    cc -shared -fPIC -o "$prefix/lib/slurm/auth_munge.so" "$src/plugin.c" -L"$prefix/lib" -lslurm -Wl,-rpath,"$prefix/lib"
    mkdir -p "$prefix/share/man/man1" "$prefix/include/slurm"
    printf '.TH SINFO 1\n' >"$prefix/share/man/man1/sinfo.1"
    printf '#define SLURM_VERSION_STRING "%s"\n' "$release" >"$prefix/include/slurm/slurm_version.h"
}
