"""What the Python tests of the suite share: a check that prints "ok" or
"FAIL" and remembers failures, waiting for a condition, and the ending that
prints the count and exits non-zero when anything failed.

    sys.path.insert(0, <tests/>); from checks import check, wait_for, finish
"""
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


def finish():
    print("%d failed" % len(failures))
    sys.exit(1 if failures else 0)
