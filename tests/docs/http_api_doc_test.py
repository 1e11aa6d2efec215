#!/usr/bin/env python3
"""docs/http-api.md's queue-lifecycle block runs as written against a real sluiced.

Each line of the block is run through a shell with $H set to the broker's
HTTP address; its comment says what comes back: a status, or a JSON body
whose fields must match (the broker is given the messages the comments count
before each line runs).

usage: http_api_doc_test.py BUILD_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from checks import check, finish, start_sluiced  # noqa: E402

repo = os.path.dirname(os.path.dirname(here))
build = os.path.abspath(sys.argv[1])
doc = open(os.path.join(repo, "docs", "http-api.md"), encoding="utf-8").read()
at = doc.index("An operator's queue lifecycle")
block = re.search(r"```sh\n(.*?)```", doc[at:], re.S).group(1)
lines = [l for l in block.splitlines() if l.strip()]
check(len(lines) == 4, "the lifecycle block has its four commands")

broker, _, http_port = start_sluiced(build, tempfile.mkdtemp(prefix="sluice-http-doc-"))
try:
    base = "http://127.0.0.1:" + http_port

    def publish(n):
        for i in range(n):
            req = urllib.request.Request(base + "/v1/queues/jobs/messages", data=b"m", method="POST")
            urllib.request.urlopen(req).read()

    def run(line):
        command, _, comment = line.partition("#")
        r = subprocess.run(command + " -w '\\n%{http_code}'", shell=True, capture_output=True,
                           text=True, timeout=30, env=dict(os.environ, H=base))
        body, _, status = r.stdout.rpartition("\n")
        return int(status or 0), body, comment.strip()

    def expect(line, before=None):
        if before:
            before()
        status, body, comment = run(line)
        said = re.match(r"(\d{3})\b", comment)
        if said:
            check(status == int(said.group(1)), "%s answers %s (got %d %s)" % (line, said.group(1), status, body))
            return body
        shown = json.loads(comment)
        got = json.loads(body)
        check(status == 200 and all(got.get(k) == v for k, v in shown.items()),
              "%s answers %s (got %d %s)" % (line, comment, status, body))
        return body

    created = json.loads(expect(lines[0]))
    check(created.get("settings", {}).get("max_attempts") == 3 and
          created["settings"].get("durability") == "durable", "PUT applied the settings")
    expect(lines[1], lambda: publish(12))
    expect(lines[2], lambda: publish(3))
    expect(lines[3])
    with urllib.request.urlopen(base + "/v1/queues") as r:
        names = [q["name"] for q in json.load(r)["queues"]]
    check("jobs" not in names, "the deleted queue is gone from the list")
finally:
    broker.terminate()
    broker.wait(timeout=10)

finish()
