# shellcheck shell=bash
# sf-publish against one local S3 server (s3s-fs, SPEC section 12), every peer against the same
# server in the same run. Targets (SPEC section 11):
#   - a 1 GB tarball (with its .asc and signed SHA256SUMS beside it, as `sf-publish tarball`
#     requires) against `aws s3 cp`, `rclone copy` and `s3cmd put`: faster than all three, peak
#     memory under 200 MB. sf-publish also checks both signatures and the sha256 before the
#     tarball becomes visible, which the peers do not; for context the row also times what a
#     shell pipeline needs for the same guarantee (`sqv` of both signatures, `sha256sum -c`, then
#     `aws s3 cp --recursive` of the four files);
#   - publishing an unchanged signed mirror of several thousand spec manifests again (made from the
#     shapes of tests/fixtures/spack-v3-unsigned, signed by `sf-sign mirror`) against a second
#     `aws s3 sync` of the same directory: no bytes uploaded, faster;
#   - `sf-publish reindex` of that mirror: specs per second, at the default concurrency and at 64.
#     s3s-fs answers a GET on a reused connection about 40 ms late (its sockets keep Nagle's
#     algorithm, which meets the client's delayed ACK; a HEAD has no body and is not held back),
#     so reading thousands of small objects from it is bound by latency, not by either side's work.
#
# Sourced by scripts/bench.sh; also runs on its own: `bash scripts/bench.d/publish.sh`
# (BENCH_DIR: scratch space, default a new temp dir; BENCH_PUBLISH_MB: tarball size, default 1024;
# BENCH_PUBLISH_RUNS: uploads per tool, taken in turns, default 3; BENCH_PUBLISH_SPECS: spec
# manifests in the mirror, rounded up to a multiple of 3, default 3000).
# The tarball row gives each tool's fastest run and, against `aws s3 cp`, the ratio of medians and
# in how many turns ours was the faster: on two cores shared with the server one run can be off by
# a second either way.

if ! declare -F row >/dev/null; then
    # Standalone: the few helpers bench.sh would have defined.
    set -euo pipefail
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    if [ -z "${BENCH_DIR:-}" ]; then
        BENCH_DIR=$(mktemp -d /tmp/sf-bench-publish.XXXXXX)
        # shellcheck disable=SC2064 # the directory is known now
        trap "rm -rf '$BENCH_DIR'" EXIT
    fi
    if [ -z "${BENCH_BIN:-}" ]; then
        BENCH_BIN=${CARGO_TARGET_DIR:-target}
        [[ "$BENCH_BIN" == /* ]] || BENCH_BIN="$(pwd)/$BENCH_BIN"
        BENCH_BIN="$BENCH_BIN/release"
    fi
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f", a / b }'; }
    row() { printf '%-26s %s\n' "$1" "${*:2}"; }
    apt_need() {
        local missing=()
        for p in "$@"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        if ((${#missing[@]})); then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    }
    if [ ! -x "$BENCH_BIN/sf-publish" ] || [ ! -x "$BENCH_BIN/sf-sign" ] || [ ! -x "$BENCH_BIN/sf-matrix" ]; then
        cargo build --release -q -p sf-publish -p sf-sign -p sf-matrix
    fi
fi

# The peers: rclone from Debian, the AWS CLI and s3cmd from PyPI, the server from crates (0.14.1:
# newer releases need a newer rustc). Built once into ~/.cargo/bin; the build itself is scratch.
apt_need time rclone openssl python3 sqv coreutils
pub_pip=()
command -v aws >/dev/null || pub_pip+=(awscli)
command -v s3cmd >/dev/null || pub_pip+=(s3cmd)
if ((${#pub_pip[@]})); then
    python3 -m pip install -q --disable-pip-version-check "${pub_pip[@]}"
fi
pub_s3s=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
if [ ! -x "$pub_s3s" ]; then
    printf '[bench] building s3s-fs 0.14.1 (once)\n' >&2
    CARGO_TARGET_DIR="$BENCH_DIR/s3s-fs-build" cargo install -q s3s-fs@0.14.1 --features binary --locked
    rm -rf "$BENCH_DIR/s3s-fs-build"
    pub_s3s="$HOME/.cargo/bin/s3s-fs"
fi

# In a subshell: the server, its credential and the client settings end with this fragment.
(
    pub_dir="$BENCH_DIR/publish"
    pub_mb=${BENCH_PUBLISH_MB:-1024}
    pub_runs=${BENCH_PUBLISH_RUNS:-3}
    pub_specs=${BENCH_PUBLISH_SPECS:-3000}
    rm -rf "$pub_dir"
    mkdir -p "$pub_dir/data/bench" "$pub_dir/dist" "$pub_dir/key" "$pub_dir/work"
    chmod 700 "$pub_dir/key"

    # A throwaway credential for a loopback server that lives only for this run. s3s-fs takes it
    # only as flags; the clients get it from the environment or a mode-0600 file.
    AWS_ACCESS_KEY_ID="bench$(openssl rand -hex 4)"
    AWS_SECRET_ACCESS_KEY=$(openssl rand -hex 20)
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    # Nothing from the caller's AWS or signing set-up takes part (Debian's rclone also trips on
    # AWS_CA_BUNDLE).
    unset AWS_PROFILE AWS_SESSION_TOKEN AWS_CA_BUNDLE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
        AWS_ENDPOINT_URL GPG_PRIVATE_KEY GPG_PASSPHRASE SF_SIGNING_FINGERPRINT

    pub_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    pub_url="http://127.0.0.1:$pub_port"
    # A bucket is a directory of the server's root.
    "$pub_s3s" --host 127.0.0.1 --port "$pub_port" --access-key "$AWS_ACCESS_KEY_ID" \
        --secret-key "$AWS_SECRET_ACCESS_KEY" "$pub_dir/data" >"$pub_dir/s3s-fs.log" 2>&1 &
    pub_server=$!
    trap 'kill "$pub_server" 2>/dev/null || true; wait "$pub_server" 2>/dev/null || true; rm -rf "$pub_dir"' EXIT
    for _ in $(seq 100); do
        if (: <"/dev/tcp/127.0.0.1/$pub_port") 2>/dev/null; then break; fi
        kill -0 "$pub_server" 2>/dev/null || { cat "$pub_dir/s3s-fs.log" >&2; exit 1; }
        sleep 0.1
    done
    (: <"/dev/tcp/127.0.0.1/$pub_port") 2>/dev/null || { echo "s3s-fs did not start on $pub_url" >&2; exit 1; }

    export S3_ENDPOINT_URL="$pub_url"
    cat >"$pub_dir/key/s3cmd.cfg" <<EOF
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = 127.0.0.1:$pub_port
host_bucket = 127.0.0.1:$pub_port
use_https = False
signature_v2 = False
EOF
    chmod 600 "$pub_dir/key/s3cmd.cfg"
    # rclone's remote "pubs3" from the environment (no config file of the caller's).
    export RCLONE_CONFIG="$pub_dir/key/rclone.conf" RCLONE_CONFIG_PUBS3_TYPE=s3 RCLONE_CONFIG_PUBS3_PROVIDER=Other \
        RCLONE_CONFIG_PUBS3_ENDPOINT="$pub_url" RCLONE_CONFIG_PUBS3_FORCE_PATH_STYLE=true \
        RCLONE_CONFIG_PUBS3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_PUBS3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
    : >"$RCLONE_CONFIG"

    # pub_timed NAME CMD...: one run under GNU time, stdout kept in $pub_dir/NAME.out; NAME_s is
    # the fastest wall time so far, NAME_all every wall time in order, NAME_kb the largest peak
    # RSS (KiB).
    pub_timed() {
        local name=$1 s kb best peak all
        shift
        # Every run starts with nothing waiting to be written back: the data written before it
        # (the tarball, the last run's objects) would otherwise hit whichever tool comes next.
        sync
        /usr/bin/time -f '%e %M' -o "$pub_dir/.time" "$@" >"$pub_dir/$name.out" 2>"$pub_dir/.err" || {
            cat "$pub_dir/.err" >&2
            return 1
        }
        read -r s kb <"$pub_dir/.time"
        best="${name}_s"
        peak="${name}_kb"
        all="${name}_all"
        printf -v "$all" '%s' "${!all:-} $s"
        if [ -z "${!best:-}" ] || awk -v a="$s" -v b="${!best}" 'BEGIN { exit !(a < b) }'; then
            printf -v "$best" '%s' "$s"
        fi
        if [ -z "${!peak:-}" ] || ((kb > ${!peak})); then printf -v "$peak" '%s' "$kb"; fi
    }
    # median "TIMES": the middle one of a list (the mean of the middle two for an even count).
    median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ t[NR] = $1 } END { printf "%.2f", NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2 }'; }
    # turns_won A B: "k/n", the turns in which list A's time is below list B's.
    turns_won() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) k += x[i] < y[i]; printf "%d/%d", k, n }'; }
    # json FILE EXPR: a field of a JSON file (EXPR indexes `d`).
    json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
    # written_since MARK DIR: "files bytes" the server wrote under DIR after MARK was touched.
    written_since() { find "$2" -type f -newer "$1" -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d %d\n", n, b }'; }
    # mark FILE: a point in time that file timestamps (a clock tick coarse) tell apart.
    mark() { sleep 0.1 && touch "$1" && sleep 0.1; }

    # --- a 1 GB tarball ---------------------------------------------------------------------
    "$BENCH_BIN/sf-matrix" --pipeline tarball --slurm-versions 25.11 --toolchains noble >"$pub_dir/work/cell.json"
    pub_name=$(json "$pub_dir/work/cell.json" 'd["include"][0]["tarball"]["file_name"]')
    pub_key=$(json "$pub_dir/work/cell.json" 'd["include"][0]["tarball"]["key"]')
    pub_tarball="$pub_dir/dist/$pub_name"
    # A tarball of the cell, as sf-publish checks it (a complete gzip stream of a safe tar with
    # the cell's BUILDINFO.json): incompressible, reproducible data (openssl ends on SIGPIPE when
    # head has enough) in a view member, gzip stored (level 0) so the file stays pub_mb MB.
    mkdir -p "$pub_dir/view-src/view/lib"
    { openssl enc -aes-128-ctr -nosalt -pass pass:slurm-factory-bench -pbkdf2 -in /dev/zero 2>/dev/null || true; } |
        head -c "$((pub_mb * 1024 * 1024))" >"$pub_dir/view-src/view/lib/libbench.so"
    printf '{"schema_version":1,"slurm_version":"25.11","toolchain":"noble","arch":"amd64","gpu":false}' \
        >"$pub_dir/view-src/BUILDINFO.json"
    tar -C "$pub_dir/view-src" -c view BUILDINFO.json | pigz -0 >"$pub_tarball"
    rm -rf "$pub_dir/view-src"
    "$BENCH_BIN/sf-sign" key generate --out "$pub_dir/key/secret.asc" --public-out "$pub_dir/key/public.asc" \
        --uid "Slurm Factory bench <bench@example.invalid>" --expires 1d >/dev/null 2>&1
    "$BENCH_BIN/sf-sign" file "$pub_tarball" --key-file "$pub_dir/key/secret.asc" >/dev/null 2>&1
    "$BENCH_BIN/sf-sign" sums "$pub_dir/dist" --key-file "$pub_dir/key/secret.asc" >/dev/null 2>&1
    # Warm the page cache so every contender reads from memory.
    cat "$pub_tarball" >/dev/null

    for ((i = 0; i < pub_runs; i++)); do
        pub_timed ours "$BENCH_BIN/sf-publish" tarball "$pub_tarball" "s3://bench/ours-$i" --cert "$pub_dir/key/public.asc"
        # It must have landed whole (s3s-fs keeps an object as a plain file).
        cmp -s "$pub_tarball" "$pub_dir/data/bench/ours-$i/$pub_key" || {
            echo "the tarball sf-publish uploaded differs from the source" >&2
            exit 1
        }
        rm -rf "$pub_dir/data/bench/ours-$i"
        pub_timed aws aws --endpoint-url "$pub_url" s3 cp --only-show-errors "$pub_tarball" "s3://bench/aws-$i/$pub_name"
        rm -rf "$pub_dir/data/bench/aws-$i"
        # shellcheck disable=SC2016 # the inner script expands its own arguments
        pub_timed aws_checked bash -c 'cd "$1" && sqv --keyring "$2" "$3.asc" "$3" >/dev/null &&
            sqv --keyring "$2" SHA256SUMS.asc SHA256SUMS >/dev/null && sha256sum --quiet -c SHA256SUMS &&
            aws --endpoint-url "$4" s3 cp --recursive --only-show-errors . "$5"' _ \
            "$pub_dir/dist" "$pub_dir/key/public.asc" "$pub_name" "$pub_url" "s3://bench/aws-checked-$i/"
        cmp -s "$pub_tarball" "$pub_dir/data/bench/aws-checked-$i/$pub_name" || {
            echo "the checked aws s3 cp pipeline did not upload the tarball whole" >&2
            exit 1
        }
        rm -rf "$pub_dir/data/bench/aws-checked-$i"
        pub_timed rclone rclone copy "$pub_tarball" "pubs3:bench/rclone-$i/"
        rm -rf "$pub_dir/data/bench/rclone-$i"
        pub_timed s3cmd s3cmd -c "$pub_dir/key/s3cmd.cfg" put -q "$pub_tarball" "s3://bench/s3cmd-$i/$pub_name"
        rm -rf "$pub_dir/data/bench/s3cmd-$i"
    done
    rm -rf "$pub_dir/dist"

    # shellcheck disable=SC2154 # set by pub_timed through printf -v
    row "publish-tarball-${pub_mb}MB" \
        "ours=${ours_s}s" "aws_s3_cp=${aws_s}s" "rclone_copy=${rclone_s}s" "s3cmd_put=${s3cmd_s}s" \
        "time_vs_aws=$(ratio "$ours_s" "$aws_s")" "time_vs_rclone=$(ratio "$ours_s" "$rclone_s")" \
        "time_vs_s3cmd=$(ratio "$ours_s" "$s3cmd_s")" \
        "ours_median=$(median "$ours_all")s" "aws_median=$(median "$aws_all")s" \
        "median_vs_aws=$(ratio "$(median "$ours_all")" "$(median "$aws_all")")" \
        "faster_than_aws_in=$(turns_won "$ours_all" "$aws_all")" \
        "aws_s3_cp_after_same_checks=${aws_checked_s}s" "time_vs_checked_aws=$(ratio "$ours_s" "$aws_checked_s")" \
        "peak_rss=${ours_kb}KiB" "aws_rss=${aws_kb}KiB" "rclone_rss=${rclone_kb}KiB" "s3cmd_rss=${s3cmd_kb}KiB"

    # --- a mirror of several thousand spec manifests ----------------------------------------
    # Copies of the fixture's DAG (greet -> libgreet -> greetdata), each at its own version, so
    # every node has its own DAG hash (recomputed as Spack does), spec blob and tarball blob.
    python3 - tests/fixtures/spack-v3-unsigned "$pub_dir/mirror" "$(((pub_specs + 2) / 3))" <<'PY'
import base64, gzip, hashlib, json, os, random, sys

src, out, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])


def blob_path(root, sha):
    return os.path.join(root, "blobs", "sha256", sha[:2], sha)


def dag_hash(node):
    body = {k: v for k, v in node.items() if k != "hash"}
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    return base64.b32encode(hashlib.sha1(text.encode()).digest()).decode().lower()


def put_blob(data, media, compression):
    sha = hashlib.sha256(data).hexdigest()
    path = blob_path(out, sha)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return {"contentLength": len(data), "mediaType": media, "compression": compression,
            "checksumAlgorithm": "sha256", "checksum": sha}


top = os.path.join(src, "v3", "manifests", "spec", "greet")
manifest = json.load(open(os.path.join(top, sorted(os.listdir(top))[0])))
spec_rec = next(r for r in manifest["data"] if r["mediaType"].startswith("application/vnd.spack.spec"))
tar_rec = next(r for r in manifest["data"] if r is not spec_rec)
doc = json.loads(gzip.decompress(open(blob_path(src, spec_rec["checksum"]), "rb").read()))
nodes = doc["spec"]["nodes"]
assert all(dag_hash(n) == n["hash"] for n in nodes), "the fixture's DAG hashes do not recompute"

rng = random.Random(7)
os.makedirs(os.path.join(out, "v3"), exist_ok=True)
with open(os.path.join(src, "v3", "layout.json")) as f, open(os.path.join(out, "v3", "layout.json"), "w") as g:
    g.write(f.read())
for i in range(copies):
    by_name, new = {}, []
    for n in reversed(nodes):  # dependencies first: their hashes go into their dependents
        m = json.loads(json.dumps(n))
        m["version"] = "1.0.%d" % i
        for d in m.get("dependencies", []):
            d["hash"] = by_name[d["name"]]["hash"]
        m["hash"] = dag_hash(m)
        by_name[m["name"]] = m
        new.insert(0, m)
    for k, m in enumerate(new):
        blob = dict(doc, spec=dict(doc["spec"], nodes=new[k:]))  # the node and what it depends on
        spec = put_blob(gzip.compress(json.dumps(blob).encode(), mtime=0), spec_rec["mediaType"], "gzip")
        size = rng.randint(2048, 24576)
        tarball = put_blob(gzip.compress(rng.randbytes(size), mtime=0), tar_rec["mediaType"], "gzip")
        d = os.path.join(out, "v3", "manifests", "spec", m["name"])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "%s-%s-%s.spec.manifest.json" % (m["name"], m["version"], m["hash"])), "w") as f:
            f.write(json.dumps({"version": 3, "data": [tarball, spec]}, indent=0, separators=(",", ":")))
PY
    "$BENCH_BIN/sf-sign" mirror "$pub_dir/mirror" --key-file "$pub_dir/key/secret.asc" >/dev/null 2>&1
    pub_specs=$(find "$pub_dir/mirror/v3/manifests/spec" -name '*.spec.manifest.json' | wc -l)
    pub_objects=$(find "$pub_dir/mirror" -type f | wc -l)
    find "$pub_dir/mirror" -type f -exec cat {} + >/dev/null

    # First publishes (timed for context), then the same again unchanged: the row's figure.
    pub_timed ours_first "$BENCH_BIN/sf-publish" mirror "$pub_dir/mirror" s3://bench/mirror --cert "$pub_dir/key/public.asc"
    mark "$pub_dir/work/ours.mark"
    pub_timed ours_again "$BENCH_BIN/sf-publish" mirror "$pub_dir/mirror" s3://bench/mirror --cert "$pub_dir/key/public.asc"
    pub_ours_bytes=$(json "$pub_dir/ours_again.out" 'd["bytes_uploaded"]')
    read -r pub_ours_files pub_ours_server_bytes < <(written_since "$pub_dir/work/ours.mark" "$pub_dir/data/bench/mirror")
    pub_timed aws_first aws --endpoint-url "$pub_url" s3 sync --only-show-errors "$pub_dir/mirror" s3://bench/awsmirror
    mark "$pub_dir/work/aws.mark"
    pub_timed aws_again aws --endpoint-url "$pub_url" s3 sync --only-show-errors "$pub_dir/mirror" s3://bench/awsmirror
    read -r pub_aws_files pub_aws_server_bytes < <(written_since "$pub_dir/work/aws.mark" "$pub_dir/data/bench/awsmirror")

    # shellcheck disable=SC2154 # set by pub_timed through printf -v
    row "republish-${pub_specs}specs" \
        "objects=${pub_objects}" "ours=${ours_again_s}s" "aws_s3_sync=${aws_again_s}s" \
        "time_vs_aws_sync=$(ratio "$ours_again_s" "$aws_again_s")" \
        "bytes_uploaded=${pub_ours_bytes}" "server_files_written=${pub_ours_files}" \
        "server_bytes_written=${pub_ours_server_bytes}" \
        "aws_server_files_written=${pub_aws_files}" "aws_server_bytes_written=${pub_aws_server_bytes}" \
        "first_publish=${ours_first_s}s" "aws_first_sync=${aws_first_s}s" "peak_rss=${ours_again_kb}KiB"

    # --- rebuilding that mirror's index -----------------------------------------------------
    pub_timed reindex "$BENCH_BIN/sf-publish" reindex s3://bench/mirror
    pub_indexed=$(json "$pub_dir/reindex.out" 'd["reindex"]["specs"]')
    if [ "$pub_indexed" != "$pub_specs" ]; then
        echo "reindex read $pub_indexed specs of $pub_specs: $(json "$pub_dir/reindex.out" 'd["reindex"]["skipped"][:3]')" >&2
        exit 1
    fi
    pub_timed reindex64 "$BENCH_BIN/sf-publish" reindex s3://bench/mirror --concurrency 64
    pub_rate() { awk -v n="$pub_indexed" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
    # shellcheck disable=SC2154 # set by pub_timed through printf -v
    row "reindex-${pub_specs}specs" \
        "ours=${reindex_s}s" "specs_per_s=$(pub_rate "$reindex_s")" "peak_rss=${reindex_kb}KiB" \
        "concurrency_64=${reindex64_s}s" "specs_per_s_at_64=$(pub_rate "$reindex64_s")" "peak_rss_at_64=${reindex64_kb}KiB"
)
