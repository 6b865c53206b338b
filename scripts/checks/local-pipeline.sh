#!/usr/bin/env bash
# The README's main command runs end to end and leaves a tarball whose signature and checksums
# verify with tools that are not ours (gpg, sqv, sha256sum).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(pwd)/target/local-pipeline"
bash scripts/local-pipeline.sh --debug --out "$out" >"$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
tarball=$(find "$out/bucket/builds" -name '*-software.tar.gz' | head -n 1)
[ -n "$tarball" ] || { echo "no tarball in $out/bucket" >&2; exit 1; }
for f in "$tarball.asc" "$(dirname "$tarball")/SHA256SUMS" "$(dirname "$tarball")/SHA256SUMS.asc"; do
    [ -s "$f" ] || { echo "missing $f" >&2; exit 1; }
done
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
gpg --homedir "$home" --batch --quiet --import "$out/work/key/public.asc"
gpg --homedir "$home" --batch --quiet --verify "$tarball.asc" "$tarball" 2>"$home/gpg.log" || { cat "$home/gpg.log" >&2; exit 1; }
gpg --homedir "$home" --batch --quiet --dearmor -o "$home/keyring.pgp" "$out/work/key/public.asc"
sqv --keyring "$home/keyring.pgp" "$(dirname "$tarball")/SHA256SUMS.asc" "$(dirname "$tarball")/SHA256SUMS" >/dev/null
(cd "$(dirname "$tarball")" && sha256sum --quiet -c SHA256SUMS)
# (a listing file, not a pipe: grep -q would close the pipe early and tar would die of SIGPIPE)
tar -tzf "$tarball" >"$home/members"
grep -qx 'view/bin/sinfo' "$home/members"
grep -q "Slurm" "$out/summary.md"
echo "local pipeline: $(basename "$tarball") published, signature and SHA256SUMS verify with gpg, sqv and sha256sum"
