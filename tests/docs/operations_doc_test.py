#!/usr/bin/env python3
"""docs/operations.md tells the truth:

- every alert rule has a runbook_url naming its own section of the document;
- every log event sluiced can write is in its table of log events;
- the backup it describes works: `mdb_copy -c` of the data directory while a
  producer publishes to a durable queue restores, into a new sluiced, every
  message confirmed before the copy began.

usage: operations_doc_test.py BUILD_DIR
"""
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from checks import check, finish  # noqa: E402

repo = os.path.dirname(os.path.dirname(here))
build = os.path.abspath(sys.argv[1])
doc = open(os.path.join(repo, "docs", "operations.md"), encoding="utf-8").read()
# 1. Runbooks: each rule's runbook_url is "docs/operations.md#<its name, lower case>",
#    and the document has a "### <name>" section.
rules = open(os.path.join(repo, "ops", "sluice.rules.yml")).read()
alerts = re.findall(r"- alert: (\w+)", rules)
check(len(alerts) >= 12, "%d alert rules" % len(alerts))
for block in rules.split("- alert: ")[1:]:
    name = block.split()[0]
    url = re.search(r'runbook_url: "([^"]+)"', block)
    check(url is not None and url.group(1) == "docs/operations.md#" + name.lower(),
          name + " has a runbook_url to its section")
    check(re.search(r"^### " + name + r"$", doc, re.M) is not None,
          "operations.md has a runbook section for " + name)

# 2. Log events: every event name in the source is in the document.
events = set()
for path in glob.glob(os.path.join(repo, "broker", "**", "*.cpp"), recursive=True) + \
        glob.glob(os.path.join(repo, "storage", "**", "*.cpp"), recursive=True):
    text = open(path, encoding="utf-8").read()
    events.update(re.findall(r'log::(?:info|warn|error|debug|trace)\("([a-z_]+)"', text))
    # log::info(paused ? "trigger_paused" : "trigger_resumed")
    for either in re.findall(r'log::\w+\(\w+ \? "([a-z_]+)" : "([a-z_]+)"\)', text):
        events.update(either)
check(len(events) > 30, "%d log events found in the source" % len(events))
for event in sorted(events):
    check("`" + event + "`" in doc, "log event " + event + " is explained")


# 3. Backup while publishing, restore, recover.
def start(data, tmp, name):
    port_file = os.path.join(tmp, name + ".port")
    log = open(os.path.join(tmp, name + ".log"), "w")
    proc = subprocess.Popen([os.path.join(build, "broker", "sluiced"), "--listen", "127.0.0.1:0",
                             "--http-listen", "127.0.0.1:0", "--port-file", port_file,
                             "--set", "storage.path=" + data,
                             "--set", "queues.orders.durability=durable"],
                            stderr=log, cwd=tmp)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            ports = open(port_file).read().split()
            if len(ports) == 2:
                return proc, int(ports[1])
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("sluiced did not start; see " + log.name)


tmp = tempfile.mkdtemp(prefix="sluice-ops-doc-")
data = os.path.join(tmp, "data")
broker, http_port = start(data, tmp, "first")
confirmed = []  # (number, monotonic time of its 202)
stop = threading.Event()


def produce():
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    n = 0
    while not stop.is_set():
        c.request("POST", "/v1/queues/orders/messages", "m%d" % n)
        r = c.getresponse()
        r.read()
        if r.status == 202:  # durable: on disk
            confirmed.append((n, time.monotonic()))
        n += 1


producer = threading.Thread(target=produce)
producer.start()
try:
    while len(confirmed) < 300:
        time.sleep(0.01)
    # The document's command, with this test's directories.
    backup = os.path.join(tmp, "backup")
    os.mkdir(backup)
    block = re.search(r"```sh\n(mdb_copy[^\n]*)\n```", doc)
    check(block is not None, "operations.md shows the mdb_copy command")
    command = block.group(1).split("#")[0].strip()
    command = command.replace("/var/lib/sluice", data).replace("/backup/sluice-$(date +%F)", backup)
    began = time.monotonic()
    copy = subprocess.run(command, shell=True, capture_output=True, text=True)
    check(copy.returncode == 0, "mdb_copy -c copies the data directory while sluiced runs " +
          copy.stderr.strip())
    time.sleep(0.3)  # publishes go on after the copy
finally:
    stop.set()
    producer.join()
    broker.terminate()
    broker.wait(20)
before = {n for n, at in confirmed if at < began}
check(len(before) >= 300 and len(confirmed) > len(before),
      "%d confirmed before the copy, %d after" % (len(before), len(confirmed) - len(before)))

# Restore as the document says: the copy's data.mdb into a data directory.
restored = os.path.join(tmp, "restored")
os.mkdir(restored)
shutil.copy(os.path.join(backup, "data.mdb"), os.path.join(restored, "data.mdb"))
broker, http_port = start(restored, tmp, "restored")
try:
    got = set()
    c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    while True:
        c.request("POST", "/v1/queues/orders/receive", json.dumps({"max_messages": 1000}))
        messages = json.loads(c.getresponse().read())["messages"]
        if not messages:
            break
        got.update(int(m["payload"][1:]) for m in messages)
        c.request("POST", "/v1/queues/orders/ack",
                  json.dumps({"receipts": [m["receipt"] for m in messages]}))
        c.getresponse().read()
    missing = before - got
    check(not missing, "the restored broker has every message confirmed before the copy "
          "(%d of %d; %d more from during the copy)" % (len(before & got), len(before),
                                                        len(got - before)))
    log = open(os.path.join(tmp, "restored.log")).read()
    check('"event":"recovered"' in log, "the restored broker logs recovered")
finally:
    broker.terminate()
    broker.wait(20)
    shutil.rmtree(tmp, ignore_errors=True)

finish()
