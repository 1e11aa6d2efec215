#!/usr/bin/env python3
"""deploy/kubernetes/ holds together, and against the real sluiced:

- every manifest parses; the StatefulSet's selector matches its pods, the
  Service and the ServiceMonitor select them, and name ports that exist;
- the probes' paths answer 200 from a real sluiced, on the port the ConfigMap
  listens on; the grace period is above server.shutdown_grace; the data
  volume is mounted at storage.path; the --config files are the ConfigMap's
  and the Secret's keys where they are mounted;
- the ConfigMap's config plus the Secret's tokens (with a real hash from
  `sluicectl new-token`) pass `sluiced --check`;
- every metric the ScaledObject's and the Dockerfile's pieces rely on exists in
  /metrics of a sluiced started with that config.

usage: deploy_test.py BUILD_DIR
"""
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib

import yaml

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from checks import check, finish  # noqa: E402

repo = os.path.dirname(here)
build = os.path.abspath(sys.argv[1])
kube = os.path.join(repo, "deploy", "kubernetes")
docs, secrets = {}, {}
for name in sorted(os.listdir(kube)):
    with open(os.path.join(kube, name)) as f:
        for doc in yaml.safe_load_all(f):
            if doc["kind"] == "Secret":
                secrets[doc["metadata"]["name"]] = doc
            else:
                docs[doc["kind"]] = doc
check(set(docs) == {"ConfigMap", "StatefulSet", "Service", "ServiceMonitor", "ScaledObject"}
      and len(secrets) == 2, "the manifests parse: " + ", ".join(sorted(docs)) + ", 2 Secrets")
sts, svc, mon, keda = docs["StatefulSet"], docs["Service"], docs["ServiceMonitor"], docs["ScaledObject"]
cm = docs["ConfigMap"]
pod = sts["spec"]["template"]
pod_labels = pod["metadata"]["labels"]
contains = lambda labels, selector: all(labels.get(k) == v for k, v in selector.items())
check(sts["spec"]["selector"]["matchLabels"] == pod_labels, "the StatefulSet selects its pods")
check(contains(pod_labels, svc["spec"]["selector"]), "the Service selects the pods")
check(sts["spec"]["serviceName"] == svc["metadata"]["name"] and svc["spec"].get("clusterIP") == "None",
      "the Service is the StatefulSet's headless service (sluice-N.sluice)")
check(contains(svc["metadata"]["labels"], mon["spec"]["selector"]["matchLabels"]),
      "the ServiceMonitor selects the Service")
container = pod["spec"]["containers"][0]
container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
service_ports = {p["name"]: p for p in svc["spec"]["ports"]}
for name, port in service_ports.items():
    check(port["targetPort"] in container_ports, "Service port %s targets a container port" % name)
for endpoint in mon["spec"]["endpoints"]:
    check(endpoint["port"] in service_ports, "the ServiceMonitor scrapes a Service port")
    check(endpoint["path"] == "/metrics", "the ServiceMonitor scrapes /metrics")
    ref = endpoint["bearerTokenSecret"]
    check(ref["key"] in secrets.get(ref["name"], {}).get("stringData", {}),
          "the ServiceMonitor's token is a key of a Secret here")

config = tomllib.loads(cm["data"]["sluiced.toml"])
listen_port = lambda value: int(value.rsplit(":", 1)[1])
check(container_ports["protocol"] == listen_port(config["server"]["listen"]),
      "the protocol port is server.listen's")
check(container_ports["http"] == listen_port(config["http"]["listen"]), "the http port is http.listen's")
grace = int(re.fullmatch(r"(\d+)s", config["server"]["shutdown_grace"]).group(1))
check(pod["spec"]["terminationGracePeriodSeconds"] > grace,
      "terminationGracePeriodSeconds is above shutdown_grace")
mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
check("data" in claims and mounts.get("data") == config["storage"]["path"],
      "the PersistentVolumeClaim is mounted at storage.path")
volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
check(volumes["config"]["configMap"]["name"] == cm["metadata"]["name"], "the config volume is the ConfigMap")
secret = secrets.get(volumes["tokens"]["secret"]["secretName"], {})
check("tokens.toml" in secret.get("stringData", {}), "the tokens volume is a Secret with tokens.toml")
args = container["args"]
configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
check(configs == [mounts["config"] + "/sluiced.toml", mounts["tokens"] + "/tokens.toml"],
      "--config names the ConfigMap's and the Secret's files where they are mounted")
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    check(container[probe]["httpGet"]["path"] == path and container[probe]["httpGet"]["port"] == "http",
          "%s is GET %s on the http port" % (probe, path))

# The config with the Secret's tokens: a fresh token for each table, its hash in place of
# the placeholder (as the Secret's comment tells the user to do).
tmp = tempfile.mkdtemp(prefix="sluice-deploy-")
raw = {}


def real_table(match):
    made = subprocess.run([os.path.join(build, "client", "sluicectl"), "new-token"],
                          capture_output=True, text=True, check=True).stdout
    raw[match.group(1)] = made.splitlines()[0]
    return "[tokens.%s]\nhash = \"%s\"" % (match.group(1), re.search(r'hash = "([^"]+)"', made).group(1))


tokens = re.sub(r'\[tokens\.(\w+)\]\nhash = "[^"]+"', real_table, secret["stringData"]["tokens.toml"])
check(set(raw) == {"app", "prometheus"}, "the Secret declares the app and prometheus tokens")
open(os.path.join(tmp, "sluiced.toml"), "w").write(cm["data"]["sluiced.toml"])
open(os.path.join(tmp, "tokens.toml"), "w").write(tokens)
sluiced = os.path.join(build, "broker", "sluiced")
files = ["--config", os.path.join(tmp, "sluiced.toml"), "--config", os.path.join(tmp, "tokens.toml")]
checked = subprocess.run([sluiced, "--check", *files], capture_output=True, text=True)
check(checked.returncode == 0, "ConfigMap + Secret pass sluiced --check " + checked.stderr.strip())

# Started with it (loopback ports, a scratch data directory): probes and metrics.
port_file = os.path.join(tmp, "port")
broker = subprocess.Popen([sluiced, *files, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                           "--port-file", port_file, "--set", "storage.path=" + tmp + "/data"],
                          stderr=open(os.path.join(tmp, "log"), "w"), cwd=tmp)
try:
    deadline = time.time() + 20
    while time.time() < deadline and not (os.path.exists(port_file) and
                                          len(open(port_file).read().split()) == 2):
        time.sleep(0.05)
    http_port = int(open(port_file).read().split()[1])

    def get(path, token=None):
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        c.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
        r = c.getresponse()
        return r.status, r.read().decode()

    for probe in ("readinessProbe", "livenessProbe"):  # the kubelet sends no token
        path = container[probe]["httpGet"]["path"]
        check(get(path)[0] == 200, "%s answers 200 from sluiced without a token" % path)
    check(get("/metrics")[0] == 401, "/metrics wants a token")
    status, metrics = get("/metrics", raw["prometheus"])
    check(status == 200, "/metrics answers the prometheus token")
    for trigger in keda["spec"]["triggers"]:
        query = trigger["metadata"]["query"]
        for name in re.findall(r"sluice_[a-z_]+", query):
            check("\n" + name in metrics, "the ScaledObject's %s exists in /metrics" % name)
        queue = re.search(r'queue="([^"]+)"', query).group(1)
        check(queue in config["queues"], "the ScaledObject's queue %s is declared" % queue)
finally:
    broker.terminate()
    broker.wait(20)

finish()
