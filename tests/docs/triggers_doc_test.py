#!/usr/bin/env python3
"""docs/triggers.md tells the truth: its example function, run as written,
receives a real sluiced's invocations, verifies their signatures, and acks.

Takes the ```python block of docs/triggers.md, runs it on a free port with a
secret file, starts sluiced with a trigger pointing at it and the same secret,
publishes with sluicectl, and checks that the function printed each message
and the queue drained. A request signed with another key gets 401. Then runs
the sluicectl lines of the "## Control" section as written.

usage: triggers_doc_test.py BUILD_DIR
"""
import base64
import hashlib
import hmac
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from checks import check, finish, wait_for  # noqa: E402

repo = os.path.dirname(os.path.dirname(here))
build = os.path.abspath(sys.argv[1])
doc = open(os.path.join(repo, "docs", "triggers.md"), encoding="utf-8").read()
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
check(len(code.strip().splitlines()) <= 40, "the example function is short")
tmp = tempfile.mkdtemp(prefix="sluice-triggers-doc-")
open(os.path.join(tmp, "function.py"), "w").write(code)
secret_file = os.path.join(tmp, "secret")
open(secret_file, "w").write("an-example-secret-for-the-doc\n")
port = free_port()
out = open(os.path.join(tmp, "function.out"), "w")
env = dict(os.environ, PORT=str(port), SECRET_FILE=secret_file)
function = subprocess.Popen([sys.executable, os.path.join(tmp, "function.py")], env=env,
                            stdout=out, stderr=subprocess.STDOUT)


def listening():
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


check(wait_for(listening), "the example function listens")
port_file = os.path.join(tmp, "ports")
log = open(os.path.join(tmp, "sluiced.log"), "w")
broker = subprocess.Popen([os.path.join(build, "broker", "sluiced"), "--listen", "127.0.0.1:0",
                           "--http-listen", "127.0.0.1:0", "--port-file", port_file,
                           "--set", "triggers.resize-images.queue=photos",
                           "--set", "triggers.resize-images.url=http://127.0.0.1:%d/" % port,
                           "--set", "triggers.resize-images.signing_secret_file=" + secret_file],
                          stderr=log, cwd=tmp)  # its default data directory goes there
try:
    check(wait_for(lambda: os.path.exists(port_file)), "sluiced started")
    protocol_port = open(port_file).read().split()[0]
    ctl = [os.path.join(build, "client", "sluicectl"), "--broker", "127.0.0.1:" + protocol_port]
    ids = subprocess.run(ctl + ["publish", "photos"], input="one\ntwo\nthree\n", text=True,
                         capture_output=True, check=True).stdout.split()
    check(len(ids) == 3, "three messages published")

    def printed():
        text = open(os.path.join(tmp, "function.out")).read()
        return all("message %s " % i in text for i in ids)

    check(wait_for(printed), "the example function printed every message")
    text = open(os.path.join(tmp, "function.out")).read()
    check("message %s one" % ids[0] in text, "with its id and payload")

    def drained():
        rows = subprocess.run(ctl + ["stats", "photos"], capture_output=True, text=True).stdout
        fields = rows.splitlines()[1].split()
        return fields[1] == "0" and fields[3] == "0" and fields[7] == "3"  # ready, in flight, acked

    check(wait_for(drained), "sluiced took the 200s as acks: nothing ready or in flight, 3 acked")

    # The same request signed with another key is refused.
    body = b"forged"
    stamp = str(int(time.time()))
    mac = hmac.new(b"not-the-secret", b"1." + stamp.encode() + b"." + body, hashlib.sha256)
    request = urllib.request.Request(
        "http://127.0.0.1:%d/" % port, data=body, method="POST",
        headers={"webhook-id": "1", "webhook-timestamp": stamp, "sluice-message-id": "1",
                 "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode()})
    try:
        status = urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as e:
        status = e.code
    check(status == 401, "a request signed with another key gets 401")

    # The Control section's commands, as written (sluicectl pointed at this broker).
    control = doc[doc.index("## Control"):]
    block = re.search(r"```sh\n(.*?)```", control, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    check(len(commands) == 4, "the Control section shows four sluicectl commands")
    for words in commands:
        run = subprocess.run(ctl + words[1:], capture_output=True, text=True)
        check(run.returncode == 0, " ".join(words) + " exits 0")
        if words[1:3] == ["triggers", "pause"]:
            check(" paused " in run.stdout, "pause answers the trigger, paused")
        if words[1:3] == ["triggers", "invoke"]:
            check(run.stdout.startswith("answered 200 "), "invoke prints the function's answer")
finally:
    broker.terminate()
    function.kill()
    broker.wait(10)
    function.wait(10)

finish()
