#!/usr/bin/env bash
# The README's main command runs end to end and leaves a tarball whose signature and checksums
# verify with tools that are not ours (gpg, sqv, sha256sum). It runs on its defaults whatever the
# calling shell exports, takes a relative --out from where it is called, and refuses to empty a
# directory it did not make. Then it runs again with --engine podman: the real Spack builds the
# rehearsal stack's real Slurm, and the tarball runs a one-node cluster before it is signed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
mkdir -p target
out="$root/target/local-pipeline"

# A directory the script did not make: refused (exit 2) before anything is built, left as it was.
# Relative to where the script is called from, not to the checkout.
keep=$(mktemp -d "$root/target/keep.XXXXXX")
trap 'rm -rf "$keep"' EXIT
echo precious >"$keep/file"
rc=0
(cd "$(dirname "$keep")" && bash "$root/scripts/local-pipeline.sh" --debug --out "$(basename "$keep")") \
    >"$out.refused.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || { echo "a foreign --out gave exit $rc" >&2; cat "$out.refused.log" >&2; exit 1; }
grep -q "out $keep is not empty and was not made by this script" "$out.refused.log" ||
    { echo "the refusal does not name $keep" >&2; cat "$out.refused.log" >&2; exit 1; }
if [ "$(cat "$keep/file")" != precious ] || [ "$(ls -A "$keep")" != file ]; then
    echo "the refused --out was changed" >&2
    exit 1
fi
grep -q "building the binaries" "$out.refused.log" && { echo "it built before refusing" >&2; exit 1; }

# A Slurm version the matrix does not have: exit 2, and no --out made.
rc=0
bash scripts/local-pipeline.sh --debug --out "$root/target/no-such-version" --slurm-version 99.99 \
    >"$out.badversion.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || { echo "--slurm-version 99.99 gave exit $rc" >&2; cat "$out.badversion.log" >&2; exit 1; }
grep -q "99.99" "$out.badversion.log" || { echo "the refusal does not name 99.99" >&2; cat "$out.badversion.log" >&2; exit 1; }
[ ! -e "$root/target/no-such-version" ] || { echo "a refused --slurm-version made its --out" >&2; exit 1; }

# The shell's own signing set-up (a pinned fingerprint of another key, a key that is not one)
# must not reach the rehearsal.
SF_SIGNING_FINGERPRINT=0123456789ABCDEF0123456789ABCDEF01234567 GPG_PRIVATE_KEY="not a key" \
    SF_DESTINATION="file:///nonexistent" \
    bash scripts/local-pipeline.sh --debug --out "$out" >"$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
[ -e "$out/.sf-local-pipeline" ] || { echo "no marker in $out" >&2; exit 1; }
tarball=$(find "$out/bucket/builds" -name '*-software.tar.gz' | head -n 1)
[ -n "$tarball" ] || { echo "no tarball in $out/bucket" >&2; exit 1; }
for f in "$tarball.asc" "$(dirname "$tarball")/SHA256SUMS" "$(dirname "$tarball")/SHA256SUMS.asc"; do
    [ -s "$f" ] || { echo "missing $f" >&2; exit 1; }
done
home=$(mktemp -d)
trap 'rm -rf "$home" "$keep"' EXIT
# The key the bucket publishes is the run's key, under the fingerprint published beside it.
fpr_of() { gpg --homedir "$home" --batch --with-colons --import-options show-only --import "$1" | awk -F: '/^fpr/ { print $10; exit }'; }
fpr=$(cat "$out/bucket/keys/signing-key.fingerprint")
if [ "$fpr" != "$(fpr_of "$out/work/key/public.asc")" ] || [ "$fpr" != "$(fpr_of "$out/bucket/keys/signing-key.asc")" ]; then
    echo "keys/ does not publish the signing key under its fingerprint ($fpr)" >&2
    exit 1
fi
[ -s "$out/bucket/keys/$fpr.asc" ] || { echo "no keys/$fpr.asc" >&2; exit 1; }
gpg --homedir "$home" --batch --quiet --import "$out/bucket/keys/signing-key.asc"
gpg --homedir "$home" --batch --quiet --verify "$tarball.asc" "$tarball" 2>"$home/gpg.log" || { cat "$home/gpg.log" >&2; exit 1; }
gpg --homedir "$home" --batch --quiet --dearmor -o "$home/keyring.pgp" "$out/bucket/keys/signing-key.asc"
sqv --keyring "$home/keyring.pgp" "$(dirname "$tarball")/SHA256SUMS.asc" "$(dirname "$tarball")/SHA256SUMS" >/dev/null
(cd "$(dirname "$tarball")" && sha256sum --quiet -c SHA256SUMS)
# (a listing file, not a pipe: grep -q would close the pipe early and tar would die of SIGPIPE)
tar -tzf "$tarball" >"$home/members"
grep -qx 'view/bin/sinfo' "$home/members"
grep -q "Slurm" "$out/summary.md"
echo "local pipeline: $(basename "$tarball") published, signature and SHA256SUMS verify with gpg, sqv and sha256sum"

# --engine podman on this machine: the rehearsal stack (the offline inputs are there: the test
# command gathers them). Podman as the Rust container tests run it (bins/sf-build/tests/support):
# their storage, where the rehearsal base image already is, and the Spack binary cache of the
# real-Spack test, which built this very Slurm (same recipe, externals and compiler: same hash),
# so the build reuses it instead of compiling Slurm a second time in the run.
storage="$root/target/tmp/sf-build-podman"
cache="$root/target/real-spack-run/container-build/cache"
[ -d "$cache" ] || cache="$root/target/local-pipeline-cache"
mkdir -p "$storage"
runroot=/tmp/sf-build-podman-run-$(printf %s "$storage" | sha256sum | cut -c1-8)
real="$root/target/local-pipeline-real"
start=$(date +%s)
engine_run() {
    bash scripts/local-pipeline.sh --debug --engine podman --out "$real" --cache-dir "$cache" \
        --engine-arg="--root=$storage/storage" --engine-arg="--runroot=$runroot" \
        --engine-arg=--storage-driver=vfs --engine-arg=--runtime=runc \
        --engine-arg=--cgroup-manager=cgroupfs --engine-arg=--events-backend=file \
        --run-arg=--ulimit=nofile=20000:20000 --run-arg=--ulimit=nproc=32768:32768 \
        --image-build-arg=--squash-all --image-build-arg=--layers=false >"$real.log" 2>&1
}
# A daemon of the test cluster has been seen to vanish while the node comes up, without a word in
# its log (2 runs in about 8 here; under investigation): that one failure is retried once, and
# said; any other fails at once.
if ! engine_run; then
    grep -q "a daemon is gone" "$real.log" || { tail -n 80 "$real.log" >&2; exit 1; }
    echo "local pipeline --engine podman: a cluster daemon vanished ($(grep -o 'running: [^)]*' "$real.log" | tail -n 1)); retrying once" >&2
    cp "$real.log" "$real.first.log"
    engine_run || { tail -n 80 "$real.log" >&2; exit 1; }
fi
for want in "building the rehearsal stack" "a one-node cluster ran srun and sbatch jobs from /" \
    "auth/slurm" "The tarball pipeline ran end to end (Slurm 24.11.5, bookworm)"; do
    grep -qF "$want" "$real.log" || { echo "not in the --engine podman run's output: $want" >&2; tail -n 80 "$real.log" >&2; exit 1; }
done
tarball=$(find "$real/bucket/builds" -name '*-software.tar.gz' | head -n 1)
tar -tzf "$tarball" >"$home/members"
for m in view/sbin/slurmctld view/sbin/slurmd view/bin/sbatch view/lib/slurm/auth_slurm.so; do
    grep -qx "$m" "$home/members" || { echo "$m is not in $tarball" >&2; exit 1; }
done
gpg --homedir "$home" --batch --quiet --import "$real/bucket/keys/signing-key.asc"
gpg --homedir "$home" --batch --quiet --verify "$tarball.asc" "$tarball" 2>"$home/gpg.log" || { cat "$home/gpg.log" >&2; exit 1; }
echo "local pipeline --engine podman: the real Slurm of the rehearsal stack built, ran a cluster, published and verified in $(($(date +%s) - start)) s ($(basename "$tarball"), $(($(stat -c %s "$tarball") / 1000000)) MB)"
