#!/usr/bin/env python3
"""A real HTTP function for the trigger tests: its own process, speaking HTTP/1.1
on a loopback socket, the way a Lambda function URL or a Cloud Run service
would receive sluiced's invocations.

It verifies every request's Standard Webhooks signature (webhook-id,
webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">) with the secret in --secret-file, records every request,
and behaves as told on POST /_control:

  {"mode": "ok"}                      2xx (after sleep_ms)
  {"mode": "fail", "status": 500}     that status
  {"mode": "throttle", "retry_after": 2}   429 with Retry-After
  {"mode": "hang"}                    never answers (until told otherwise)
  {"mode": "reset"}                   closes the connection without an answer
  {"fail_ids": ["12", ...]}           2xx with {"failed": [...]} naming those ids
  {"fail_first_ids": [...]}           the same, on their first attempt only
  {"fail_first_marked": "TEXT"}       the same for messages whose payload holds TEXT
  {"dead_letter": "REASON"}           200 with sluice-dead-letter: REASON
  {"sleep_ms": 5, "max_parallel": 6}  beyond max_parallel, requests wait their turn
  {"reset_stats": true}               forget what was seen

GET /_stats answers what it saw: every request (ids, attempts, keys, whether
it was signed, start and end), the most requests it held at once, bad
signatures. GET /_seen answers less, cheaply: how often each id came, the
number of requests and the most held at once.

  function_server.py --port-file FILE --secret-file FILE [--cert PEM --key PEM]

With --cert and --key the function speaks HTTPS, and a second, plain-HTTP
listener answers /_control, /_stats and /_seen: the port file then holds
"PORT CONTROL_PORT".
"""
import argparse
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self, secret):
        self.secret = secret
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.control = {"mode": "ok", "sleep_ms": 0, "status": 500, "retry_after": 0,
                        "fail_ids": [], "max_parallel": 0}
        self.now = 0          # requests being handled
        self.serving = 0      # of those, past the max_parallel gate
        self.most = 0         # the most requests held at once
        self.requests = []    # one entry per function request, in arrival order
        self.bad_signatures = 0
        self.statuses = {}
        self.seen = {}        # message id -> requests that carried it


STATE = None


def verify(headers, body):
    """The documented algorithm: HMAC-SHA256 over id.timestamp.body, base64, "v1," prefix."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not msg_id or not stamp or not given:
        return False
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(STATE.secret, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(part, "v1," + expected) for part in given.split(" "))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        with STATE.lock:
            if self.path == "/_stats":
                out = {"requests": STATE.requests, "most": STATE.most, "now": STATE.now,
                       "bad_signatures": STATE.bad_signatures, "statuses": STATE.statuses}
            elif self.path == "/_seen":
                out = {"seen": STATE.seen, "requests": len(STATE.requests), "most": STATE.most}
            else:
                return self.answer(404)
            body = json.dumps(out).encode()
        self.answer(200, body, [("Content-Type", "application/json")])

    def do_POST(self):
        body = self.read_body()
        if self.path == "/_control":
            with STATE.cond:
                STATE.control.update(json.loads(body or b"{}"))
                if "reset_stats" in STATE.control:
                    STATE.control.pop("reset_stats")
                    STATE.requests, STATE.most, STATE.bad_signatures = [], 0, 0
                    STATE.seen = {}
                STATE.cond.notify_all()
            return self.answer(204)
        self.invoke(body)

    do_PUT = do_POST

    def invoke(self, body):
        headers = {k.lower(): v for k, v in self.headers.items()}
        signed = verify(headers, body)
        # (id, attempt, key) of each message: the JSON array's entries, or the raw headers.
        messages = []
        if headers.get("content-type", "").startswith("application/json") and body.startswith(b"["):
            try:
                for m in json.loads(body):
                    messages.append((str(m["id"]), int(m["attempt"]),
                                     m.get("headers", {}).get("sluice-key"),
                                     m.get("payload", "")))
            except (ValueError, KeyError, TypeError):
                messages = []
        elif "sluice-message-id" in headers:
            messages = [(headers["sluice-message-id"], int(headers.get("sluice-attempt", "0")),
                         headers.get("sluice-key"), body.decode("utf-8", "replace"))]
        ids = [m[0] for m in messages]
        started = time.monotonic()
        with STATE.cond:
            STATE.now += 1
            STATE.most = max(STATE.most, STATE.now)
            if not signed:
                STATE.bad_signatures += 1
            record = {"ids": ids, "attempts": [m[1] for m in messages],
                      "keys": [m[2] for m in messages], "signed": signed, "start": started,
                      "headers": headers}
            STATE.requests.append(record)
            for i in ids:
                STATE.seen[i] = STATE.seen.get(i, 0) + 1
            control = dict(STATE.control)
            # A function that serves at most max_parallel at once: the rest wait their turn.
            while STATE.control.get("max_parallel", 0) and STATE.serving >= STATE.control["max_parallel"]:
                STATE.cond.wait()
            STATE.serving += 1
        try:
            mode = control.get("mode", "ok")
            if mode == "hang":
                with STATE.cond:
                    while STATE.control.get("mode") == "hang":
                        STATE.cond.wait(0.05)
                mode = STATE.control.get("mode", "ok")
            if control.get("sleep_ms"):
                time.sleep(control["sleep_ms"] / 1000.0)
            if mode == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()
                status = 0
            elif mode == "fail":
                status = int(control.get("status", 500))
                self.answer(status, b"failing on purpose")
            elif control.get("dead_letter"):
                status = 200
                self.answer(200, b"", [("sluice-dead-letter", control["dead_letter"])])
            elif mode == "throttle":
                status = 429
                self.answer(429, b"slow down", [("Retry-After", str(control.get("retry_after", 1)))])
            else:
                always = set(map(str, control.get("fail_ids", [])))
                first = set(map(str, control.get("fail_first_ids", [])))
                marked = control.get("fail_first_marked")
                failed = [i for i, attempt, _, payload in messages
                          if i in always or (attempt == 1 and (
                              i in first or (marked and marked in payload)))]
                status = 200
                if failed:
                    self.answer(200, json.dumps({"failed": failed}).encode(),
                                [("Content-Type", "application/json")])
                else:
                    self.answer(200, b"")
        finally:
            with STATE.cond:
                STATE.now -= 1
                STATE.serving -= 1
                record["status"] = status
                record["end"] = time.monotonic()
                STATE.statuses[str(status)] = STATE.statuses.get(str(status), 0) + 1
                STATE.cond.notify_all()


def main():
    global STATE
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    with open(args.secret_file, "rb") as f:
        STATE = State(f.read().strip())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ports = str(server.server_address[1])
    if args.cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        control = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        control.daemon_threads = True
        threading.Thread(target=control.serve_forever, daemon=True).start()
        ports += " " + str(control.server_address[1])
    with open(args.port_file + ".tmp", "w") as f:
        f.write(ports)
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
