#!/usr/bin/env bash
# `act` in host mode runs the tarball pipeline's publish workflow (publish-slurm-tarball.yml, the
# jobs build-and-publish-slurm-tarball.yml calls after its builds) against moto, minting AWS
# credentials through GitHub OIDC from a local token endpoint, and the tarball, its signature and
# the signed SHA256SUMS end up in the bucket at the storage layout's keys, with the CDN paths
# invalidated. docs/act.md describes the same commands.
#
# What cannot run here is stood in for, nothing else: GitHub's hosted actions (their code lives on
# GitHub) by tests/act/actions/* through act's --local-repository, GitHub's OIDC token service by
# tests/act/token_endpoint.py. The signed tarball the build job would upload is made here with our
# binaries exactly as that job's steps make it, minus the containerised Spack build (a small view
# of real ELF binaries is packed instead, as scripts/local-pipeline.sh does).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
# shellcheck source=scripts/lib/small-view.sh
source scripts/lib/small-view.sh

fail() { echo "act check: $*" >&2; exit 1; }
for tool in act moto_server python3 cc git cargo; do
    command -v "$tool" >/dev/null || fail "$tool is missing (the test command installs it from scripts/deps)"
done
python3 -c 'import boto3' 2>/dev/null || fail "python3 cannot import boto3 (scripts/deps/workflows.pip; the test command installs it)"

target_dir=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")
cargo build --bins -q
bin="$target_dir/debug"
work="$target_dir/act-check"
rm -rf "$work"
mkdir -p "$work"
log="$work/act.log"

# act's copy of the checkout (its workspace) and tool cache live outside the target folder: cargo
# records sources under the target folder by their absolute path, so a build from a copy in there
# would leave the checkout's own build stale once the copy is gone.
act_cache=$(mktemp -d "${TMPDIR:-/tmp}/sf-act-check.XXXXXX")
pids=()
stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$act_cache"
}
trap stop EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for WHAT COMMAND...: up to 20 s
    for _ in $(seq 1 100); do "${@:2}" >/dev/null 2>&1 && return 0; sleep 0.2; done
    fail "$1 did not start"
}

# The local AWS: the test command's moto, or one started here when run on its own.
moto=${SF_TEST_MOTO_URL:-}
if [ -z "$moto" ]; then
    port=$(free_port)
    moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
    pids+=($!)
    moto="http://127.0.0.1:$port"
    wait_for "moto on $moto" curl -fsS "$moto/moto-api/"
fi
run_id=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
bucket="sf-act-$run_id"
python3 tests/act/moto_client.py "$moto" bucket "$bucket"
distribution=$(python3 tests/act/moto_client.py "$moto" distribution "$bucket")

# The runner's OIDC token endpoint; its bearer token reaches act only through a file.
request_token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
mkdir -p "$work/token"
ACT_REQUEST_TOKEN=$request_token python3 tests/act/token_endpoint.py "$work/token" 2>"$work/token.log" &
pids+=($!)
wait_for "the token endpoint" test -s "$work/token/url"

# The plan job's output: the matrix of one cell, its destination the bucket.
export SF_DESTINATION="s3://$bucket" SF_CDN_URL="$moto/$bucket"
"$bin/sf-matrix" --pipeline tarball --slurm-versions 25.11 --toolchains noble >"$work/matrix.json"
cell() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["include"][0]; print(eval("c"+sys.argv[2]))' "$work/matrix.json" "$1"; }
cell_id=$(cell '["id"]')
tarball_name=$(cell '["tarball"]["file_name"]')
release=$(cell '["slurm_release"]')

# The build job's artifact tarball-{cell}: dist/ (tarball, .asc, SHA256SUMS, SHA256SUMS.asc) and
# cert/signing-key.asc, made by that job's own steps (sf-spackenv, pack, sf-sign file, sums, key
# export) with an ephemeral key given as the GPG_PRIVATE_KEY secret is.
store="$work/artifacts"
artifact="$store/tarball-$cell_id"
mkdir -p "$artifact/dist" "$artifact/cert" "$work/key" "$work/results"
(
    export SF_RESULTS_DIR="$work/results"
    "$bin/sf-spackenv" --cell "$work/matrix.json" --out "$work/env"
    prefix="$work/build/$(printf '__spack_path_placeholder__%.0s' 1 2 3 4)/slurm-$release"
    small_view "$prefix" "$release" "$work/src"
    "$bin/sf-build" pack --cell "$work/matrix.json" --view "$prefix" --env-dir "$work/env" \
        --build-prefix "$prefix" --out "$artifact/dist/$tarball_name"
    env -u GPG_PASSPHRASE "$bin/sf-sign" key generate --out "$work/key/secret.asc" \
        --uid "Slurm Factory act rehearsal <act@example.invalid>" --expires 1d >"$work/key/generated.json"
    GPG_PRIVATE_KEY=$(cat "$work/key/secret.asc")
    export GPG_PRIVATE_KEY
    "$bin/sf-sign" file "$artifact/dist/$tarball_name"
    "$bin/sf-sign" sums "$artifact/dist"
    "$bin/sf-sign" key export --out "$artifact/cert/signing-key.asc"
) >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "making the build job's artifact failed"; }
unset SF_DESTINATION SF_CDN_URL

# What act reads from files (secrets and the runner's token variables stay out of argv), and the
# event that calls the workflow with the plan's matrix.
umask 077
printf 'AWS_ROLE_ARN=arn:aws:iam::123456789012:role/slurm-factory-publisher\n' >"$work/secrets"
{
    printf 'ACTIONS_ID_TOKEN_REQUEST_URL=%s\n' "$(cat "$work/token/url")"
    printf 'ACTIONS_ID_TOKEN_REQUEST_TOKEN=%s\n' "$request_token"
    printf 'ACT_ARTIFACT_STORE=%s\n' "$store"
    # The action builds the binaries from the checkout: debug, in the target folder built above.
    printf 'SF_TOOLING_CARGO_PROFILE=dev\n'
    printf 'CARGO_TARGET_DIR=%s\n' "$target_dir"
} >"$work/runner.env"
{
    printf 'S3_ENDPOINT_URL=%s\n' "$moto"
    printf 'SF_DESTINATION=s3://%s\n' "$bucket"
    printf 'SF_CDN_URL=%s/%s\n' "$moto" "$bucket"
    printf 'SF_CLOUDFRONT_DISTRIBUTION_ID=%s\n' "$distribution"
    # The workflow publishes only against a pinned key: the rehearsal's ephemeral one.
    printf 'SF_SIGNING_FINGERPRINT=%s\n' "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fingerprint"])' "$work/key/generated.json")"
} >"$work/vars"
python3 -c 'import json,sys; print(json.dumps({"inputs": {"matrix": open(sys.argv[1]).read()}}))' \
    "$work/matrix.json" >"$work/event.json"
umask 022

# act with nothing of this machine's environment but what a build needs: no AWS keys, no SF_*, no
# GitHub variables of an outer CI run. Credentials can only come from the OIDC token.
# run_act VARS EVENT LOG: the publish workflow under act; its exit status.
run_act() {
    env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 \
        ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} \
        CARGO_INCREMENTAL=0 \
        act workflow_call \
        -W .github/workflows/publish-slurm-tarball.yml \
        -e "$2" \
        -P self-hosted=-self-hosted \
        --secret-file "$work/secrets" \
        --env-file "$work/runner.env" \
        --var-file "$1" \
        --local-repository "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093=$root/tests/act/actions/download-artifact" \
        --local-repository "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02=$root/tests/act/actions/upload-artifact" \
        --action-cache-path "$act_cache" \
        --no-cache-server \
        >"$3" 2>&1
}
started=$(date +%s)
status=0
run_act "$work/vars" "$work/event.json" "$log" || status=$?
took=$(($(date +%s) - started))
show() { echo "--- act log ($log):" >&2; cat "$log" >&2; echo "--- token endpoint:" >&2; cat "$work/token.log" >&2; }
[ "$status" -eq 0 ] || { show; fail "act exited $status"; }
grep -q '🏁  Job succeeded' "$log" || { show; fail "act did not report the publish job as succeeded"; }

# What the workflow left: every file at its layout key, byte for byte what the build signed.
keys=$(python3 tests/act/moto_client.py "$moto" keys "$bucket")
mkdir -p "$work/fetched"
for field in key signature_key sums_key sums_signature_key; do
    key=$(cell "[\"tarball\"][\"$field\"]")
    grep -qxF "$key" <<<"$keys" || { show; fail "s3://$bucket/$key is missing; the bucket holds: $keys"; }
    python3 tests/act/moto_client.py "$moto" get "$bucket" "$key" "$work/fetched/$(basename "$key")"
    cmp -s "$work/fetched/$(basename "$key")" "$artifact/dist/$(basename "$key")" ||
        fail "s3://$bucket/$key differs from the build's $(basename "$key")"
done
"$bin/sf-sign" verify sums "$work/fetched" --cert "$artifact/cert/signing-key.asc" >/dev/null ||
    fail "the published SHA256SUMS does not verify against the signing key"

issued=$(cat "$work/token/issued")
refused=$(cat "$work/token/refused")
[ "$issued" -ge 1 ] || { show; fail "the token endpoint issued no ID token: no OIDC"; }
[ "$refused" -eq 0 ] || { show; fail "the token endpoint refused $refused requests"; }
while read -r secret; do
    ! grep -qF -e "$secret" "$log" || fail "a token (the request token or an ID token) appears in act's log"
done < <(printf '%s\n' "$request_token"; cat "$work/token/tokens")

invalidated=$(python3 tests/act/moto_client.py "$moto" invalidations "$distribution")
grep -qF "/$(dirname "$(cell '["tarball"]["key"]')")" <<<"$invalidated" ||
    { show; fail "no CloudFront invalidation of the tarball's folder; invalidated: ${invalidated:-nothing}"; }
for step in sf-sign-verify-sums sf-publish-tarball sf-invalidate; do
    compgen -G "$store/results-publish-$cell_id/$step-*.json" >/dev/null ||
        { show; fail "the publish job's results artifact has no $step record"; }
done

# Refusals, each leaving the bucket as it was: without a pinned signing key nothing is published;
# a cell whose build left no tarball says so instead of failing somewhere in the download.
before=$(python3 tests/act/moto_client.py "$moto" keys "$bucket")
grep -v '^SF_SIGNING_FINGERPRINT=' "$work/vars" >"$work/vars-unpinned"
status=0
run_act "$work/vars-unpinned" "$work/event.json" "$work/act-unpinned.log" || status=$?
[ "$status" -ne 0 ] || { cat "$work/act-unpinned.log" >&2; fail "the workflow ran without a pinned signing key"; }
grep -q "set the repository variable SF_SIGNING_FINGERPRINT" "$work/act-unpinned.log" ||
    { cat "$work/act-unpinned.log" >&2; fail "the unpinned run does not say what to set"; }
! grep -q "Publish the tarball" "$work/act-unpinned.log" ||
    { cat "$work/act-unpinned.log" >&2; fail "the unpinned run reached the publish step"; }
python3 - "$work/matrix.json" "$work/event-lost.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["include"][0]["id"] += "-lost"
json.dump({"inputs": {"matrix": json.dumps(m)}}, open(sys.argv[2], "w"))
PY
status=0
run_act "$work/vars" "$work/event-lost.json" "$work/act-lost.log" || status=$?
[ "$status" -ne 0 ] || { cat "$work/act-lost.log" >&2; fail "a cell without an artifact passed"; }
grep -q "no tested tarball for cell $cell_id-lost" "$work/act-lost.log" ||
    { cat "$work/act-lost.log" >&2; fail "a cell without an artifact does not say so"; }
[ "$(python3 tests/act/moto_client.py "$moto" keys "$bucket")" = "$before" ] || fail "a refused run changed the bucket"

echo "act: publish-slurm-tarball.yml in host mode published $tarball_name, .asc, SHA256SUMS(.asc) to s3://$bucket via OIDC ($issued ID tokens) and invalidated the CDN in ${took}s; refused an unpinned key and a cell without a tarball"
