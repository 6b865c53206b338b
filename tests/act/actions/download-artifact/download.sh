#!/usr/bin/env bash
# The download-artifact stand-in (see action.yml): ACT_ARTIFACT_STORE/NAME -> DEST, or with a
# PATTERN every matching artifact to DEST/NAME, as the real action lays them out.
set -euo pipefail
store=${ACT_ARTIFACT_STORE:?the download-artifact stand-in needs ACT_ARTIFACT_STORE (a directory of artifacts)}
dest=${DEST:-.}
mkdir -p "$dest"
if [ -n "${NAME:-}" ]; then
    [ -d "$store/$NAME" ] || { echo "::error::artifact '$NAME' not found in $store" >&2; exit 1; }
    cp -a "$store/$NAME/." "$dest/"
    echo "artifact $NAME -> $dest" >&2
elif [ -n "${PATTERN:-}" ]; then
    for dir in "$store"/*/; do
        name=$(basename "$dir")
        # shellcheck disable=SC2053 # PATTERN is a glob, matched as one
        [[ "$name" == $PATTERN ]] || continue
        mkdir -p "$dest/$name"
        cp -a "$dir." "$dest/$name/"
        echo "artifact $name -> $dest/$name" >&2
    done
else
    echo "::error::the download-artifact stand-in needs name or pattern" >&2
    exit 1
fi
