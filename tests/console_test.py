#!/usr/bin/env python3
"""The web console (ui/, served at /ui/) in headless Chromium against a real
sluiced: the overview lists queues with the depth the API reports, a page of
10,000 queues renders quickly and filters, the page runs under its strict
Content-Security-Policy with no violation, and with tokens configured it asks
for one (kept in sessionStorage) before it shows anything. Screenshots go to
BUILD_DIR/console-screenshots/.

usage: console_test.py BUILD_DIR
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from checks import check, finish, start_sluiced, wait_for  # noqa: E402

from selenium import webdriver  # noqa: E402  (Debian python3-selenium)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

build = os.path.abspath(sys.argv[1])
shots = os.path.join(build, "console-screenshots")
os.makedirs(shots, exist_ok=True)
sluicectl = os.path.join(build, "client", "sluicectl")


def browser():
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--user-data-dir=" + tempfile.mkdtemp()):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


# The table is drawn again every 2 s, so it is read in one script call (an
# element found earlier may be gone): each row as {"queue": name, CLASS: text}.
READ_TABLE = """
return Array.from(document.querySelectorAll('#queues tbody tr')).map(tr => {
  const row = {queue: tr.dataset.queue};
  for (const td of tr.cells) row[td.className.split(' ').pop()] = td.textContent;
  return row;
});"""


def rows(driver):
    return driver.execute_script(READ_TABLE)


def row_of(driver, queue):
    for row in rows(driver):
        if row["queue"] == queue:
            return row
    return None


def api(base, method, path, body=None, token=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def api_status(base, method, path, body=None, token=None):
    try:
        api(base, method, path, body, token)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


def text_of(driver, element_id):
    return driver.execute_script("return document.getElementById(arguments[0]).textContent",
                                 element_id)


def body_of(driver, table_id):
    return driver.execute_script(
        "return document.querySelector('#' + arguments[0] + ' tbody').textContent", table_id)


def visible(driver, element_id):
    return driver.execute_script("return !document.getElementById(arguments[0]).closest('[hidden]')",
                                 element_id)


XSS = '<img src=x onerror="document.title=\'pwned\'">'


def csp_violations(driver):
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused" in e["message"]]


driver = browser()
try:
    # -----------------------------------------------------------------------------------------
    # Without tokens: the overview, 10,000 queues, the filter.
    work = tempfile.mkdtemp(prefix="sluice-console-")
    broker, proto, http_port = start_sluiced(build, work, "--set", "limits.max_queues=20000")
    base = "http://127.0.0.1:" + http_port
    try:
        for i in range(7):
            api(base, "POST", "/v1/queues/orders/messages", b"order %d" % i)
        driver.get(base + "/ui/")
        check(wait_for(lambda: row_of(driver, "orders") is not None, 15),
              "the overview lists a queue once messages were published to it")
        listed = api(base, "GET", "/v1/queues?limit=1&contains=orders")["queues"][0]
        row = row_of(driver, "orders") or {}
        check(row.get("ready") == str(listed["messages"]["ready"]) == "7",
              "its depth is what /v1/queues reports (%s)" % row)
        check(driver.title == "Sluice", "the page title is the console's")
        check(wait_for(lambda: driver.execute_script(
            "const s = document.querySelector('tr[data-queue=orders] td.spark svg polyline');"
            "return s && s.getAttribute('points').split(' ').length >= 2"), 15),
              "a sparkline of the queue's last seconds appears (GET /v1/stats/history)")
        history = api(base, "GET", "/v1/stats/history?queue=orders&seconds=900")["queues"]
        check(sum(history["orders"]["published"]) <= 7 and history["orders"]["depth"][-1] == 7,
              "the history holds the queue's depth and publishes (%s)" % history["orders"])
        violations = csp_violations(driver)
        check(violations == [],
              "the page runs under its Content-Security-Policy with no violation (%s)" % violations)
        driver.save_screenshot(os.path.join(shots, "overview.png"))

        # 10,000 queues, made over one keep-alive connection.
        conn = http.client.HTTPConnection("127.0.0.1", int(http_port), timeout=30)
        for i in range(10000):
            conn.request("PUT", "/v1/queues/q-%05d" % i, body=b"")
            r = conn.getresponse()
            r.read()
            if r.status != 201:
                check(False, "creating queue %d answers 201 (%d)" % (i, r.status))
                break
        conn.close()
        driver.get(base + "/ui/")
        check(wait_for(lambda: len(rows(driver)) == 50, 15), "the first page shows 50 queues")
        # Measured by the page itself: from the start of the navigation to the
        # first drawing of the table (the load of the test's own polling aside).
        took = driver.execute_script("return window.sluiceFirstRender") / 1000.0
        check(took < 2.0, "with 10,000 queues the first page renders in under 2 s (%.2f s)" % took)
        count = driver.find_element(By.ID, "count").text
        check("of 10,001 queues" in count, "the page says how many there are (%s)" % count)
        driver.find_element(By.ID, "next").click()
        check(wait_for(lambda: [r["queue"] for r in rows(driver)][:1] == ["q-00049"], 10),
              "Next shows the following page")
        box = driver.find_element(By.ID, "filter")
        box.send_keys("q-0999")
        check(wait_for(lambda: [r["queue"] for r in rows(driver)] ==
                       ["q-0999%d" % i for i in range(10)], 10),
              "the filter narrows the list to the matching names")
        driver.save_screenshot(os.path.join(shots, "overview-filtered.png"))

        # A poison message: dead-lettered at its first nack, shown as text, redriven.
        api(base, "PUT", "/v1/queues/poison", json.dumps({"max_attempts": 1}).encode())
        api(base, "POST", "/v1/queues/poison/messages", XSS.encode())
        got = api(base, "POST", "/v1/queues/poison/receive", b'{"max_messages": 1}')["messages"]
        api(base, "POST", "/v1/queues/poison/nack", json.dumps(
            {"receipts": [got[0]["receipt"]], "reason": "cannot parse <b>this</b>"}).encode())
        check(wait_for(lambda: api(base, "GET", "/v1/queues/poison/dlq")["total"] == 1, 10),
              "the nacked message is in the dead-letter queue")
        driver.get(base + "/ui/#/queue/poison/dlq")
        check(wait_for(lambda: text_of(driver, "dlq").count("cannot parse <b>this</b>") == 1, 10),
              "the dead letter appears in the console with its reason, as text")
        driver.execute_script("document.querySelector('#dlq tbody tr').click()")
        check(wait_for(lambda: text_of(driver, "dlq-payload") == XSS, 10),
              "its payload is shown as text, byte for byte")
        check(driver.title == "Sluice" and
              driver.execute_script("return document.querySelectorAll('img').length") == 0,
              "the HTML in the payload stays inert (title %r)" % driver.title)
        driver.save_screenshot(os.path.join(shots, "dead-letters.png"))
        driver.execute_script("document.querySelector('#dlq tbody input[type=checkbox]').click()")
        driver.find_element(By.ID, "dlq-redrive-selected").click()
        check(wait_for(lambda: "Done: 1" in text_of(driver, "dlq-result"), 10),
              "redrive from the console answers")
        redriven = []
        check(wait_for(lambda: redriven.extend(api(
            base, "POST", "/v1/queues/poison/receive", b'{"max_messages": 1}')["messages"]) or
            redriven, 10) and redriven[0]["payload"] == XSS,
              "a consumer receives the redriven message")

        # The queue page shows a consumer with its held count against its credit,
        # and the keys with the most messages waiting.
        api(base, "PUT", "/v1/queues/keyed", json.dumps({"ordering": "key"}).encode())
        api(base, "POST", "/v1/queues/keyed/messages/batch", json.dumps({"messages": [
            {"payload": "m", "key": "tenant-%d" % (i % 3 if i < 9 else 0)} for i in range(12)]})
            .encode())
        api(base, "POST", "/v1/queues/keyed/receive", b'{"max_messages": 2, "lease_ms": 60000}')
        driver.get(base + "/ui/#/queue/keyed")
        check(wait_for(lambda: "2 / 2" in body_of(driver, "q-consumers") and
                       body_of(driver, "q-keys").startswith("tenant-0"), 10),
              "the queue page lists the consumer (2 held of credit 2) and the busiest key first "
              "(%s | %s)" % (body_of(driver, "q-consumers"), body_of(driver, "q-keys")))

        # A setting holding HTML is shown as text; the live form changes a setting.
        api(base, "PUT", "/v1/queues/htmlq", json.dumps({"key_header": XSS}).encode())
        driver.get(base + "/ui/#/queue/htmlq")
        check(wait_for(lambda: XSS in text_of(driver, "q-settings"), 10),
              "the queue page shows its settings, HTML characters as text")
        check(driver.title == "Sluice" and
              driver.execute_script("return document.querySelectorAll('img').length") == 0,
              "and the HTML stays inert")
        field = driver.find_element(By.CSS_SELECTOR, "#live-fields input[name=dispatch_rate]")
        field.clear()
        field.send_keys("25")
        driver.find_element(By.CSS_SELECTOR, "#live-form button").click()
        check(wait_for(lambda: api(base, "GET", "/v1/queues/htmlq")["settings"]["dispatch_rate"]
                       == 25, 10), "the live settings form changes the queue's dispatch_rate")
        driver.save_screenshot(os.path.join(shots, "queue.png"))

        # Queue names may hold ':', which a browser sends as %3A.
        api(base, "POST", "/v1/queues/tenant:orders/messages", b"x")
        driver.get(base + "/ui/#/queue/tenant:orders")
        check(wait_for(lambda: text_of(driver, "q-name") == "tenant:orders" and
                       visible(driver, "q-settings"), 10),
              "a queue named tenant:orders has its page")
        check(api_status(base, "GET", "/v1/queues/tenant%3Aorders") == 200,
              "and the API takes its name percent-encoded")
        violations = csp_violations(driver)
        check(violations == [], "no CSP violation on any page visited (%s)" % violations)
    finally:
        broker.terminate()
        broker.wait(timeout=10)

    # -----------------------------------------------------------------------------------------
    # With tokens: a prompt first; the token lives in sessionStorage only.
    work = tempfile.mkdtemp(prefix="sluice-console-auth-")
    made = subprocess.run([sluicectl, "new-token"], capture_output=True, text=True).stdout
    secret = made.split()[0]
    digest = re.search(r"sha256:[0-9a-f:]+", made).group(0)
    with open(os.path.join(work, "tokens.toml"), "w") as f:
        f.write('[tokens.watcher]\nhash = "%s"\nconsume = ["orders"]\n'
                '[queues.orders]\n' % digest)
    broker, proto, http_port = start_sluiced(build, work, "--config",
                                             os.path.join(work, "tokens.toml"))
    base = "http://127.0.0.1:" + http_port
    try:
        driver.get(base + "/ui/")
        prompt = driver.find_element(By.ID, "token-prompt")
        check(wait_for(lambda: prompt.is_displayed(), 10),
              "without a token the console asks for one")
        check(not driver.find_element(By.ID, "overview").is_displayed(),
              "and shows nothing else")
        driver.save_screenshot(os.path.join(shots, "token-prompt.png"))
        driver.find_element(By.ID, "token-input").send_keys("sluice_not_a_real_token")
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        check(wait_for(lambda: "not valid" in driver.find_element(By.ID, "token-error").text, 10),
              "a wrong token is refused and the prompt stays")
        driver.find_element(By.ID, "token-input").send_keys(secret)
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        check(wait_for(lambda: driver.find_element(By.ID, "overview").is_displayed(), 10),
              "with a valid token the overview shows")
        stored = driver.execute_script("return sessionStorage.getItem('sluice-token')")
        cookies = driver.get_cookies()
        check(stored == secret and cookies == [],
              "the token is kept in sessionStorage, and there are no cookies")
        driver.get(base + "/ui/#/queue/orders")
        check(wait_for(lambda: text_of(driver, "q-name") == "orders" and
                       visible(driver, "q-settings"), 10),
              "the consume-only token sees the queue page")
        check(not visible(driver, "live-form"), "but no admin form on it")
        status = api_status(base, "PATCH", "/v1/queues/orders", b'{"dispatch_rate": "5"}', secret)
        check(status == 403, "and the API refuses that token an admin call (%d)" % status)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
finally:
    driver.quit()

finish()
