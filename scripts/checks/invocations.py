#!/usr/bin/env python3
"""Every sf-* invocation in the workflows and the action uses a subcommand, flags and SF_*
variables the binary really has.

It reads .github/workflows/*.yml, extracts each call (steps running the local action with
`command`/`args`, and sf-* command lines inside `run:` scripts), and checks them against the
binary's own `--help` (and the subcommand's). Exit 1 with every mismatch listed.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Where invocations.sh just built them: SF_BIN_DIR, else the debug folder of the cargo target folder.
BIN = Path(os.environ.get("SF_BIN_DIR") or (ROOT / (os.environ.get("CARGO_TARGET_DIR") or "target") / "debug"))
EXPR = re.compile(r"\$\{\{.*?\}\}")
COMMANDS = ("sf-matrix", "sf-spackenv", "sf-build", "sf-sign", "sf-publish", "sf-invalidate", "sf-summary")

_help_cache = {}


def help_text(argv):
    key = tuple(argv)
    if key not in _help_cache:
        try:
            out = subprocess.run([str(BIN / argv[0]), *argv[1:], "--help"], capture_output=True, text=True)
        except OSError:
            out = None
        _help_cache[key] = out.stdout if out is not None and out.returncode == 0 else None
    return _help_cache[key]


def subcommands(text):
    """Names listed under 'Commands:' in clap's help."""
    m = re.search(r"^Commands:\n((?:  .*\n)+)", text, re.M)
    if not m:
        return []
    # Names sit at two spaces; wrapped descriptions are indented further.
    return [line.split()[0] for line in m.group(1).splitlines() if re.match(r"  \S", line)]


def check(where, argv, env_names, problems):
    cmd = argv[0]
    if cmd not in COMMANDS:
        problems.append(f"{where}: unknown command {cmd!r}")
        return
    top = help_text([cmd])
    if top is None:
        problems.append(f"{where}: {cmd} --help failed (is it built in {BIN}?)")
        return
    path = [cmd]
    rest = argv[1:]
    text = top
    # Descend through nested subcommands (sf-sign verify sums ...).
    while True:
        subs = subcommands(text)
        required = re.search(r"^Usage: .*<COMMAND>", text, re.M) is not None
        if not subs or not (required or (rest and rest[0] in subs)):
            break
        if not rest or rest[0] not in subs:
            problems.append(f"{where}: {' '.join(path)} needs a subcommand, one of {', '.join(subs)}; got {rest[:1]}")
            return
        path.append(rest[0])
        rest = rest[1:]
        text = help_text(path)
        if text is None:
            problems.append(f"{where}: {' '.join(path)} --help failed")
            return
    for tok in rest:
        if tok.startswith("--"):
            flag = tok.split("=", 1)[0]
            if not re.search(rf"(^|[\s,]){re.escape(flag)}([\s=,\[<]|$)", text, re.M):
                problems.append(f"{where}: {' '.join(path)} has no flag {flag}")
    for name in env_names:
        # A flag's variable shows as `[env: NAME=]`; a secret read from the environment is named
        # in the help text instead (its value is never shown).
        if name.startswith("SF_") and name not in text and name not in GLOBAL_ENV:
            problems.append(f"{where}: {' '.join(path)} reads no variable {name}")


# Variables read by the workflows' own shell or by every binary through shared code, not flags.
GLOBAL_ENV = {"SF_RESULTS_DIR", "SF_TOOLING_VERSION"}


def run_script_calls(script):
    """sf-* command lines in a shell script, with continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", script)
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        # sf-* in command position: first word of the line or of a `&&`/`;`/`|` part, bare or
        # as a path such as ../bin/sf-sign.
        m = re.search(r"(?:^|&&|;|\|)\s*(?:[\w.$/{}-]*/)?(sf-[a-z]+)(\s.*)?$", line)
        if not m or m.group(1) not in COMMANDS:
            continue
        try:
            words = shlex.split(EXPR.sub("X", m.group(2) or ""), comments=True)
        except ValueError:
            words = (m.group(2) or "").split()
        # stop at shell operators
        out = []
        for w in words:
            if w in ("|", "||", "&&", ";", ">", ">>", "2>", "<"):
                break
            out.append(w)
        yield [m.group(1), *out]


def main():
    problems = []
    calls = 0
    for wf in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        doc = yaml.safe_load(wf.read_text())
        top_env = set((doc.get("env") or {}).keys())
        for job_name, job in (doc.get("jobs") or {}).items():
            job_env = top_env | set((job.get("env") or {}).keys())
            for i, step in enumerate(job.get("steps") or []):
                where = f"{wf.name}:{job_name}[{i}]"
                step_env = set((step.get("env") or {}).keys())
                if step.get("uses") == "./":
                    w = step.get("with") or {}
                    cmd = w.get("command")
                    args = shlex.split(EXPR.sub("X", str(w.get("args") or "")))
                    calls += 1
                    # Only the step's own SF_* variables are checked against this command: the
                    # job- and workflow-wide ones are shared by several commands.
                    check(where, [cmd, *args], step_env, problems)
                if "run" in step:
                    for argv in run_script_calls(step["run"]):
                        calls += 1
                        check(where, argv, set(), problems)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    print(f"invocations: {calls} sf-* calls checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
