#!/usr/bin/env python3
"""Event ingress against a real sluiced (docs/ingress.md): verified webhook
sources signed with openssl the way GitHub, Stripe and Standard Webhooks
document it, CloudEvents in all three modes reaching a protocol consumer, and
queue schemas refusing what they should over HTTP and the protocol, reloaded
on SIGHUP.

usage: ingress_test.py BUILD_DIR
"""
import base64
import json
import os
import re
import http.server
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from checks import check, finish, start_sluiced, wait_for  # noqa: E402

build = os.path.abspath(sys.argv[1])
sluicectl = os.path.join(build, "client", "sluicectl")
work = tempfile.mkdtemp(prefix="sluice-ingress-")


def write(name, text):
    with open(os.path.join(work, name), "w") as f:
        f.write(text)


def hmac(key, data, binary=False):
    """HMAC-SHA256 of DATA under KEY (bytes), computed by openssl: hex, or raw bytes."""
    args = ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:" + key.hex()]
    r = subprocess.run(args + (["-binary"] if binary else []), input=data, capture_output=True,
                       check=True, timeout=10)
    return r.stdout if binary else r.stdout.decode().strip().split("= ")[-1]


def post(path, body, headers=None, token=None):
    """(status, parsed JSON body or raw text) of a POST."""
    data = body if isinstance(body, bytes) else body.encode()
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=data, method="POST", headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def receive(queue, n=100):
    status, body = post("/v1/queues/%s/receive" % queue, json.dumps({"max_messages": n}),
                        token=admin)
    check(status == 200, "receive from %s answers 200 (%d %s)" % (queue, status, body))
    return body.get("messages", []) if isinstance(body, dict) else []


def metrics():
    req = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer " + admin})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"(\w+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return None


def ctl(*args, stdin=None):
    return subprocess.run([sluicectl, "--broker", "127.0.0.1:" + proto, "--token-file",
                           os.path.join(work, "admin.token"), *args], input=stdin,
                          capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# Secrets, schemas and the config

github_secret = b"It is a Secret to Everybody"
github_old = b"the secret before the rotation"
stripe_secret = b"whsec_test_51Hv3kPGm7sQ2Lb8"
standard_key = bytes(range(32))
plain_secret = b"a plain shared secret"
write("gh.secret", github_secret.decode() + "\n")  # a trailing newline is not part of it
write("gh-old.secret", github_old.decode())
write("stripe.secret", stripe_secret.decode())
write("std.secret", "whsec_" + base64.b64encode(standard_key).decode())
write("plain.secret", plain_secret.decode())
write("orders-v1.json", json.dumps({
    "type": "object", "required": ["order", "total"],
    "properties": {"order": {"type": "integer"}, "total": {"type": "number", "minimum": 0},
                   "lines": {"type": "array", "items": {"$ref": "#/definitions/line"}}},
    "definitions": {"line": {"type": "object", "required": ["sku"],
                             "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}}}}}))
write("orders-v2.json", json.dumps({"type": "object", "required": ["order", "currency"]}))
write("bad.json", json.dumps({"type": "object", "unevaluatedProperties": False}))

# A function a trigger pushes CloudEvents into: it records each request's headers and body.
invocations = []


class Function(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        invocations.append(({k.lower(): v for k, v in self.headers.items()}, body.decode()))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


function = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Function)
threading.Thread(target=function.serve_forever, daemon=True).start()

admin = subprocess.run([sluicectl, "new-token"], capture_output=True, text=True).stdout.split()[0]
admin_hash = subprocess.run([sluicectl, "hash-token"], input=admin, capture_output=True,
                            text=True).stdout.strip()
admin_hash = re.search(r'sha256:[0-9a-f:]+', admin_hash).group(0)
write("admin.token", admin)

config = """
[tokens.admin]
hash = "%s"
admin = ["*"]
metrics = "on"

[queues.gh]
dedup_window = "1h"

[queues.orders]
require_schema = "on"
[queues.orders.schemas]
v1 = "orders-v1.json"

[sources.gh]
queue = "gh"
scheme = "github"
secret_file = "gh.secret"
previous_secret_file = "gh-old.secret"

[queues.stripe]
dedup_window = "10m"

[sources.stripe]
queue = "stripe"
scheme = "stripe"
secret_file = "stripe.secret"

[sources.std]
queue = "std"
scheme = "standard-webhooks"
secret_file = "std.secret"
tolerance = "2m"

[sources.plain]
queue = "plain"
scheme = "hmac"
secret_file = "plain.secret"
signature_header = "X-Sig"
signature_encoding = "base64"
id_header = "X-Delivery-Id"
rate = 0.1
burst = 2

[triggers.ce-fn]
queue = "ce-push"
url = "http://127.0.0.1:%d/events"
""" % (admin_hash, function.server_address[1])
write("sluiced.toml", config)

# A schema with an unsupported keyword stops sluiced at start, naming it.
write("bad.toml", "[queues.q.schemas]\nv1 = \"bad.json\"\n")
r = subprocess.run([os.path.join(build, "broker", "sluiced"), "--config",
                    os.path.join(work, "bad.toml"), "--listen", "127.0.0.1:0", "--http-listen",
                    "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
check(r.returncode != 0 and "unevaluatedProperties" in r.stderr and "bad.json" in r.stderr,
      "a schema with an unsupported keyword stops sluiced, naming the keyword and file (%s)" %
      r.stderr.strip()[-200:])
r = subprocess.run([os.path.join(build, "broker", "sluiced"), "--check", "--config",
                    os.path.join(work, "bad.toml")], capture_output=True, text=True, timeout=30)
check(r.returncode != 0 and "unevaluatedProperties" in r.stderr,
      "sluiced --check reads and compiles the schemas too")
# A signed timestamp stops replays only while the queue remembers the delivery id.
write("replay.toml", '[sources.s]\nqueue = "q"\nscheme = "stripe"\nsecret_file = "stripe.secret"\n')
r = subprocess.run([os.path.join(build, "broker", "sluiced"), "--check", "--config",
                    os.path.join(work, "replay.toml")], capture_output=True, text=True, timeout=30)
check(r.returncode != 0 and "dedup_window" in r.stderr and "10m" in r.stderr,
      "a stripe source whose queue forgets ids sooner than twice the tolerance is refused (%s)" %
      r.stderr.strip()[-200:])

broker, proto, http_port = start_sluiced(build, work, "--config", os.path.join(work, "sluiced.toml"))
base = "http://127.0.0.1:" + http_port
try:
    now = int(time.time())

    # -----------------------------------------------------------------------------------------
    # GitHub: X-Hub-Signature-256 over the body; X-GitHub-Delivery names the delivery.
    def github(body, delivery, secret=github_secret, signature=None, event="push"):
        h = {"Content-Type": "application/json", "X-GitHub-Event": event,
             "X-GitHub-Delivery": delivery}
        if signature is not False:
            h["X-Hub-Signature-256"] = signature or "sha256=" + hmac(secret, body.encode())
        return post("/v1/sources/gh", body, h)

    body = '{"ref":"refs/heads/main","after":"1f2e3d"}'
    status, answer = github(body, "d-1")
    check(status == 202 and answer.get("duplicate") is False,
          "github: a signed delivery is enqueued (%d %s)" % (status, answer))
    status, answer = github(body, "d-1")
    check(status == 202 and answer.get("duplicate") is True,
          "github: its redelivery is a duplicate (%d %s)" % (status, answer))
    status, answer = github(body, "d-2", signature="sha256=" + hmac(github_secret, body.encode()))
    check(status == 202, "github: a new delivery id with the same body is new")
    tampered = body.replace("main", "evil")
    status, answer = github(tampered, "d-3", signature="sha256=" + hmac(github_secret, body.encode()))
    check(status == 401 and answer == {"error": {"code": "unauthenticated",
                                                 "message": "unauthenticated"}},
          "github: a tampered body is 401 with no detail (%d %s)" % (status, answer))
    status, _ = github(body, "d-4", secret=b"not the secret at all")
    check(status == 401, "github: a wrong secret is 401")
    status, _ = github(body, "d-5", signature=False)
    check(status == 401, "github: a missing signature header is 401")
    status, _ = github(body, "d-6", signature="sha256=zz")
    check(status == 401, "github: a malformed signature is 401")
    status, answer = github(body, "d-7", secret=github_old)
    check(status == 202 and answer.get("duplicate") is False,
          "github: the previous secret still verifies during a rotation (%d %s)" % (status, answer))
    got = receive("gh")
    check(len(got) == 3, "github: three deliveries in the queue, each once (%d)" % len(got))
    first = got[0] if got else {}
    check(first.get("payload") == body and first.get("headers", {}).get("x-github-event") == "push"
          and first.get("headers", {}).get("sluice-source") == "gh"
          and first.get("correlation_id") == "d-1",
          "github: the message is the body with the delivery's headers (%s)" % first)

    # -----------------------------------------------------------------------------------------
    # Stripe: t=...,v1=<hex of "t.body">, a tolerance; the event id dedups.
    def stripe(body, t, secret=stripe_secret, extra=""):
        sig = hmac(secret, ("%d." % t).encode() + body.encode())
        return post("/v1/sources/stripe", body, {"Stripe-Signature": "t=%d,%sv1=%s" % (t, extra, sig)})

    event = '{"id":"evt_1","type":"invoice.paid"}'
    status, answer = stripe(event, now)
    check(status == 202 and answer.get("duplicate") is False, "stripe: a signed event is enqueued")
    status, answer = stripe(event, now + 1)
    check(status == 202 and answer.get("duplicate") is True,
          "stripe: a retry of the same event (new timestamp) is a duplicate (%s)" % answer)
    status, answer = stripe('{"id":"evt_2"}', now, extra="v1=%s," % ("0" * 64))
    check(status == 202, "stripe: one of several v1 signatures verifying is enough (%d)" % status)
    status, answer = stripe('{"id":"evt_3"}', now - 600)
    check(status == 400 and "tolerance" in json.dumps(answer),
          "stripe: a timestamp 10 minutes old is stale: 400 (%d %s)" % (status, answer))
    status, answer = stripe('{"id":"evt_4"}', now + 600)
    check(status == 400, "stripe: one 10 minutes ahead is stale too")
    status, _ = stripe('{"id":"evt_5"}', now, secret=b"whsec_wrong")
    check(status == 401, "stripe: a wrong secret is 401")
    status, _ = post("/v1/sources/stripe", event, {})
    check(status == 401, "stripe: no Stripe-Signature is 401")
    status, _ = post("/v1/sources/stripe", event, {"Stripe-Signature": "v1=" + "0" * 64})
    check(status == 401, "stripe: a signature without t= is 401")
    check(len(receive("stripe")) == 2, "stripe: two events in the queue")

    # -----------------------------------------------------------------------------------------
    # Standard Webhooks: v1,<base64 of "id.timestamp.body"> with the whsec_ key.
    def standard(body, msg_id, ts, key=standard_key, drop=None):
        sig = base64.b64encode(hmac(key, ("%s.%d." % (msg_id, ts)).encode() + body.encode(),
                                    binary=True)).decode()
        h = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
             "webhook-signature": "v1,%s v1,%s" % (base64.b64encode(b"x" * 32).decode(), sig)}
        if drop:
            del h[drop]
        return post("/v1/sources/std", body, h)

    status, answer = standard('{"type":"user.created"}', "msg_1", now)
    check(status == 202 and answer.get("duplicate") is False,
          "standard-webhooks: a signed message is enqueued (%d %s)" % (status, answer))
    status, answer = standard('{"type":"user.created"}', "msg_1", now)
    check(status == 202 and answer.get("duplicate") is True,
          "standard-webhooks: its retry (same webhook-id) is a duplicate")
    status, _ = standard('{"type":"user.created"}', "msg_2", now - 300)
    check(status == 400, "standard-webhooks: 5 minutes old is stale with a 2m tolerance")
    status, _ = standard('{"type":"user.created"}', "msg_3", now, key=bytes(32))
    check(status == 401, "standard-webhooks: a wrong key is 401")
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        status, _ = standard('{"type":"user.created"}', "msg_4", now, drop=header)
        check(status == 401, "standard-webhooks: without %s it is 401" % header)

    # -----------------------------------------------------------------------------------------
    # A generic HMAC header (base64, sha256= prefix) with its own delivery id and rate.
    def plain(body, delivery):
        sig = base64.b64encode(hmac(plain_secret, body.encode(), binary=True)).decode()
        return post("/v1/sources/plain", body, {"X-Sig": "sha256=" + sig,
                                                "X-Delivery-Id": delivery})

    check(plain("one", "p-1")[0] == 202, "hmac: a signed request is enqueued")
    check(plain("one", "p-1")[1].get("duplicate") is True, "hmac: id_header dedups")
    status, answer = plain("three", "p-3")
    check(status == 429 and answer["error"].get("retry_after_ms", 0) > 0,
          "hmac: past the source's rate (burst 2) it is 429 with a retry time (%d %s)" %
          (status, answer))

    # -----------------------------------------------------------------------------------------
    # No bearer token on a source, and the rest of the API still needs one.
    status, _ = post("/v1/queues/gh/messages", "x", {})
    check(status == 401, "the queue API without a token is still 401")
    status, _ = post("/v1/sources/nope", "x", {})
    check(status == 404, "an unknown source is 404")

    m = metrics()
    for source, result, n in [("gh", "accepted", 3), ("gh", "duplicate", 1),
                              ("gh", "bad_signature", 4), ("stripe", "stale", 2),
                              ("stripe", "duplicate", 1), ("std", "bad_signature", 4),
                              ("plain", "rate_limited", 1), ("plain", "duplicate", 1)]:
        got_n = metric(m, "sluice_source_requests_total", source=source, result=result)
        check(got_n == n, "sluice_source_requests_total{source=%s,result=%s} is %d (%s)" %
              (source, result, n, got_n))

    # -----------------------------------------------------------------------------------------
    # A rotation by reload: the new secret in, the old one as previous, then the old one out.
    new_secret = b"the secret after the rotation"
    write("gh-new.secret", new_secret.decode())
    rotated = config.replace('secret_file = "gh.secret"\nprevious_secret_file = "gh-old.secret"',
                             'secret_file = "gh-new.secret"\nprevious_secret_file = "gh.secret"')
    check(rotated != config, "the rotation edits the config")
    write("sluiced.toml", rotated)
    broker.send_signal(signal.SIGHUP)
    check(wait_for(lambda: github(body, "r-%f" % time.time(), secret=new_secret)[0] == 202, 10),
          "rotation: after SIGHUP the new secret verifies")
    check(github(body, "r-old", secret=github_secret)[0] == 202,
          "rotation: the secret being replaced still verifies")
    write("sluiced.toml", rotated.replace('previous_secret_file = "gh.secret"\n', ""))
    broker.send_signal(signal.SIGHUP)
    check(wait_for(lambda: github(body, "r-%f" % time.time(), secret=github_secret)[0] == 401, 10),
          "rotation: once removed, the old secret is refused")
    m = metrics()
    check(metric(m, "sluice_source_requests_total", source="gh", result="bad_signature") >= 5,
          "a source's counts survive a reload")
    write("sluiced.toml", config)
    broker.send_signal(signal.SIGHUP)

    # -----------------------------------------------------------------------------------------
    # CloudEvents: the spec's own examples in each mode, then a protocol consumer.
    binary = {"ce-specversion": "1.0", "ce-type": "com.example.someevent",
              "ce-time": "2018-04-05T03:56:24Z", "ce-id": "1234-1234-1234",
              "ce-source": "/mycontext/subcontext", "ce-comexampleextension1": "value",
              "Content-Type": "application/json; charset=utf-8"}
    status, answer = post("/v1/queues/ce/messages", '{"hello": "binary"}', binary, token=admin)
    check(status == 202 and answer.get("duplicate") is False, "cloudevents: binary mode is taken")
    structured = {"specversion": "1.0", "type": "com.example.someevent",
                  "time": "2018-04-05T03:56:24Z", "id": "A234-1234-1234",
                  "source": "/mycontext/subcontext", "comexampleextension1": "value",
                  "comexampleothervalue": 5, "datacontenttype": "application/json",
                  "data": {"hello": "structured"}}
    status, answer = post("/v1/queues/ce/messages", json.dumps(structured),
                          {"Content-Type": "application/cloudevents+json; charset=utf-8"},
                          token=admin)
    check(status == 202 and answer.get("duplicate") is False,
          "cloudevents: structured mode is taken (%d %s)" % (status, answer))
    batch = [dict(structured, id="B-1", data={"n": 1}),
             dict(structured, id="B-2", data_base64="AAEC", datacontenttype="application/octet-stream")]
    del batch[1]["data"]
    status, answer = post("/v1/queues/ce/messages", json.dumps(batch),
                          {"Content-Type": "application/cloudevents-batch+json"}, token=admin)
    check(status == 202 and len(answer.get("messages", [])) == 2,
          "cloudevents: batch mode takes each event (%d %s)" % (status, answer))
    status, answer = post("/v1/queues/ce/messages", '{"hello": "again"}', binary, token=admin)
    check(status == 202 and answer.get("duplicate") is True,
          "cloudevents: the same source and id again is a duplicate")
    status, answer = post("/v1/queues/ce/messages", json.dumps(dict(structured, source="/other")),
                          {"Content-Type": "application/cloudevents+json"}, token=admin)
    check(status == 202 and answer.get("duplicate") is False,
          "cloudevents: the same id from another source is not")
    for what, headers, body in [
            ("binary without ce-id", {k: v for k, v in binary.items() if k != "ce-id"}, "{}"),
            ("binary with specversion 0.3", dict(binary, **{"ce-specversion": "0.3"}), "{}"),
            ("structured without type", {"Content-Type": "application/cloudevents+json"},
             json.dumps({k: v for k, v in structured.items() if k != "type"})),
            ("structured with an object attribute", {"Content-Type": "application/cloudevents+json"},
             json.dumps(dict(structured, subject={"a": 1}))),
            ("structured with an upper-case attribute", {"Content-Type": "application/cloudevents+json"},
             json.dumps(dict(structured, Bad="x"))),
            ("structured that is not JSON", {"Content-Type": "application/cloudevents+json"}, "{"),
            ("a batch that is not an array", {"Content-Type": "application/cloudevents-batch+json"},
             json.dumps(structured)),
            ("a batch with one bad event", {"Content-Type": "application/cloudevents-batch+json"},
             json.dumps([dict(structured, id="X-1"), {"specversion": "1.0"}]))]:
        status, answer = post("/v1/queues/ce/messages", body, headers, token=admin)
        check(status == 400 and answer["error"]["code"] == "invalid_argument",
              "cloudevents: %s is 400 (%d %s)" % (what, status, answer))
    status, answer = post("/v1/queues/ce/messages", json.dumps([dict(structured, id="X-1")]),
                          {"Content-Type": "application/cloudevents-batch+json"}, token=admin)
    check(status == 202 and answer["messages"][0]["duplicate"] is False,
          "cloudevents: nothing of a refused batch was taken")

    r = ctl("consume", "ce", "--count", "6", "--timeout", "10", "--headers")
    lines = r.stdout
    check(r.returncode == 0, "cloudevents: a protocol consumer gets them (%s)" % r.stderr)
    check('{"hello": "binary"}' in lines and "ce-id=1234-1234-1234" in lines and
          "ce-comexampleextension1=value" in lines and "content-type=application/json; charset=utf-8" in lines,
          "cloudevents: the binary event arrives as data with its ce- headers")
    check('"data": {"hello": "structured"}' in lines and "ce-id=A234-1234-1234" in lines and
          "content-type=application/cloudevents+json" in lines and "ce-comexampleothervalue=5" in lines,
          "cloudevents: the structured event arrives as the event, with its attributes as headers")
    check("ce-id=B-1" in lines and "ce-id=B-2" in lines and '"data_base64":"AAEC"' in lines,
          "cloudevents: the batch's events arrive one by one, as structured events")

    deep = ('[{"specversion":"1.0","id":"deep","source":"/s","type":"t","data":' + "[" * 100000 +
            "]" * 100000 + "}]")
    status, answer = post("/v1/queues/ce/messages", deep,
                          {"Content-Type": "application/cloudevents-batch+json"}, token=admin)
    check(status == 400 and "deeper" in json.dumps(answer),
          "cloudevents: a batch nesting 100,000 deep is 400, and the broker stays up (%d)" % status)
    check(broker.poll() is None, "sluiced is up after the deep batch")

    # A trigger (body = "raw") invokes its function in the mode each event came in.
    post("/v1/queues/ce-push/messages", '{"hello": "binary"}', binary, token=admin)
    post("/v1/queues/ce-push/messages", json.dumps(structured),
         {"Content-Type": "application/cloudevents+json"}, token=admin)
    check(wait_for(lambda: len(invocations) >= 2, 10), "cloudevents: the trigger invoked twice")
    by_id = {h.get("ce-id"): (h, b) for h, b in invocations}
    h, b = by_id.get("1234-1234-1234", ({}, ""))
    check(b == '{"hello": "binary"}' and h.get("ce-specversion") == "1.0" and
          h.get("ce-source") == "/mycontext/subcontext" and
          h.get("content-type") == "application/json; charset=utf-8",
          "cloudevents: a binary event reaches the function as a binary-mode request (%s)" % h)
    h, b = by_id.get("A234-1234-1234", ({}, ""))
    check(h.get("content-type") == "application/cloudevents+json" and
          json.loads(b or "{}").get("data") == {"hello": "structured"},
          "cloudevents: a structured event reaches it as a structured-mode request (%s %s)" %
          (h.get("content-type"), b))

    # -----------------------------------------------------------------------------------------
    # Schemas: HTTP, the protocol, batches, CloudEvents' dataschema, reload.
    def order(doc, version="v1", extra=None):
        h = {"Sluice-Schema-Version": version} if version else {}
        h.update(extra or {})
        return post("/v1/queues/orders/messages", json.dumps(doc), h, token=admin)

    check(order({"order": 1, "total": 2.5, "lines": [{"sku": "ABC-1"}]})[0] == 202,
          "schema: a valid order is taken")
    status, answer = order({"order": 1, "total": 2.5, "lines": [{"sku": "ABC-1"}, {"sku": "abc"}]})
    e = answer.get("error", {}) if isinstance(answer, dict) else {}
    check(status == 400 and e.get("pointer") == "/lines/1/sku" and e.get("keyword") == "pattern"
          and e.get("schema_version") == "v1",
          "schema: an invalid order is 400 with the pointer and keyword (%d %s)" % (status, answer))
    status, answer = order({"order": "1", "total": 1})
    check(status == 400 and answer["error"].get("keyword") == "type" and
          answer["error"].get("pointer") == "/order", "schema: a wrong type names its pointer")
    status, answer = order({"order": 1})
    check(status == 400 and answer["error"].get("keyword") == "required",
          "schema: a missing property is 'required'")
    status, answer = order({"order": 1, "total": 1}, version=None)
    check(status == 400 and answer["error"].get("keyword") == "schema_version",
          "schema: no version on a queue that requires one is 400")
    status, answer = order({"order": 1, "total": 1}, version="v9")
    check(status == 400 and "unknown schema version" in answer["error"]["message"],
          "schema: an unknown version is 400 (%s)" % answer)
    status, _ = post("/v1/queues/orders/messages", "not json", {"Sluice-Schema-Version": "v1"},
                     token=admin)
    check(status == 400, "schema: a payload that is not JSON is 400")
    # A second content-type would let the check read a CloudEvent's data while a
    # consumer reads the first content-type and the whole payload.
    status, answer = post("/v1/queues/orders/messages", json.dumps(
        {"specversion": "1.0", "data": {"order": 1, "total": 1}, "order": "x", "total": -5}),
        {"Content-Type": "application/json", "Sluice-Schema-Version": "v1",
         "Sluice-Header-Content-Type": "application/cloudevents+json"}, token=admin)
    check(status == 400 and "given twice" in answer["error"]["message"],
          "schema: a repeated content-type header is refused on a schema queue (%s)" % answer)
    r = ctl("publish", "orders", "--body", json.dumps({"data": {"order": 1, "total": 1},
                                                       "order": "x", "total": 1}),
            "--header", "sluice-schema-version=v1", "--header",
            "content-type=application/cloudevents+json")
    check(r.returncode != 0 and "/order" in r.stderr,
          "schema: a payload that only claims to be a CloudEvent is checked whole (%s)" %
          r.stderr.strip())
    status, answer = post("/v1/queues/orders/messages/batch", json.dumps({"messages": [
        {"payload": json.dumps({"order": 5, "total": 1}), "headers": {"sluice-schema-version": "v1"}},
        {"payload": json.dumps({"order": 6, "total": -1}), "headers": {"sluice-schema-version": "v1"}}]}),
        token=admin)
    check(status == 400 and answer["error"].get("message_index") == 1 and
          answer["error"]["message"].startswith("batch: message 1:"),
          "schema: a batch with an invalid message is refused whole, naming it (%s)" % answer)
    status, answer = post("/v1/queues/orders/messages", json.dumps(dict(
        structured, id="O-1", dataschema="https://example.com/schemas/orders/v1.json",
        data={"order": 9, "total": 0})), {"Content-Type": "application/cloudevents+json"},
        token=admin)
    check(status == 202, "schema: a CloudEvent's dataschema names the version, its data is checked")
    status, answer = post("/v1/queues/orders/messages", json.dumps(dict(
        structured, id="O-2", dataschema="https://example.com/schemas/orders/v1",
        data={"order": 9, "total": -5})), {"Content-Type": "application/cloudevents+json"},
        token=admin)
    check(status == 400 and answer["error"].get("pointer") == "/total",
          "schema: an invalid CloudEvent's data is refused, pointer into its data")
    r = ctl("publish", "orders", "--body", '{"order": 2, "total": -3}', "--header",
            "sluice-schema-version=v1")
    check(r.returncode != 0 and "invalid_argument" in r.stderr and "/total" in r.stderr and
          "minimum" in r.stderr,
          "schema: over the protocol an invalid message is invalid_argument with the pointer (%s)" %
          r.stderr.strip())
    r = ctl("publish", "orders", "--body", '{"order": 2, "total": 3}', "--header",
            "sluice-schema-version=v1")
    check(r.returncode == 0, "schema: over the protocol a valid one is confirmed (%s)" % r.stderr)

    # A new version while producers still send the old one; a bad file fails the reload.
    write("sluiced.toml", config.replace('v1 = "orders-v1.json"',
                                         'v1 = "orders-v1.json"\nv2 = "orders-v2.json"'))
    broker.send_signal(signal.SIGHUP)
    check(wait_for(lambda: order({"order": 3, "currency": "EUR"}, version="v2")[0] == 202, 10),
          "schema: after SIGHUP version v2 is taken")
    check(order({"order": 4, "total": 1})[0] == 202, "schema: and v1 still is")
    write("sluiced.toml", config.replace('v1 = "orders-v1.json"',
                                         'v1 = "orders-v1.json"\nv2 = "bad.json"'))
    broker.send_signal(signal.SIGHUP)
    log_path = os.path.join(work, "log")
    check(wait_for(lambda: "unevaluatedProperties" in open(log_path).read(), 10),
          "schema: a reload with an unsupported keyword fails, naming it in the log")
    check(order({"order": 3, "currency": "EUR"}, version="v2")[0] == 202,
          "schema: after the failed reload the running v2 is kept")

    m = metrics()
    valid = metric(m, "sluice_schema_checks_total", queue="orders", version="v1", result="valid")
    invalid = metric(m, "sluice_schema_checks_total", queue="orders", version="v1", result="invalid")
    missing = metric(m, "sluice_schema_checks_total", queue="orders", version="",
                     result="missing_version")
    check(valid is not None and valid >= 5 and invalid is not None and invalid >= 6 and missing == 1,
          "schema: checks are counted per queue, version and result (%s %s %s)" %
          (valid, invalid, missing))
    check(broker.poll() is None, "sluiced is still up")
finally:
    broker.terminate()
    broker.wait(timeout=10)

finish()
