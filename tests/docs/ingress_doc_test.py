#!/usr/bin/env python3
"""docs/ingress.md runs as written against a real sluiced.

The first ```sh block (it writes the secrets and the schema) runs first; the
first ```toml block becomes sluiced.toml, and sluiced starts with it. Every
later ```sh block then runs through bash, in order, in the same directory,
with $H set to the broker's HTTP address. A ```text block after a command
block is its output: a JSON line must hold the fields shown (objects: the
keys shown, arrays: as many entries, each holding what is shown); any other
line must be the same.

usage: ingress_doc_test.py BUILD_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from checks import check, finish, start_sluiced  # noqa: E402

repo = os.path.dirname(os.path.dirname(here))
build = os.path.abspath(sys.argv[1])
doc = open(os.path.join(repo, "docs", "ingress.md"), encoding="utf-8").read()
blocks = re.findall(r"```(\w+)\n(.*?)```", doc, re.S)


def holds(shown, got):
    """True when `got` holds what `shown` shows."""
    if isinstance(shown, dict):
        return isinstance(got, dict) and all(k in got and holds(v, got[k]) for k, v in shown.items())
    if isinstance(shown, list):
        return isinstance(got, list) and len(got) == len(shown) and \
            all(holds(s, g) for s, g in zip(shown, got))
    return shown == got


def matches(expected, actual):
    expected_lines = [l for l in expected.splitlines() if l.strip()]
    actual_lines = [l for l in actual.splitlines() if l.strip()]
    if len(expected_lines) != len(actual_lines):
        return False
    for e, a in zip(expected_lines, actual_lines):
        try:
            shown = json.loads(e)
        except ValueError:
            if e.strip() != a.strip():
                return False
            continue
        try:
            if not holds(shown, json.loads(a)):
                return False
        except ValueError:
            return False
    return True


work = tempfile.mkdtemp(prefix="sluice-ingress-doc-")
sh = [i for i, (kind, _) in enumerate(blocks) if kind == "sh"]
toml = [i for i, (kind, _) in enumerate(blocks) if kind == "toml"]
check(len(sh) >= 12 and toml, "the doc has its setup, config and example blocks")
setup = subprocess.run(["bash", "-e", "-c", blocks[sh[0]][1]], cwd=work, capture_output=True,
                       text=True, timeout=30)
check(setup.returncode == 0, "the setup block runs: " + setup.stderr)
with open(os.path.join(work, "sluiced.toml"), "w") as f:
    f.write(blocks[toml[0]][1])

broker, _, http_port = start_sluiced(build, work, "--config", os.path.join(work, "sluiced.toml"))
try:
    env = dict(os.environ, H="http://127.0.0.1:" + http_port)
    # One shell runs every block, so variables carry over as they do for a
    # reader; a marker after each block carries its exit status.
    script = ""
    for n, i in enumerate(sh[1:], 1):
        script += "%s\necho \"@@block %d $?@@\"\n" % (blocks[i][1], n)
    r = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True,
                       timeout=120, env=env)
    outputs = re.split(r"@@block (\d+) (\d+)@@\n?", r.stdout)
    # [before 1, "1", status, output of 2..., ...]: pair each block with its output.
    ran = {}
    text_before = outputs[0]
    for k in range(1, len(outputs) - 1, 3):
        ran[int(outputs[k])] = (int(outputs[k + 1]), text_before)
        text_before = outputs[k + 2]
    for n, i in enumerate(sh[1:], 1):
        first = blocks[i][1].strip().splitlines()[0]
        status, out = ran.get(n, (-1, ""))
        if not check(status == 0, "block %d runs: %s (status %d; stderr %s)" %
                     (n, first, status, r.stderr.strip()[-300:])):
            continue
        after = i + 1
        if after < len(blocks) and blocks[after][0] == "text":
            expected = blocks[after][1]
            if not check(matches(expected, out), "block %d (%s) answers as the doc shows" %
                         (n, first)):
                print("  shown: %s\n  got:   %s" % (expected.strip(), out.strip()))
finally:
    broker.terminate()
    broker.wait(timeout=10)

finish()
