"""What the Python tests of the suite share: a check that prints "ok" or
"FAIL" and remembers failures, waiting for a condition, starting a sluiced on
free ports, and the ending that prints the count and exits non-zero when
anything failed.

    sys.path.insert(0, <tests/>); from checks import check, wait_for, finish
"""
import os
import subprocess
import sys
import time

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)
    return ok


def wait_for(condition, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def start_sluiced(build, workdir, *args):
    """sluiced from BUILD on free ports, in WORKDIR (its log there too), with
    ARGS after the listeners: (process, protocol port, HTTP port), as text."""
    port_file = os.path.join(workdir, "port")
    log = open(os.path.join(workdir, "log"), "w")
    proc = subprocess.Popen([os.path.join(build, "broker", "sluiced"), "--listen", "127.0.0.1:0",
                             "--http-listen", "127.0.0.1:0", "--port-file", port_file, *args],
                            stderr=log, cwd=workdir)
    ports = []
    deadline = time.time() + 10
    while time.time() < deadline and len(ports) < 2:
        try:
            ports = open(port_file).read().split()
        except OSError:
            pass
        time.sleep(0.05)
    if len(ports) < 2:
        proc.kill()
        raise RuntimeError("sluiced did not start; its log: " + os.path.join(workdir, "log"))
    return proc, ports[0], ports[1]


def finish():
    print("%d failed" % len(failures))
    sys.exit(1 if failures else 0)
