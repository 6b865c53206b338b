#!/usr/bin/env bash
# The upload-artifact stand-in (see action.yml): the files of SOURCES (one path per line, relative
# to the workspace) into ACT_ARTIFACT_STORE/NAME, rooted at their common parent as the real action
# roots an artifact at the paths' least common ancestor.
set -euo pipefail
store=${ACT_ARTIFACT_STORE:?the upload-artifact stand-in needs ACT_ARTIFACT_STORE (a directory of artifacts)}
name=${NAME:?the upload-artifact stand-in needs a name}
paths=()
while IFS= read -r p; do
    p=${p#"${p%%[![:space:]]*}"}
    p=${p%"${p##*[![:space:]]}"}
    [ -z "$p" ] || [ ! -e "$p" ] || paths+=("$(realpath "$p")")
done <<<"$SOURCES"
if ((${#paths[@]} == 0)); then
    case "${IF_NO_FILES_FOUND:-warn}" in
        error) echo "::error::no files found for artifact $name" >&2; exit 1 ;;
        warn) echo "::warning::no files found for artifact $name" >&2 ;;
    esac
    exit 0
fi
if ((${#paths[@]} == 1)) && [ -d "${paths[0]}" ]; then
    root=${paths[0]}
else
    root=$(dirname "${paths[0]}")
    for p in "${paths[@]}"; do
        while [[ "$p" != "$root" && "$p" != "$root"/* ]]; do root=$(dirname "$root"); done
    done
fi
[ ! -e "$store/$name" ] || { echo "::error::artifact $name already exists in $store" >&2; exit 1; }
mkdir -p "$store/$name"
for p in "${paths[@]}"; do
    rel=${p#"$root"}
    rel=${rel#/}
    if [ -z "$rel" ]; then
        cp -a "$p/." "$store/$name/"
    else
        mkdir -p "$store/$name/$(dirname "$rel")"
        cp -a "$p" "$store/$name/$rel"
    fi
done
echo "artifact $name <- ${paths[*]}" >&2
