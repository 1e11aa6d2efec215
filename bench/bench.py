#!/usr/bin/env python3
"""Sluice's benchmark scenarios, each one command that prints a table and
writes JSON (and, for the report, gnuplot PNGs) into bench/results/.

  bench/bench.py compare       Sluice beside Redis, beanstalkd, RabbitMQ and
                               NATS JetStream: throughput, latency at a fixed
                               rate, durable throughput; plots for the report
  bench/bench.py burst-compare a burst with no consumer into each broker: publish
                               rate, memory per held message, drain rate
  bench/bench.py throughput    Sluice end to end, memory and durable queues
  bench/bench.py latency       publish->deliver at fixed offered rates
  bench/bench.py burst         a burst into a bounded queue: depth and RSS over time
  bench/bench.py rate-limit    dispatch-rate accuracy from 1/s to 100,000/s
  bench/bench.py ordering      ordering keys: 1, 100 and 10,000 keys
  bench/bench.py queues        10,000 queues
  bench/bench.py connections   1,000 consumer connections
  bench/bench.py trigger       triggers pushing into a no-op C++ function (batch 1
                               and 100) beside HTTP pull consumers; p50/p99 at 1,000/s
  bench/bench.py memory        broker memory per waiting message, queue, ordering key
                               and connection
  bench/bench.py schema        publish throughput with a 10-field JSON Schema checked on
                               every message, against the same messages unchecked
  bench/bench.py host          how often each CPU stops running a pinned thread: the
                               floor under any tail latency measured on this machine

Every scenario starts its own brokers on loopback (fresh directories, free
ports) and stops them. `scripts/bench.sh` installs what is missing, builds a
Release tree and runs this; see bench/README.md for the figures.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("SLUICE_BUILD_DIR", os.path.join(HERE, "..", "build"))
SLUICED = os.path.join(BUILD, "broker", "sluiced")
BENCH = os.path.join(BUILD, "bench", "sluice-bench")
COMPARE = os.path.join(BUILD, "bench", "sluice-compare")
TRIGGER_BENCH = os.path.join(BUILD, "bench", "sluice-trigger-bench")
SLUICECTL = os.path.join(BUILD, "client", "sluicectl")
HOST_GAPS = os.path.join(BUILD, "bench", "sluice-host-gaps")
PEERS = ["sluice", "redis", "beanstalkd", "rabbitmq", "nats"]
# Whose durable mode syncs each message before confirming it: their durable
# latency at the offered rate is a like-for-like column (NATS syncs on a timer).
DURABLE_LATENCY_PEERS = {"sluice", "redis"}
TITLES = {"sluice": "Sluice", "sluice-single": "Sluice, one message per frame",
          "redis": "Redis 7.0 (LMOVE + LREM)", "beanstalkd": "beanstalkd 1.12", "rabbitmq": "RabbitMQ 3.10 (classic)",
          "nats": "NATS JetStream 2.9"}


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds, proc):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def listener_pid(port):
    """The process listening on `port` (RabbitMQ's is beam.smp, not the script started)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    for part in out.split("pid=")[1:]:
        return int(part.split(",")[0])
    return None


class Server:
    """One broker process on loopback with a directory of its own."""

    def __init__(self, peer, durable, extra=()):
        self.peer, self.durable = peer, durable
        self.dir = tempfile.mkdtemp(prefix=f"sluice-bench-{peer}-")
        self.port = free_port()
        self.pid = None
        env = dict(os.environ)
        log = open(os.path.join(self.dir, "server.log"), "w")
        if peer == "sluice":
            cmd = [SLUICED, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                   "--port-file", os.path.join(self.dir, "port"), "--log-level", "warn",
                   "--set", f"storage.path={self.dir}/data", "--set", "storage.sync=fsync"]
            if durable:  # sluice-compare asks per queue; sluice-bench's queues take the default
                cmd += ["--set", "queue_defaults.durability=durable"]
            cmd += list(extra)
        elif peer == "redis":
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", self.dir, "--save", ""]
            cmd += (["--appendonly", "yes", "--appendfsync", "always"] if durable
                    else ["--appendonly", "no"])
        elif peer == "beanstalkd":
            cmd = ["beanstalkd", "-l", "127.0.0.1", "-p", str(self.port)]
            if durable:
                cmd += ["-b", self.dir, "-f", "0"]  # fsync every binlog write
        elif peer == "rabbitmq":
            with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
                f.write("[].\n")
            env.update(HOME=self.dir, RABBITMQ_NODE_PORT=str(self.port),
                       RABBITMQ_NODENAME=f"bench{self.port}@localhost",
                       RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
                       RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
                       RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
                       RABBITMQ_DIST_PORT=str(free_port()))
            cmd = ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
        elif peer == "nats":
            cmd = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js",
                   "-sd", os.path.join(self.dir, "js")]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if peer == "sluice":
            path = os.path.join(self.dir, "port")
            for _ in range(200):
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    break
                time.sleep(0.05)
            with open(path) as f:
                self.port = int(f.readline())
        if not wait_port(self.port, 60, self.proc):
            self.stop()
            raise RuntimeError(f"{peer} did not start; see {self.dir}/server.log")
        self.pid = self.proc.pid if peer != "rabbitmq" else listener_pid(self.port)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.pid and self.pid != self.proc.pid:  # beam.smp, if it outlived its script
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def installed(peer):
    exe = {"sluice": SLUICED, "redis": "redis-server", "beanstalkd": "beanstalkd",
           "rabbitmq": "/usr/lib/rabbitmq/bin/rabbitmq-server", "nats": "nats-server"}[peer]
    return shutil.which(exe) is not None or os.access(exe, os.X_OK)


def run_json(cmd):
    """Runs a bench binary with --json; its last stdout line, parsed."""
    p = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    if p.stderr.strip():
        say(p.stderr.strip())
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed no result (exit {p.returncode})")
    result = json.loads(lines[-1])
    result["exit_status"] = p.returncode
    return result


def median_of(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(n, digits=0):
    if n is None:
        return "-"
    return f"{n:,.{digits}f}"


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                    for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem), "commit": commit,
            "date": time.strftime("%Y-%m-%d")}


def write_json(out, name, data):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"\nwrote {path}")
    return path


def gnuplot(script, out):
    if shutil.which("gnuplot") is None:
        say("gnuplot is not installed: no plots (scripts/install-deps.sh --bench)")
        return
    subprocess.run(["gnuplot"], input=script, text=True, cwd=out, check=True)


# ---- compare ---------------------------------------------------------------

def host_gaps(seconds):
    """sluice-host-gaps' JSON: per CPU, the gaps over 200 us, 500 us and 1 ms
    in `seconds` and the worst, in which that CPU ran nothing of ours."""
    return run_json([HOST_GAPS, "--seconds", str(seconds)])


def host_gaps_line(gaps, when=""):
    per_s = sum(c["over_500us"] for c in gaps["cpus"]) / gaps["seconds"]
    worst = max(c["worst_us"] for c in gaps["cpus"])
    return (f"this machine: {per_s:.1f} CPU gaps over 500 us per second, the worst "
            f"{worst:,} us (sluice-host-gaps, {gaps['seconds']:g} s{when})")


def scenario_host(args):
    gaps = host_gaps(args.duration)
    print_table(f"CPU gaps in {args.duration:g} s: a clock-reading thread pinned to each CPU",
                ["cpu", "> 200 us", "> 500 us", "> 1 ms", "worst us", "lost ms"],
                [[c["cpu"], c["over_200us"], c["over_500us"], c["over_1ms"], fmt(c["worst_us"]),
                  c["lost_ms"]] for c in gaps["cpus"]])
    print("\n" + host_gaps_line(gaps))
    write_json(args.out, "host", {"machine": machine(), "gaps": gaps})
    return 0


def compare(args):
    out = args.out
    os.makedirs(out, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    shape = ["--size", str(args.size), "--producers", "1", "--consumers", "4",
             "--prefetch", "64", "--window", "16384"]
    results = {"machine": machine(), "shape": {
        "size": args.size, "producers": 1, "consumers": 4, "prefetch": 64, "window": 16384,
        "messages": args.messages, "runs": args.runs, "latency_rate": args.rate,
        "latency_duration_s": args.duration, "durable_messages": args.durable_messages},
        "peers": {}}
    # A tail figure here is no better than the machine under it.
    results["host_gaps"] = host_gaps(3)
    say(host_gaps_line(results["host_gaps"], ", before the runs"))
    started = time.time()
    for peer in peers:
        entry = results["peers"].setdefault(peer, {"throughput": [], "latency": [],
                                                   "durable": [], "durable_latency": []})
        if not installed(peer):
            entry["skipped"] = "not installed (scripts/install-deps.sh --bench)"
            say(f"{peer}: skipped, {entry['skipped']}")
            continue
        for durable in (False, True):
            if durable and args.durable_messages == 0:
                continue
            say(f"{peer}: starting ({'durable' if durable else 'memory'})")
            server = Server(peer, durable)
            try:
                base = [COMPARE, "--peer", peer, "--broker", f"127.0.0.1:{server.port}"] + shape
                if server.pid:
                    base += ["--broker-pid", str(server.pid)]
                if durable:
                    for i in range(args.durable_runs):
                        r = run_json(base + ["--durable", "--messages",
                                             str(args.durable_messages),
                                             "--queue", f"durable{i}"])
                        entry["durable"].append(r)
                        say(f"  durable throughput: {fmt(r['msgs_per_sec'])} msg/s")
                    for i in range(args.latency_runs if peer in DURABLE_LATENCY_PEERS else 0):
                        r = run_json(base + ["--durable", "--mode", "latency", "--rate",
                                             str(args.rate), "--duration", str(args.duration),
                                             "--queue", f"durlat{i}"])
                        entry["durable_latency"].append(r)
                        say(f"  durable latency at {args.rate}/s: p50 {r['p50_us']} "
                            f"p99 {r['p99_us']} p99.9 {r['p999_us']} us")
                    continue
                for i in range(args.runs):
                    r = run_json(base + ["--messages", str(args.messages),
                                         "--queue", f"tput{i}"])
                    entry["throughput"].append(r)
                    say(f"  throughput: {fmt(r['msgs_per_sec'])} msg/s, client "
                        f"{r['client_cpu_pct']:.0f}% broker {r['broker_cpu_pct']:.0f}% CPU")
                for i in range(args.latency_runs):
                    cdf = os.path.join(out, f"cdf-{peer}-{i}.dat")
                    trace = (["--trace", os.path.join(out, f"trace-{peer}-{i}.dat")]
                             if args.trace else [])
                    r = run_json(base + ["--mode", "latency", "--rate", str(args.rate),
                                         "--duration", str(args.duration), "--cdf", cdf,
                                         "--queue", f"lat{i}"] + trace)
                    r["cdf"] = os.path.basename(cdf)
                    entry["latency"].append(r)
                    say(f"  latency at {args.rate}/s: p50 {r['p50_us']} p99 {r['p99_us']} "
                        f"p99.9 {r['p999_us']} us; {r['stalls']} stalls over 500 us "
                        f"(at most {r['largest_stall_messages']} messages each)")
            finally:
                server.stop()
    results["elapsed_s"] = round(time.time() - started, 1)

    # The latency run whose p99 is the median stands for the peer in the CDF plot.
    for peer, e in results["peers"].items():
        e["median"] = {
            "msgs_per_sec": median_of(e["throughput"], "msgs_per_sec"),
            "client_cpu_pct": median_of(e["throughput"], "client_cpu_pct"),
            "broker_cpu_pct": median_of(e["throughput"], "broker_cpu_pct"),
            "p50_us": median_of(e["latency"], "p50_us"),
            "p99_us": median_of(e["latency"], "p99_us"),
            "p999_us": median_of(e["latency"], "p999_us"),
            "durable_msgs_per_sec": median_of(e["durable"], "msgs_per_sec"),
            "durable_p50_us": median_of(e["durable_latency"], "p50_us"),
            "durable_p99_us": median_of(e["durable_latency"], "p99_us"),
        }
        if e["latency"]:
            by_p99 = sorted(e["latency"], key=lambda r: r["p99_us"])
            e["median"]["cdf"] = by_p99[len(by_p99) // 2]["cdf"]
        e["all_ok"] = all(r.get("ok") for r in e["throughput"] + e["latency"] + e["durable"] +
                          e["durable_latency"])

    s = results["peers"].get("sluice", {}).get("median", {})
    rows = []
    for peer, e in results["peers"].items():
        m = e.get("median", {})
        if e.get("skipped"):
            rows.append([TITLES[peer], e["skipped"]] + [""] * 9)
            continue
        ratio = lambda a, b: f"{a / b:.1f}x" if a and b else "-"
        rows.append([
            TITLES[peer], fmt(m["msgs_per_sec"]),
            "-" if peer == "sluice" else ratio(s.get("msgs_per_sec"), m["msgs_per_sec"]),
            fmt(m["p50_us"]), fmt(m["p99_us"]), fmt(m["p999_us"]),
            "-" if peer == "sluice" else ratio(m["p99_us"], s.get("p99_us")),
            fmt(m["durable_msgs_per_sec"]),
            "-" if peer == "sluice" else ratio(s.get("durable_msgs_per_sec"),
                                               m["durable_msgs_per_sec"]),
            fmt(m["durable_p99_us"]),
            f"{fmt(m['client_cpu_pct'])} / {fmt(m['broker_cpu_pct'])}",
            "yes" if e["all_ok"] else "NO"])
    print_table(
        f"{args.size}-byte messages, at-least-once: confirmed publishes, manual acks; "
        f"1 producer, 4 consumers x 64 prefetch; medians of {args.runs} runs "
        f"({args.messages:,} messages), latency at {args.rate:,}/s for {args.duration} s "
        f"(median of {args.latency_runs}); ratios are Sluice's advantage",
        ["broker", "msg/s", "Sluice", "p50 us", "p99 us", "p99.9 us", "peer/Sluice p99",
         "durable msg/s", "Sluice", "durable p99 us", "CPU % client/broker", "none lost"],
        rows)
    print(f"\nwhole comparison: {results['elapsed_s']:.0f} s")
    print(host_gaps_line(results["host_gaps"], ", before the runs"))
    write_json(out, "compare", results)
    plot_compare(results, out)
    return 0 if all(e.get("all_ok", True) for e in results["peers"].values()) else 1


def burst_compare(args):
    """A burst into every broker with no consumer: publish rate until all are
    confirmed, the broker's resident memory holding them, then the drain."""
    out = args.out
    os.makedirs(out, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    messages = args.burst_messages
    shape = ["--mode", "burst", "--messages", str(messages), "--size", str(args.size),
             "--producers", "1", "--consumers", "4", "--prefetch", "64",
             "--window", str(args.burst_window)]
    results = {"machine": machine(), "shape": {
        "size": args.size, "messages": messages, "window": args.burst_window,
        "consumers": 4, "prefetch": 64, "runs": args.runs}, "peers": {}}
    started = time.time()
    # Sluice twice: through its client's batching, and with one message per
    # PUBLISH frame (as each peer's publish carries one).
    rows_of = [(p, p, []) for p in peers]
    if "sluice" in peers:
        rows_of.insert(peers.index("sluice") + 1, ("sluice-single", "sluice", ["--single-frames"]))
    for name, peer, extra in rows_of:
        entry = results["peers"].setdefault(name, {"runs": []})
        if not installed(peer):
            entry["skipped"] = "not installed (scripts/install-deps.sh --bench)"
            say(f"{peer}: skipped, {entry['skipped']}")
            continue
        for i in range(args.runs):
            server = Server(peer, False)  # fresh each run: its peak is this burst's
            try:
                r = run_json([COMPARE, "--peer", peer, "--broker", f"127.0.0.1:{server.port}",
                              "--broker-pid", str(server.pid), "--queue", f"burst{i}"] + shape +
                             extra)
            finally:
                server.stop()
            entry["runs"].append(r)
            say(f"{name}: burst {fmt(r['publish_msgs_per_sec'])} msg/s, "
                f"{r['bytes_per_msg']:.1f} B/msg held, drain {fmt(r['drain_msgs_per_sec'])} msg/s")
    results["elapsed_s"] = round(time.time() - started, 1)
    rows = []
    for peer, e in results["peers"].items():
        if e.get("skipped"):
            rows.append([TITLES[peer], e["skipped"]] + [""] * 6)
            continue
        runs = e["runs"]
        m = e["median"] = {k: median_of(runs, k) for k in (
            "publish_msgs_per_sec", "idle_rss_kib", "peak_rss_kib", "bytes_per_msg",
            "overhead_per_msg", "drain_msgs_per_sec", "broker_cpu_pct")}
        e["all_ok"] = all(r.get("ok") for r in runs)
        rows.append([TITLES[peer], fmt(m["publish_msgs_per_sec"]),
                     fmt(m["idle_rss_kib"] / 1024, 1), fmt(m["peak_rss_kib"] / 1024, 1),
                     fmt(m["bytes_per_msg"], 1), fmt(m["overhead_per_msg"], 1),
                     fmt(m["drain_msgs_per_sec"]), "yes" if e["all_ok"] else "NO"])
    print_table(
        f"Burst of {messages:,} x {args.size} B, one connection, {args.burst_window:,} "
        f"unconfirmed, no consumer until all are confirmed; then 4 consumers x 64 drain; "
        f"medians of {args.runs} runs, a fresh broker each",
        ["broker", "publish msg/s", "idle MiB", "peak MiB", "B/msg held", "above payload",
         "drain msg/s", "none lost"], rows)
    print(f"\nwhole comparison: {results['elapsed_s']:.0f} s")
    write_json(out, "burst-compare", results)
    return 0 if all(e.get("all_ok", True) for e in results["peers"].values()) else 1


def plot_compare(results, out):
    peers = [p for p, e in results["peers"].items() if not e.get("skipped")]
    with open(os.path.join(out, "throughput.dat"), "w") as f:
        for p in peers:
            m = results["peers"][p]["median"]
            f.write(f'"{TITLES[p].split(" (")[0]}" {m["msgs_per_sec"] or 0} '
                    f'{m["durable_msgs_per_sec"] or 0}\n')
    sh = results["shape"]
    gnuplot(f"""
set terminal pngcairo size 1000,500 font ",11"
set output "throughput.png"
set title "End-to-end throughput, {sh['size']}-byte messages, at-least-once (higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [1000:*]
set ylabel "messages per second (log scale)"
set grid ytics
set key top right
plot "throughput.dat" using 2:xtic(1) title "memory", "" using 3 title "durable (each broker's persistent mode)"
""", out)
    lines = []
    for p in peers:
        cdf = results["peers"][p]["median"].get("cdf")
        if cdf:
            lines.append(f'"{cdf}" using 1:2 with lines lw 2 title "{TITLES[p].split(" (")[0]}"')
    if lines:
        gnuplot(f"""
set terminal pngcairo size 900,500 font ",11"
set output "latency-cdf.png"
set title "Publish to deliver latency at {sh['latency_rate']:,} msg/s offered, {sh['size']}-byte messages"
set logscale x
set xlabel "microseconds (log scale)"
set ylabel "fraction of messages delivered within"
set yrange [0:1]
set grid
set key bottom right
plot {", ".join(lines)}
""", out)


# ---- Sluice-only scenarios -----------------------------------------------

def with_sluice(fn, durable=False, extra=()):
    server = Server("sluice", durable, extra)
    try:
        return fn(server)
    finally:
        server.stop()


def bench_cmd(server, *args):
    return [BENCH, "--broker", f"127.0.0.1:{server.port}", "--broker-pid", str(server.pid),
            *args]


def scenario_throughput(args):
    rows, runs = [], {}
    for name, durable in (("memory", False), ("durable (fsync)", True)):
        got = []
        for _ in range(args.runs):
            got.append(with_sluice(lambda s: run_json(bench_cmd(
                s, "--messages", str(args.messages), "--size", str(args.size),
                "--producers", "4", "--consumers", "4", "--in-flight", "64")), durable))
        runs[name] = got
        rows.append([name, fmt(median_of(got, "msgs_per_sec")),
                     fmt(median_of(got, "publish_msgs_per_sec")),
                     fmt(median_of(got, "p99_us")), sum(r["lost"] for r in got)])
    print_table(f"End to end, {args.size}-byte messages, 4 producers, 4 consumers x 64; "
                f"medians of {args.runs} runs of {args.messages:,}",
                ["queue", "msg/s", "publish msg/s", "p99 us (queueing)", "lost"], rows)
    write_json(args.out, "throughput", {"machine": machine(), "runs": runs})
    return 0


def scenario_latency(args):
    rows, runs = [], {}
    for rate in (1000, 10000, 50000, 100000):
        got = [with_sluice(lambda s: run_json(bench_cmd(
            s, "--mode", "latency", "--rate", str(rate), "--duration", str(args.duration),
            "--size", str(args.size)))) for _ in range(args.runs)]
        runs[rate] = got
        rows.append([fmt(rate), fmt(median_of(got, "p50_us")), fmt(median_of(got, "p99_us")),
                     fmt(median_of(got, "p999_us")), sum(r["lost"] for r in got)])
    print_table(f"Publish->deliver at fixed offered rates, {args.size}-byte messages, "
                f"medians of {args.runs} runs of {args.duration} s",
                ["offered msg/s", "p50 us", "p99 us", "p99.9 us", "lost"], rows)
    write_json(args.out, "latency", {"machine": machine(), "runs": runs})
    return 0


def scenario_burst(args):
    series = os.path.join(args.out, "burst-series.dat")
    os.makedirs(args.out, exist_ok=True)
    r = with_sluice(lambda s: run_json(bench_cmd(
        s, "--mode", "burst", "--burst", "200000", "--capacity", "20000",
        "--dispatch-rate", "50000", "--series", series)))
    print_table("Burst of 200,000 into a queue of 20,000 (overflow block), drained at 50,000/s",
                ["peak depth", "peak RSS MiB", "producer throttled s", "drain msg/s", "lost"],
                [[fmt(r["peak_depth"]), fmt(r["peak_rss_mib"], 1),
                  fmt(r["producer_throttled_s"], 2), fmt(r["drain_msgs_per_sec"]), r["lost"]]])
    write_json(args.out, "burst", {"machine": machine(), "run": r})
    gnuplot("""
set terminal pngcairo size 900,500 font ",11"
set output "burst-depth.png"
set title "Burst of 200,000 into a 20,000-message queue (overflow block), drained at 50,000/s"
set xlabel "seconds since the burst began"
set ylabel "messages in the queue"
set y2label "broker RSS (MiB)"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set key top right
plot "burst-series.dat" using 1:2 with lines lw 2 title "depth (ready + in flight)", \\
     "" using 1:4 with lines lw 2 title "delivered so far / 10" , \\
     "" using 1:3 axes x1y2 with lines lw 2 dt 2 title "broker RSS (right axis)"
""", args.out)
    return 0 if r["lost"] == 0 else 1


def scenario_schema(args):
    """The same 10-field JSON orders into a queue with a schema (each message names
    v1 and is validated) and one without: the difference is the validation's cost."""
    schema = os.path.join(HERE, "schemas", "order.json")
    conf_dir = tempfile.mkdtemp(prefix="sluice-bench-schema-")
    conf = os.path.join(conf_dir, "sluiced.toml")
    with open(conf, "w") as f:
        f.write('[queues.checked]\nrequire_schema = "on"\n[queues.checked.schemas]\n'
                'v1 = "%s"\n[queues.unchecked]\n' % schema)
    rows, runs = [], {}
    for name, queue, version in (("no schema", "unchecked", None),
                                 ("10-field schema", "checked", "v1")):
        got = []
        for _ in range(args.runs):
            extra = ["--json-payload", "--queue", queue]
            if version:
                extra += ["--schema-version", version]
            got.append(with_sluice(lambda s: run_json(bench_cmd(
                s, "--messages", str(args.messages), "--producers", "4", "--consumers", "4",
                "--in-flight", "64", *extra)), extra=("--config", conf)))
        runs[name] = got
        rows.append([name, fmt(median_of(got, "publish_msgs_per_sec")),
                     fmt(median_of(got, "msgs_per_sec")), sum(r["lost"] for r in got)])
    base, checked = (median_of(runs[n], "publish_msgs_per_sec") for n in runs)
    cost_us = (1 / checked - 1 / base) * 1e6 if base and checked else float("nan")
    print_table(f"Publish with a JSON Schema: 10-field orders ({len(ORDER_EXAMPLE)} bytes), "
                f"4 producers, 4 consumers x 64; medians of {args.runs} runs of "
                f"{args.messages:,}",
                ["queue", "publish msg/s", "end to end msg/s", "lost"], rows)
    say(f"validation cost: {cost_us:.2f} us per message on the engine thread "
        f"(1/checked - 1/unchecked publish rate)")
    write_json(args.out, "schema", {"machine": machine(), "runs": runs,
                                    "cost_us_per_message": cost_us})
    return 0 if all(r["lost"] == 0 for got in runs.values() for r in got) else 1


# The payload sluice-bench --json-payload sends (its length, for the table).
ORDER_EXAMPLE = ('{"seq":"0000000000000000","sent":"0000000000000000","order":123456,'
                 '"customer":"c-42","total":19.99,"currency":"EUR","paid":true,"items":3,'
                 '"country":"DE","note":"bench"}')


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def settled_rss_kib(pid):
    """VmRSS once it stops moving (the broker has taken in what was sent)."""
    last = rss_kib(pid)
    for _ in range(50):
        time.sleep(0.1)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def scenario_memory(args):
    """What the broker's resident memory grows by, per thing it holds: a
    waiting message, a message out to a consumer, a queue, an ordering key,
    a connection. Each is measured in one fresh broker as (RSS after - RSS
    before) / count, so it includes allocator slack."""
    import http.client
    n = args.memory_count
    size = args.size
    out = {}

    def call(conn, method, path, body=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return data

    def publish(conn, queue, count, key=None):
        payload = "x" * size
        for start in range(0, count, 1000):
            batch = [{"payload": payload} if key is None else
                     {"payload": payload, "key": key(i)}
                     for i in range(start, min(count, start + 1000))]
            call(conn, "POST", f"/v1/queues/{queue}/messages/batch", {"messages": batch})

    def measure(name, count, unit, action, server):
        before = settled_rss_kib(server.pid)
        action()
        after = settled_rss_kib(server.pid)
        per = (after - before) * 1024 / count
        out[name] = {"count": count, "before_kib": before, "after_kib": after,
                     "bytes_each": round(per, 1), "unit": unit}
        say(f"{name}: {per:,.1f} bytes each ({count:,} {unit})")

    def run(server):
        conn = http.client.HTTPConnection("127.0.0.1", http_port_of(server), timeout=60)
        out["idle_kib"] = settled_rss_kib(server.pid)
        # Published over the protocol (sluice-compare's burst), as producers at speed do.
        r = run_json([COMPARE, "--peer", "sluice", "--broker", f"127.0.0.1:{server.port}",
                      "--broker-pid", str(server.pid), "--mode", "burst", "--messages", str(n),
                      "--size", str(size), "--window", "1000", "--queue", "held"])
        out["waiting message"] = {"count": n, "bytes_each": r["bytes_per_msg"],
                                  "unit": f"x {size} B, unkeyed queue, no consumer (protocol)"}
        # HTTP batches leave some heap behind them (parsed JSON between the
        # spool's chunks): these rows are a little high, the same in each.
        measure("waiting message (HTTP)", n, f"x {size} B, unkeyed queue, published over HTTP",
                lambda: publish(conn, "held_http", n), server)
        call(conn, "PUT", "/v1/queues/k1", {"ordering": "key"})
        measure("waiting message, keyed queue", n, f"x {size} B, ordering = key, one key",
                lambda: publish(conn, "k1", n, key=lambda i: "k"), server)
        call(conn, "PUT", "/v1/queues/kn", {"ordering": "key"})
        measure("waiting message and its own key", n, f"x {size} B, ordering = key, a key each",
                lambda: publish(conn, "kn", n, key=lambda i: f"key-{i:08d}"), server)
        out["ordering key"] = {
            "bytes_each": round(out["waiting message and its own key"]["bytes_each"] -
                                out["waiting message, keyed queue"]["bytes_each"], 1),
            "unit": "the difference of the two rows above"}
        queues = 10000
        measure("queue", queues, "empty queues made with PUT",
                lambda: [call(conn, "PUT", f"/v1/queues/q{i}", {}) for i in range(queues)],
                server)
        conns = []

        def connect():
            for _ in range(500):
                c = socket.create_connection(("127.0.0.1", server.port))
                name = b"memory-bench"
                body = b"\x01" + (1).to_bytes(2, "little") * 2 + len(name).to_bytes(2, "little") \
                    + name + (0).to_bytes(2, "little")
                c.sendall(len(body).to_bytes(4, "little") + body)
                conns.append(c)
            for c in conns:
                c.recv(64)  # HELLO_OK

        measure("idle connection", 500, "protocol connections after HELLO", connect, server)
        for c in conns:
            c.close()
        conn.close()
        return out

    r = with_sluice(run, extra=["--set", "server.max_connections_per_source=1000",
                                "--set", "limits.max_queues=20000"])
    rows = [[name, fmt(v["bytes_each"], 1), v["unit"]] for name, v in r.items()
            if isinstance(v, dict)]
    print_table(f"Broker memory per thing held (RSS growth / count; idle broker "
                f"{r['idle_kib'] / 1024:.1f} MiB)", ["what", "bytes each", "measured as"], rows)
    write_json(args.out, "memory", {"machine": machine(), "run": r})
    return 0


def scenario_rate_limit(args):
    r = with_sluice(lambda s: run_json(bench_cmd(s, "--mode", "rate-limit")))
    rows = [[fmt(x["configured"]), fmt(x["achieved"], 2), f"{x['error_pct']:+.2f}%",
             fmt(x["delivered"]), f"{x['window_s']:.1f}"] for x in r["rates"]]
    print_table("Dispatch-rate accuracy: achieved over the configured rate, steady state",
                ["configured /s", "achieved /s", "error", "delivered", "window s"], rows)
    write_json(args.out, "rate-limit", {"machine": machine(), "run": r})
    return r["exit_status"]


def scenario_ordering(args):
    rows, runs = [], {}
    for keys, messages in ((0, args.messages), (1, 200000), (100, args.messages),
                           (10000, args.messages)):
        got = [with_sluice(lambda s: run_json(bench_cmd(
            s, "--messages", str(messages), "--size", str(args.size), "--consumers", "4",
            "--in-flight", "64", "--keys", str(keys)))) for _ in range(args.runs)]
        runs[keys] = got
        rows.append([keys or "none", fmt(messages), fmt(median_of(got, "msgs_per_sec")),
                     max(r["peak_held"] for r in got), sum(r["lost"] for r in got)])
    print_table(f"Ordering keys (one message of a key out at a time), 4 consumers x 64; "
                f"medians of {args.runs}", ["keys", "messages", "msg/s", "peak held", "lost"],
                rows)
    write_json(args.out, "ordering", {"machine": machine(), "runs": runs})
    return 0


def scenario_queues(args):
    r = with_sluice(lambda s: run_json(bench_cmd(s, "--mode", "queues", "--queues", "10000")))
    print_table("10,000 queues: one message into each, then each drained by a consumer",
                ["queues", "publish msg/s", "consume msg/s", "subscribe s", "broker RSS MiB",
                 "lost"],
                [[fmt(r["queues"]), fmt(r["publish_msgs_per_sec"]),
                  fmt(r["consume_msgs_per_sec"]), f"{r['subscribe_s']:.2f}",
                  fmt(r["peak_rss_mib"], 1), r["lost"]]])
    write_json(args.out, "queues", {"machine": machine(), "run": r})
    return r["exit_status"]


def scenario_connections(args):
    # 1,000 consumers, a producer and an admin connection, all from 127.0.0.1.
    r = with_sluice(lambda s: run_json(bench_cmd(s, "--mode", "connections",
                                                 "--connections", "1000")),
                    extra=["--set", "server.max_connections_per_source=1100"])
    print_table("1,000 consumer connections on one queue, one producer",
                ["connections", "msg/s", "fewest per consumer", "most per consumer",
                 "peak held", "broker RSS MiB", "lost"],
                [[fmt(r["connections"]), fmt(r["msgs_per_sec"]), fmt(r["min_per_consumer"]),
                  fmt(r["max_per_consumer"]), r["peak_held"], fmt(r["peak_rss_mib"], 1),
                  r["lost"]]])
    write_json(args.out, "connections", {"machine": machine(), "run": r})
    return r["exit_status"]


class Function:
    """The no-op C++ function (sluice-trigger-bench function) on loopback."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-bench-function-")
        path = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen([TRIGGER_BENCH, "function", "--port-file", path])
        for _ in range(200):
            if os.path.exists(path) and os.path.getsize(path) > 0:
                break
            time.sleep(0.02)
        with open(path) as f:
            self.port = int(f.read())

    def call(self, method, target):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, target)
        r = c.getresponse()
        body = r.read()
        c.close()
        return json.loads(body) if body else None

    def stats(self):
        return self.call("GET", "/_stats")

    def reset(self):
        self.call("POST", "/_reset")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def http_port_of(server):
    with open(os.path.join(server.dir, "port")) as f:
        return int(f.read().split()[1])


def ctl(server, *args):
    subprocess.run([SLUICECTL, "--broker", f"127.0.0.1:{server.port}", *args], check=True,
                   stdout=subprocess.DEVNULL)


def produce(server, *args):
    out = subprocess.run([TRIGGER_BENCH, "produce", "--broker", f"127.0.0.1:{server.port}",
                          "--queue", "bench", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def trigger_flags(function, batch, concurrency, messages):
    flags = ["--set", "triggers.fn.queue=bench",
             "--set", f"triggers.fn.url=http://127.0.0.1:{function.port}/",
             "--set", f"triggers.fn.max_concurrency={concurrency}",
             "--set", f"triggers.fn.batch_size={batch}",
             "--set", f"queues.bench.max_messages={max(messages * 2, 100000)}"]
    return flags + (["--set", "triggers.fn.body=json"] if batch > 1 else [])


def trigger_push_run(batch, concurrency, messages):
    """Messages waiting in the queue, then the trigger resumed: how fast it empties it."""
    function = Function()

    def run(server):
        ctl(server, "triggers", "pause", "fn")
        produce(server, "--messages", str(messages))
        function.reset()
        started = time.monotonic_ns()
        ctl(server, "triggers", "resume", "fn")
        deadline = time.time() + 300
        while function.stats()["messages"] < messages and time.time() < deadline:
            time.sleep(0.05)
        st = function.stats()
        seconds = (st["last_ns"] - started) / 1e9
        return {"messages": st["messages"], "invocations": st["requests"], "seconds": seconds,
                "msgs_per_sec": st["messages"] / seconds,
                "invocations_per_sec": st["requests"] / seconds}

    try:
        return with_sluice(run, extra=trigger_flags(function, batch, concurrency, messages))
    finally:
        function.stop()


def pull_run(batch, connections, messages, rate=0, duration=0):
    """HTTP pull consumers (receive + ack) on the same queue: a preloaded queue emptied,
    or (rate) messages published at that rate while they pull."""
    extra = ["--set", f"queues.bench.max_messages={max(messages * 2, 100000)}"]

    def run(server):
        pull = [TRIGGER_BENCH, "pull", "--http", str(http_port_of(server)), "--queue", "bench",
                "--connections", str(connections), "--batch", str(batch),
                "--messages", str(messages)]
        if not rate:
            produce(server, "--messages", str(messages))
            return json.loads(subprocess.run(pull, check=True, capture_output=True,
                                             text=True).stdout)
        consumer = subprocess.Popen(pull, stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # its receives are waiting
        produce(server, "--rate", str(rate), "--duration", str(duration))
        out, _ = consumer.communicate(timeout=60)
        return json.loads(out)

    return with_sluice(run, extra=extra)


def trigger_latency_run(rate, duration):
    function = Function()

    def run(server):
        produce(server, "--rate", str(rate), "--duration", str(duration))
        time.sleep(0.5)
        return function.stats()

    try:
        return with_sluice(run, extra=trigger_flags(function, 1, 8, rate * duration))
    finally:
        function.stop()


def scenario_trigger(args):
    n1, n100 = args.trigger_messages, args.trigger_messages * 5
    shapes = [("trigger, batch 1, max_concurrency 32", lambda: trigger_push_run(1, 32, n1)),
              ("HTTP pull, 1 per receive, 32 connections", lambda: pull_run(1, 32, n1)),
              ("trigger, batch 100, max_concurrency 8", lambda: trigger_push_run(100, 8, n100)),
              ("HTTP pull, 100 per receive, 8 connections", lambda: pull_run(100, 8, n100))]
    rows, runs, short = [], {}, []
    for name, fn in shapes:
        got = [fn() for _ in range(args.runs)]
        runs[name] = got
        short += [name for r in got if r["messages"] < (n1 if "batch 1" in name or
                                                         "1 per" in name else n100)]
        rows.append([name, fmt(median_of(got, "msgs_per_sec") or median_of(got, "rate")),
                     fmt(median_of(got, "invocations_per_sec")), fmt(got[0]["messages"])])
        say(f"{name}: {rows[-1][1]} msg/s")
    print_table(f"Pushing a preloaded queue into a no-op function, 100-byte messages, "
                f"medians of {args.runs} runs",
                ["consumer", "msg/s", "invocations/s", "messages"], rows)
    lat_rows = []
    for name, fn in (("trigger, batch 1, max_concurrency 8",
                      lambda: trigger_latency_run(1000, args.duration)),
                     ("HTTP pull, 1 per receive, 8 connections",
                      lambda: pull_run(1, 8, int(1000 * args.duration), 1000, args.duration))):
        got = [fn() for _ in range(args.runs)]
        runs[name + " @1000/s"] = got
        short += [name for r in got if r["samples"] < int(1000 * args.duration)]
        lat_rows.append([name, fmt(median_of(got, "p50_us")), fmt(median_of(got, "p99_us")),
                         fmt(median_of(got, "p999_us")), fmt(median_of(got, "samples"))])
    print_table(f"Publish -> function at 1,000/s for {args.duration} s, medians of {args.runs} runs",
                ["consumer", "p50 us", "p99 us", "p99.9 us", "messages"], lat_rows)
    write_json(args.out, "trigger", {"machine": machine(), "runs": runs})
    for name in short:
        say(f"{name}: not every message reached the function")
    return 1 if short else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["compare", "burst-compare", "throughput", "latency", "burst",
                                         "rate-limit", "ordering", "queues", "connections",
                                         "trigger", "schema", "memory", "host"])
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="where JSON, data and plots go (default bench/results)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; medians reported")
    ap.add_argument("--messages", type=int, default=500000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rate", type=int, default=10000, help="compare: latency offered rate")
    ap.add_argument("--duration", type=float, default=5, help="latency run length, seconds")
    ap.add_argument("--latency-runs", type=int, default=3)
    ap.add_argument("--durable-messages", type=int, default=100000,
                    help="compare: messages per durable run (0: none)")
    ap.add_argument("--durable-runs", type=int, default=1)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--memory-count", type=int, default=200000,
                    help="memory: messages per row")
    ap.add_argument("--burst-messages", type=int, default=200000,
                    help="burst-compare: messages in each burst")
    ap.add_argument("--burst-window", type=int, default=1000,
                    help="burst-compare: most unconfirmed publishes")
    ap.add_argument("--trace", action="store_true",
                    help="compare: also write each latency run's messages in send order "
                         "(trace-PEER-N.dat: sequence, sent ns, latency us)")
    ap.add_argument("--trigger-messages", type=int, default=200000,
                    help="trigger: messages per batch-1 run (batch 100 runs take 5x)")
    args = ap.parse_args()
    for exe in (SLUICED, BENCH, COMPARE, TRIGGER_BENCH, SLUICECTL, HOST_GAPS):
        if not os.access(exe, os.X_OK):
            say(f"bench.py: {exe} is not built (scripts/bench.sh builds it)")
            return 2
    fn = {"compare": compare, "burst-compare": burst_compare, "throughput": scenario_throughput, "latency": scenario_latency,
          "burst": scenario_burst, "rate-limit": scenario_rate_limit,
          "ordering": scenario_ordering, "queues": scenario_queues,
          "connections": scenario_connections, "trigger": scenario_trigger,
          "schema": scenario_schema, "memory": scenario_memory,
          "host": scenario_host}[args.scenario]
    return fn(args)


if __name__ == "__main__":
    sys.exit(main())
