// sluice-bench: end-to-end load against a running sluiced, through the client
// library, as users run it.
//
//   throughput: P producers publish N messages as fast as confirms allow while
//               C consumers (credit K each) ack them; msg/s is N over the time
//               from the first publish to the last delivery.
//   latency:    one producer offers a fixed rate; publish→deliver percentiles.
//   burst, slow-consumer, rate-limit: flow control (see flow_scenarios.hpp).
//   queues, connections: scale (10,000 queues; 1,000 consumer connections).
//
// Every run also checks the broker's promises at full scale: every message
// delivered (none lost) and no consumer ever holding more than its credit.
// The exit status is 1 when either is broken.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>

#include "bench_util.hpp"
#include "flow_scenarios.hpp"
#include "sluice/client/client.hpp"

namespace {

using sluice::bench::now_ns;
using sluice::bench::parse_number;
using sluice::bench::percentile;

using Clock = std::chrono::steady_clock;
using sluice::client::Connection;

constexpr const char* kUsage = R"(usage: sluice-bench [options]

Measures a running sluiced end to end (publish -> deliver -> ack).

  --broker HOST:PORT   broker address (default 127.0.0.1:7450, or $SLUICE_BROKER)
  --mode MODE          throughput (default), latency, burst, slow-consumer,
                       rate-limit, queues or connections
  --messages N         messages in throughput mode (default 1000000)
  --size BYTES         payload size, at least 16 (default 100)
  --producers N        producer connections (default 1; latency mode uses 1)
  --consumers N        consumer connections (default 4)
  --in-flight N        each consumer's credit: most unacked messages held (default 64)
  --rate N             latency mode: offered messages per second (default 10000)
  --duration SECONDS   latency mode: how long to offer the rate (default 5)
  --queue NAME         queue to use (default bench-<pid>-<time>, fresh each run)
  --keys N             throughput mode: ordering keys (ordering = key on the queue;
                       message i carries sluice-key k<i mod N>); 0 = unordered (default)
  --json-payload       throughput mode: each payload is a 10-field JSON order (see
                       bench/schemas/order.json), not --size bytes of filler
  --schema-version V   with --json-payload: each message names schema version V
                       (sluice-schema-version), for a queue declared with schemas

burst: a burst into a bounded queue (overflow block) drained at a set rate
  --burst N            messages published at once (default 200000; slow-consumer: 100000)
  --capacity N         the queue's max_messages (default 20000)
  --dispatch-rate R    the queue's dispatch rate, msg/s (default 50000)
  --broker-pid PID     read the broker's peak RSS from /proc (bench/run.sh passes it)
  --series FILE        burst: write "seconds depth rss_mib delivered/10" every 20 ms
slow-consumer: one consumer's rate alone, then beside one that stops reading
  (uses --burst as the message count, --in-flight, --size)
rate-limit: the achieved dispatch rate against 1, 10, ... 100,000 msg/s configured
queues: 10 messages through each of --queues N queues (default 10000)
connections: --connections N consumer connections (default 1000, credit 8 each)
  on one queue, 200,000 messages (or --burst)
  --json               print one JSON object instead of a table
  --help               print this help

Exit status: 0 on success, 1 if a message was lost or a credit exceeded,
2 on bad arguments or when the broker cannot be reached.
)";

struct Config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7450;
  std::string mode = "throughput";
  std::uint64_t messages = 1'000'000;
  std::uint32_t size = 100;
  std::uint32_t producers = 1;
  std::uint32_t consumers = 4;
  std::uint32_t in_flight = 64;
  double rate = 10000;
  double duration_s = 5;
  std::string queue;
  std::uint32_t keys = 0;
  bool json = false;
  bool json_payload = false;
  std::string schema_version;
};

/// One consumer connection. The handler runs on that connection's I/O thread
/// only, so its vectors need no lock; the counters are read by the main thread.
struct Consumer {
  std::unique_ptr<Connection> connection;
  std::uint32_t subscription = 0;
  std::vector<std::uint32_t> latencies_us;  // reserved up front: no allocation per message
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> last_delivery_ns{0};
};

/// The payload carries its sequence number and send time; the rest is filler.
void stamp(std::string& payload, std::uint64_t seq) {
  const std::uint64_t t = now_ns();
  std::memcpy(payload.data(), &seq, 8);
  std::memcpy(payload.data() + 8, &t, 8);
}

/// --json-payload: a 10-field order (bench/schemas/order.json holds its schema);
/// the sequence number and send time go in as 16 hex digits each at fixed offsets.
constexpr std::string_view kJsonOrder =
    R"({"seq":"0000000000000000","sent":"0000000000000000","order":123456,"customer":"c-42",)"
    R"("total":19.99,"currency":"EUR","paid":true,"items":3,"country":"DE","note":"bench"})";
constexpr std::size_t kJsonSeqAt = 8, kJsonSentAt = 34;

void put_hex(std::string& payload, std::size_t at, std::uint64_t value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, value >>= 4)
    payload[at + static_cast<std::size_t>(i)] = kDigits[value & 15];
}

std::uint64_t get_hex(std::string_view payload, std::size_t at) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < 16 && at + i < payload.size(); ++i) {
    const char c = payload[at + i];
    value = value << 4 | static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  return value;
}

void stamp_json(std::string& payload, std::uint64_t seq) {
  put_hex(payload, kJsonSeqAt, seq);
  put_hex(payload, kJsonSentAt, now_ns());
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "sluice-bench: %s (see --help)\n", why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  sluice::bench::FlowConfig flow;
  bool burst_given = false;
  if (const char* env = std::getenv("SLUICE_BROKER")) {
    std::string_view b = env;
    const auto colon = b.rfind(':');
    if (colon != std::string_view::npos) {
      cfg.host = std::string(b.substr(0, colon));
      cfg.port = static_cast<std::uint16_t>(std::atoi(std::string(b.substr(colon + 1)).c_str()));
    }
  }
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--json") {
      cfg.json = true;
      continue;
    }
    if (arg == "--json-payload") {
      cfg.json_payload = true;
      continue;
    }
    if (i + 1 >= argc) return usage_error(std::string(arg) + " needs a value");
    const std::string_view value = argv[++i];
    double n = 0;
    auto number = [&](double min, double max) {
      return parse_number(value, n) && n >= min && n <= max;
    };
    if (arg == "--broker") {
      const auto colon = value.rfind(':');
      if (colon == std::string_view::npos || !parse_number(value.substr(colon + 1), n) || n < 1 ||
          n > 65535)
        return usage_error("--broker needs HOST:PORT");
      cfg.host = std::string(value.substr(0, colon));
      cfg.port = static_cast<std::uint16_t>(n);
    } else if (arg == "--mode") {
      if (value != "throughput" && value != "latency" && value != "burst" &&
          value != "slow-consumer" && value != "rate-limit" && value != "queues" &&
          value != "connections")
        return usage_error(
            "--mode is throughput, latency, burst, slow-consumer, rate-limit, queues or "
            "connections");
      cfg.mode = value;
    } else if (arg == "--messages") {
      if (!number(1, 1e10)) return usage_error("--messages needs a positive count");
      cfg.messages = static_cast<std::uint64_t>(n);
    } else if (arg == "--size") {
      if (!number(16, 1 << 20)) return usage_error("--size needs 16 to 1048576 bytes");
      cfg.size = static_cast<std::uint32_t>(n);
    } else if (arg == "--producers") {
      if (!number(1, 64)) return usage_error("--producers needs 1 to 64");
      cfg.producers = static_cast<std::uint32_t>(n);
    } else if (arg == "--consumers") {
      if (!number(1, 64)) return usage_error("--consumers needs 1 to 64");
      cfg.consumers = static_cast<std::uint32_t>(n);
    } else if (arg == "--in-flight") {
      if (!number(1, 1e6)) return usage_error("--in-flight needs 1 to 1000000");
      cfg.in_flight = static_cast<std::uint32_t>(n);
    } else if (arg == "--rate") {
      if (!number(1, 1e7)) return usage_error("--rate needs 1 to 10000000 per second");
      cfg.rate = n;
    } else if (arg == "--duration") {
      if (!number(0.1, 3600)) return usage_error("--duration needs 0.1 to 3600 seconds");
      cfg.duration_s = n;
    } else if (arg == "--queue") {
      cfg.queue = value;
    } else if (arg == "--keys") {
      if (!number(0, 1'000'000)) return usage_error("--keys needs 0 to 1000000");
      cfg.keys = static_cast<std::uint32_t>(n);
    } else if (arg == "--schema-version") {
      cfg.schema_version = value;
    } else if (arg == "--burst") {
      if (!number(1, 1e9)) return usage_error("--burst needs a positive count");
      flow.burst = static_cast<std::uint64_t>(n);
      burst_given = true;
    } else if (arg == "--capacity") {
      if (!number(1, 1e9)) return usage_error("--capacity needs 1 to 1000000000");
      flow.capacity = static_cast<std::uint64_t>(n);
    } else if (arg == "--dispatch-rate") {
      if (!number(0, 1e6)) return usage_error("--dispatch-rate needs 0 to 1000000");
      flow.dispatch_rate = n;
    } else if (arg == "--series") {
      flow.series = value;
    } else if (arg == "--queues") {
      if (!number(1, 1e6)) return usage_error("--queues needs 1 to 1000000");
      flow.queues = static_cast<std::uint32_t>(n);
    } else if (arg == "--connections") {
      if (!number(1, 100000)) return usage_error("--connections needs 1 to 100000");
      flow.connections = static_cast<std::uint32_t>(n);
    } else if (arg == "--broker-pid") {
      if (!number(1, 1e9)) return usage_error("--broker-pid needs a process id");
      flow.broker_pid = static_cast<pid_t>(n);
    } else {
      return usage_error("unknown option " + std::string(arg));
    }
  }
  if (cfg.queue.empty())
    cfg.queue = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(now_ns() % 1000000);
  if (cfg.mode != "throughput" && cfg.mode != "latency") {
    flow.host = cfg.host;
    flow.port = cfg.port;
    flow.queue = cfg.queue;
    flow.json = cfg.json;
    flow.size = std::max<std::uint32_t>(cfg.size, 8);
    flow.consumers = cfg.consumers;
    flow.in_flight = cfg.in_flight;
    if (cfg.mode == "burst") return sluice::bench::run_burst(flow);
    if (cfg.mode == "rate-limit") return sluice::bench::run_rate_limit(flow);
    if (cfg.mode == "queues") return sluice::bench::run_queues(flow);
    if (cfg.mode == "connections") {
      if (!burst_given) flow.burst = 200'000;
      return sluice::bench::run_connections(flow);
    }
    if (!burst_given) flow.burst = 100'000;
    return sluice::bench::run_slow_consumer(flow);
  }
  const bool latency_mode = cfg.mode == "latency";
  if (latency_mode) {
    cfg.producers = 1;
    cfg.messages = static_cast<std::uint64_t>(cfg.rate * cfg.duration_s);
    if (cfg.messages == 0) return usage_error("--rate x --duration is less than one message");
  }
  auto open = [&] { return sluice::bench::connect_or_report(cfg.host, cfg.port, "sluice-bench"); };
  if (cfg.keys != 0) {
    if (latency_mode) return usage_error("--keys is for throughput mode");
    auto admin = open();
    if (!admin) return 2;
    if (auto e = admin->configure(cfg.queue, {{"ordering", "key"}})) {
      std::fprintf(stderr, "sluice-bench: ordering = key: %s\n", e.to_string().c_str());
      return 2;
    }
  }

  // Which sequence numbers arrived, to tell lost from duplicated.
  std::unique_ptr<std::atomic<std::uint8_t>[]> seen(new std::atomic<std::uint8_t>[cfg.messages]);
  for (std::uint64_t i = 0; i < cfg.messages; ++i) seen[i].store(0, std::memory_order_relaxed);
  std::atomic<std::uint64_t> unique{0}, duplicates{0};

  std::vector<std::unique_ptr<Consumer>> consumers;
  for (std::uint32_t c = 0; c < cfg.consumers; ++c) {
    auto consumer = std::make_unique<Consumer>();
    consumer->connection = open();
    if (!consumer->connection) return 2;
    consumer->latencies_us.reserve(cfg.messages / cfg.consumers * 2 + 1024);
    Consumer* self = consumer.get();
    auto sub = consumer->connection->subscribe(
        cfg.queue, {.max_in_flight = cfg.in_flight},
        [self, &seen, &unique, &duplicates, &cfg](const sluice::client::Delivery& d) {
          const std::uint64_t arrived = now_ns();
          std::uint64_t seq = 0, sent = 0;
          if (cfg.json_payload) {
            seq = get_hex(d.payload, kJsonSeqAt);
            sent = get_hex(d.payload, kJsonSentAt);
          } else if (d.payload.size() >= 16) {
            std::memcpy(&seq, d.payload.data(), 8);
            std::memcpy(&sent, d.payload.data() + 8, 8);
          }
          if (seq < cfg.messages && seen[seq].exchange(1, std::memory_order_relaxed) == 0)
            unique.fetch_add(1, std::memory_order_relaxed);
          else
            duplicates.fetch_add(1, std::memory_order_relaxed);
          if (self->latencies_us.size() < self->latencies_us.capacity())
            self->latencies_us.push_back(
                static_cast<std::uint32_t>(std::min<std::uint64_t>((arrived - sent) / 1000, ~0u)));
          self->received.fetch_add(1, std::memory_order_relaxed);
          self->last_delivery_ns.store(arrived, std::memory_order_relaxed);
          return sluice::client::Disposition::ack;
        });
    if (!sub) {
      std::fprintf(stderr, "sluice-bench: subscribe: %s\n", sub.error().to_string().c_str());
      return 2;
    }
    consumer->subscription = *sub;
    consumers.push_back(std::move(consumer));
  }

  std::vector<std::unique_ptr<Connection>> producers;
  for (std::uint32_t p = 0; p < cfg.producers; ++p) {
    producers.push_back(open());
    if (!producers.back()) return 2;
  }

  // With a durable queue, the broker's commit figures over the run.
  auto storage_before = producers.front()->storage_stats();
  const bool durable = storage_before.ok() && storage_before->has_value();

  std::atomic<std::uint64_t> publish_failures{0};
  auto on_confirm = [&publish_failures](const sluice::client::Error& e, std::uint64_t) {
    if (e) publish_failures.fetch_add(1, std::memory_order_relaxed);
  };
  const std::uint64_t start_ns = now_ns();
  std::atomic<std::uint64_t> confirmed_ns{0};
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < cfg.producers; ++p) {
    threads.emplace_back([&, p] {
      Connection& conn = *producers[p];
      std::string payload(cfg.size, 'x');
      // Producer p sends the sequence numbers p, p + P, p + 2P, ...
      if (latency_mode) {
        const auto begin = Clock::now();
        std::uint64_t sent = 0;
        while (sent < cfg.messages) {
          const double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
          const auto due = std::min<std::uint64_t>(
              cfg.messages, static_cast<std::uint64_t>(elapsed * cfg.rate) + 1);
          for (; sent < due; ++sent) {
            stamp(payload, sent);
            conn.publish_async(cfg.queue, payload, on_confirm);
          }
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      } else {
        if (cfg.json_payload) {
          sluice::client::Message m{std::string(kJsonOrder), {}};
          if (!cfg.schema_version.empty())
            m.headers.emplace_back("sluice-schema-version", cfg.schema_version);
          for (std::uint64_t seq = p; seq < cfg.messages; seq += cfg.producers) {
            stamp_json(m.payload, seq);
            conn.publish_async(cfg.queue, m, on_confirm);
          }
        } else if (cfg.keys == 0) {
          for (std::uint64_t seq = p; seq < cfg.messages; seq += cfg.producers) {
            stamp(payload, seq);
            conn.publish_async(cfg.queue, payload, on_confirm);
          }
        } else {
          sluice::client::Message m{payload, {{"sluice-key", ""}}};
          for (std::uint64_t seq = p; seq < cfg.messages; seq += cfg.producers) {
            stamp(m.payload, seq);
            m.headers[0].second = "k" + std::to_string(seq % cfg.keys);
            conn.publish_async(cfg.queue, m, on_confirm);
          }
        }
      }
      conn.wait_confirms(std::chrono::minutes(10));
      std::uint64_t t = now_ns(), prev = confirmed_ns.load();
      while (prev < t && !confirmed_ns.compare_exchange_weak(prev, t)) {
      }
    });
  }
  for (auto& t : threads) t.join();

  // Wait for the last delivery; give up after 30 s without progress.
  sluice::bench::wait_for_count(unique, cfg.messages);
  std::uint64_t end_ns = start_ns;
  for (auto& c : consumers) end_ns = std::max(end_ns, c->last_delivery_ns.load());
  // Let the last acks go out, then read the credit counters.
  for (auto& c : consumers) c->connection->ping();

  std::vector<std::uint32_t> latencies;
  std::uint64_t peak_held = 0;
  for (auto& c : consumers) {
    latencies.insert(latencies.end(), c->latencies_us.begin(), c->latencies_us.end());
    peak_held = std::max(peak_held, c->connection->subscription_stats(c->subscription).peak_held);
  }
  std::sort(latencies.begin(), latencies.end());
  double commits_per_sec = 0, ops_per_commit = 0;
  std::uint64_t median_batch = 0;
  if (durable) {
    auto after = producers.front()->storage_stats();
    if (after.ok() && after->has_value()) {
      const auto& a = **after;
      const auto& b = **storage_before;
      const double run_s = static_cast<double>(now_ns() - start_ns) / 1e9;
      const auto commits = a.commits_total - b.commits_total;
      commits_per_sec = run_s > 0 ? static_cast<double>(commits) / run_s : 0;
      ops_per_commit =
          commits ? static_cast<double>(a.operations_total - b.operations_total) / commits : 0;
      median_batch = a.median_batch;
    }
  }

  const double elapsed_s = static_cast<double>(end_ns - start_ns) / 1e9;
  const double publish_s = static_cast<double>(confirmed_ns.load() - start_ns) / 1e9;
  const std::uint64_t lost = cfg.messages - unique.load();
  const bool credit_respected = peak_held <= cfg.in_flight;
  const double msgs_per_sec = elapsed_s > 0 ? static_cast<double>(unique.load()) / elapsed_s : 0;
  const double publish_per_sec = publish_s > 0 ? static_cast<double>(cfg.messages) / publish_s : 0;
  const auto p50 = percentile(latencies, 0.50), p99 = percentile(latencies, 0.99),
             p999 = percentile(latencies, 0.999), max = latencies.empty() ? 0u : latencies.back();

  if (cfg.json) {
    std::printf(
        "{\"mode\":\"%s\",\"messages\":%llu,\"size\":%u,\"producers\":%u,\"consumers\":%u,"
        "\"in_flight\":%u,\"keys\":%u,\"offered_rate\":%.0f,\"elapsed_s\":%.3f,\"msgs_per_sec\":%."
        "0f,"
        "\"publish_msgs_per_sec\":%.0f,\"p50_us\":%u,\"p99_us\":%u,\"p999_us\":%u,"
        "\"max_us\":%u,\"lost\":%llu,\"duplicates\":%llu,\"publish_failures\":%llu,"
        "\"peak_held\":%llu,\"credit_respected\":%s,\"durable\":%s,\"fsyncs_per_sec\":%.0f,"
        "\"median_batch\":%llu,\"ops_per_commit\":%.1f}\n",
        cfg.mode.c_str(), static_cast<unsigned long long>(cfg.messages), cfg.size, cfg.producers,
        cfg.consumers, cfg.in_flight, cfg.keys, latency_mode ? cfg.rate : 0.0, elapsed_s,
        msgs_per_sec, publish_per_sec, p50, p99, p999, max, static_cast<unsigned long long>(lost),
        static_cast<unsigned long long>(duplicates.load()),
        static_cast<unsigned long long>(publish_failures.load()),
        static_cast<unsigned long long>(peak_held), credit_respected ? "true" : "false",
        durable ? "true" : "false", commits_per_sec, static_cast<unsigned long long>(median_batch),
        ops_per_commit);
  } else {
    std::printf("%-24s %s\n", "mode", cfg.mode.c_str());
    std::printf("%-24s %llu x %u bytes\n", "messages",
                static_cast<unsigned long long>(cfg.messages), cfg.size);
    std::printf("%-24s %u producers, %u consumers x %u in flight\n", "shape", cfg.producers,
                cfg.consumers, cfg.in_flight);
    if (latency_mode) std::printf("%-24s %.0f msg/s\n", "offered rate", cfg.rate);
    if (cfg.keys != 0)
      std::printf("%-24s %u (one message of a key out at a time)\n", "ordering keys", cfg.keys);
    std::printf("%-24s %.3f s\n", "elapsed", elapsed_s);
    std::printf("%-24s %.0f msg/s\n", "end to end", msgs_per_sec);
    std::printf("%-24s %.0f msg/s\n", "publish (confirmed)", publish_per_sec);
    std::printf("%-24s p50 %u  p99 %u  p99.9 %u  max %u\n", "publish->deliver us", p50, p99, p999,
                max);
    std::printf("%-24s lost %llu, duplicates %llu, publish failures %llu\n", "delivery",
                static_cast<unsigned long long>(lost),
                static_cast<unsigned long long>(duplicates.load()),
                static_cast<unsigned long long>(publish_failures.load()));
    std::printf("%-24s peak held %llu of %u: %s\n", "credit",
                static_cast<unsigned long long>(peak_held), cfg.in_flight,
                credit_respected ? "respected" : "EXCEEDED");
    if (durable)
      std::printf("%-24s %.0f commits (fsyncs)/s, median batch %llu operations, mean %.1f\n",
                  "storage", commits_per_sec, static_cast<unsigned long long>(median_batch),
                  ops_per_commit);
  }
  return lost == 0 && credit_respected && publish_failures.load() == 0 ? 0 : 1;
}
