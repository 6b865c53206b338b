#!/usr/bin/env bash
# Every output action.yml declares reads a step output that something really writes: the run
# step's outputs are names a binary (or sf-core, for outputs every step writes) sets in
# GITHUB_OUTPUT, the install step's are names scripts/action/install.sh writes.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 - <<'PY'
import re
import sys
from pathlib import Path

import yaml

action = yaml.safe_load(Path("action.yml").read_text())
bins = sorted(p.name for p in Path("bins").iterdir() if (p / "src").is_dir())
ref = re.compile(r"^\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$")


def sources(names):
    text = ""
    for n in names:
        for f in sorted(Path("bins", n, "src").rglob("*.rs")):
            text += f.read_text()
    return text


core = "".join(f.read_text() for f in sorted(Path("crates/sf-core/src").rglob("*.rs")))
install = Path("scripts/action/install.sh").read_text()
problems = []
for out, spec in (action.get("outputs") or {}).items():
    m = ref.match(str(spec.get("value", "")).strip())
    if not m:
        problems.append(f"{out}: value {spec.get('value')!r} is not ${{{{ steps.<id>.outputs.<name> }}}}")
        continue
    step, name = m.groups()
    if step == "install":
        if not re.search(rf"\b{re.escape(name)}=", install):
            problems.append(f"{out}: scripts/action/install.sh never writes {name}=")
        continue
    if step != "run":
        problems.append(f"{out}: reads step {step!r}, which the action does not have")
        continue
    # "sf-spackenv / sf-build: ..." names the binaries that write it; none named: any of them.
    desc = str(spec.get("description", ""))
    head = desc.split(":", 1)[0] if ":" in desc else ""
    named = [b for b in re.findall(r"sf-[a-z]+", head) if b in bins]
    unknown = [b for b in re.findall(r"sf-[a-z]+", head) if b not in bins]
    if unknown:
        problems.append(f"{out}: the description names {', '.join(unknown)}, which is not a binary")
    text = sources(named or bins) + core
    literal = f'"{name}"' in text
    # Numbered outputs (matrix-1, matrix-2) are written as format!("matrix-{}", ..).
    numbered = re.fullmatch(r"(.+-)\d+", name) and f'"{re.fullmatch(r"(.+-)[0-9]+", name).group(1)}{{' in text
    if not (literal or numbered):
        who = ", ".join(named) if named else "any binary"
        problems.append(f"{out}: reads steps.run.outputs.{name}, but no output of that name is written by {who}")
if problems:
    print("action.yml outputs that nothing writes:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    sys.exit(1)
print(f"action outputs: {len(action['outputs'])} declared, each written by a step")
PY
