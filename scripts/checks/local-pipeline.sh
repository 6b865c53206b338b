#!/usr/bin/env bash
# The README's main command runs end to end and leaves a tarball whose signature and checksums
# verify with tools that are not ours (gpg, sqv, sha256sum). It runs on its defaults whatever the
# calling shell exports, takes a relative --out from where it is called, and refuses to empty a
# directory it did not make.
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
