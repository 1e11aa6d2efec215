#!/usr/bin/env python3
"""The README tells the truth: its commands run against a real sluiced.

Runs every command of the README's "Publish and consume" and "HTTP" blocks
through a shell, against a sluiced on free ports (SLUICE_BROKER for sluicectl,
the HTTP port put in place of 7451), and checks what each printed. Also: every
link and path the README names is inside the repository, and its status line
does not call shipped features the next step.

usage: readme_test.py BUILD_DIR
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
readme = open(os.path.join(repo, "README.md"), encoding="utf-8").read()
def block_after(heading):
    """The first ```sh block after the line `heading`."""
    at = readme.index("\n" + heading + "\n")
    m = re.search(r"```sh\n(.*?)```", readme[at:], re.S)
    return [l for l in m.group(1).splitlines() if l.strip()]


# Links and paths stay inside the repository.
for target in re.findall(r"\]\(([^)#]+)\)", readme):
    if re.match(r"[a-z]+://", target):
        continue
    path = os.path.normpath(os.path.join(repo, target))
    check(path.startswith(repo + os.sep) and os.path.exists(path), "link " + target + " is in the repository")
check("../" not in readme, "no path in the README points outside the repository")
status = readme[readme.index("Status:"):readme.index("## Quick start")]
check("TLS are the next step" not in status and "Tokens and TLS" not in status,
      "the status line does not call tokens and TLS the next step")

# In a directory of its own: its default data directory goes there.
broker, port, http_port = start_sluiced(build, tempfile.mkdtemp(prefix="sluice-readme-"))
try:
    env = dict(os.environ, SLUICE_BROKER="127.0.0.1:" + port)

    def run(command):
        command = command.replace("build/", build + "/").replace("localhost:7451", "127.0.0.1:" + http_port)
        r = subprocess.run(command, shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout

    # Publish and consume, with sluicectl.
    outputs = []
    for line in block_after("## Publish and consume"):
        code, out = run(line)
        check(code == 0, "exits 0: " + line)
        outputs.append(out)
    consumed = outputs[-1].splitlines()
    check(len(consumed) == 3 and consumed[0].endswith(' 1 {"id":1}'),
          "consume --count 3 printed the three messages published, oldest first")

    # HTTP, with curl: publish (a JSON payload), receive, ack with the receipt, metrics.
    lines = block_after("## HTTP")
    code, out = run(lines[0])
    published = json.loads(out)
    check(code == 0 and published.get("duplicate") is False and published.get("id", 0) > 0,
          "curl publish answers 202 with an id")
    code, out = run(lines[1])
    messages = [m for m in json.loads(out)["messages"] if m["id"] == published["id"]]
    check(len(messages) == 1, "curl receive returns the message curl published")
    if messages:
        check(messages[0]["headers"].get("content-type") == "application/json",
              "the curl publish carries Content-Type: application/json")
        code, out = run(lines[2].replace("RECEIPT-FROM-RECEIVE", messages[0]["receipt"]))
        check(code == 0 and json.loads(out).get("succeeded") == 1, "curl ack settles it")
    code, out = run(lines[3])
    check(code == 0 and "sluice_queue_acked_total" in out, "curl /metrics shows the queue's counters")
finally:
    broker.terminate()
    broker.wait(timeout=10)

finish()
