// sluice-compare: one workload, one measurement, any broker. Drives Sluice
// (through its client library) or a peer (Redis, beanstalkd, RabbitMQ, NATS
// JetStream, each over its own protocol) through the same Producer/Consumer
// interface (peer.hpp), so the rows of bench/compare.py differ only in the
// broker.
//
//   throughput: P producers publish N messages as fast as their confirm
//               window allows while C consumers (prefetch K) ack them;
//               msg/s = N / (last delivery - first publish).
//   latency:    one producer offers a fixed rate (stamped in the payload);
//               publish->deliver percentiles from one steady clock.
//   burst:      one producer publishes N with no consumer running until all
//               are confirmed (publish msg/s), the broker's resident memory
//               is read at its peak, then the consumers drain (drain msg/s).
//
// Every run checks at-least-once delivery (each sequence number seen; lost =
// 0) and measures its own CPU time and the broker's (from /proc), so a row
// whose client was busier than its broker is visible as such.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../bench_util.hpp"
#include "peer.hpp"

namespace {

using sluice::bench::now_ns;
using sluice::bench::parse_number;
using sluice::bench::percentile;
using sluice::bench::status_kib;

using namespace sluice::bench::peers;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(usage: sluice-compare --peer NAME --broker HOST:PORT [options]

Runs one at-least-once workload against one broker and prints its figures.

  --peer NAME          sluice, redis, beanstalkd, rabbitmq or nats
  --broker HOST:PORT   the broker's address
  --broker-pid PID     the broker's process, for its CPU time (optional)
  --mode MODE          throughput (default), latency or burst
  --messages N         throughput and burst modes: messages (default 500000)
  --size BYTES         payload size, at least 16 (default 100)
  --producers N        producer connections (default 1; latency mode uses 1)
  --consumers N        consumer connections (default 4)
  --prefetch N         most unacked messages per consumer (default 64)
  --window N           most unconfirmed publishes per producer (default 16384)
  --rate N             latency mode: offered msg/s (default 10000)
  --duration SECONDS   latency mode: how long to offer it (default 5)
  --durable            persistent queue and messages (each peer's own kind)
  --single-frames      Sluice: one message per PUBLISH frame, not the client's batches
  --queue NAME         queue name (default bench<pid>)
  --cdf FILE           latency mode: write "microseconds fraction" lines for a CDF plot
  --trace FILE         latency mode: write "sequence sent_ns latency_us" per message, in
                       the order sent (to see when the slow ones happened)
  --json               one JSON object instead of a table

Exit status: 0 when every message arrived and every publish was confirmed,
1 when not, 2 on bad arguments or an unreachable broker.
)";

struct Config {
  std::string peer, host;
  std::uint16_t port = 0;
  long broker_pid = 0;
  bool latency = false;
  bool burst = false;
  std::uint64_t messages = 500'000;
  std::uint32_t size = 100, producers = 1, consumers = 4, prefetch = 64, window = 16384;
  double rate = 10'000, duration_s = 5;
  bool durable = false, json = false, single_frames = false;
  std::string queue, cdf, trace;
};

/// CPU seconds (user + system) this process has used.
double own_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// CPU seconds `pid` has used (all its threads), or -1 when unknown.
double process_cpu_s(long pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return -1;
  // Fields after the command name (which may hold spaces) start at ") ".
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "sluice-compare: %s (see --help)\n", why.c_str());
  return 2;
}

/// Per consumer: its handler runs on one thread, so these need no lock.
struct Tally {
  std::vector<std::uint32_t> latencies_us;
  /// Latency mode: the sequence number and send time of each of latencies_us.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> sent;
  std::atomic<std::uint64_t> last_delivery_ns{0};
};

int parse_args(int argc, char** argv, Config& cfg) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--json" || arg == "--durable" || arg == "--single-frames") {
      (arg == "--json" ? cfg.json : arg == "--durable" ? cfg.durable : cfg.single_frames) = true;
      continue;
    }
    if (i + 1 >= argc) return usage_error(std::string(arg) + " needs a value");
    const std::string_view value = argv[++i];
    double n = 0;
    auto number = [&](double min, double max) {
      return parse_number(value, n) && n >= min && n <= max;
    };
    auto count = [&](std::uint32_t& into, double min, double max) {
      if (!number(min, max)) return false;
      into = static_cast<std::uint32_t>(n);
      return true;
    };
    bool ok = true;
    if (arg == "--peer") {
      cfg.peer = value;
    } else if (arg == "--broker") {
      const auto colon = value.rfind(':');
      ok = colon != std::string_view::npos && parse_number(value.substr(colon + 1), n) && n >= 1 &&
           n <= 65535;
      cfg.host = std::string(value.substr(0, colon));
      cfg.port = static_cast<std::uint16_t>(n);
    } else if (arg == "--broker-pid") {
      ok = number(1, 1e9);
      cfg.broker_pid = static_cast<long>(n);
    } else if (arg == "--mode") {
      ok = value == "throughput" || value == "latency" || value == "burst";
      cfg.latency = value == "latency";
      cfg.burst = value == "burst";
    } else if (arg == "--messages") {
      ok = number(1, 1e9);
      cfg.messages = static_cast<std::uint64_t>(n);
    } else if (arg == "--size") {
      ok = count(cfg.size, 16, 1 << 20);
    } else if (arg == "--producers") {
      ok = count(cfg.producers, 1, 64);
    } else if (arg == "--consumers") {
      ok = count(cfg.consumers, 1, 256);
    } else if (arg == "--prefetch") {
      ok = count(cfg.prefetch, 1, 65535);
    } else if (arg == "--window") {
      ok = count(cfg.window, 1, 1e6);
    } else if (arg == "--rate") {
      ok = number(1, 1e7);
      cfg.rate = n;
    } else if (arg == "--duration") {
      ok = number(0.1, 3600);
      cfg.duration_s = n;
    } else if (arg == "--queue") {
      cfg.queue = value;
    } else if (arg == "--cdf") {
      cfg.cdf = value;
    } else if (arg == "--trace") {
      cfg.trace = value;
    } else {
      return usage_error("unknown option " + std::string(arg));
    }
    if (!ok) return usage_error("bad value for " + std::string(arg));
  }
  if (cfg.peer.empty() || cfg.port == 0) return usage_error("--peer and --broker are needed");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  if (int rc = parse_args(argc, argv, cfg)) return rc;
  if (cfg.queue.empty()) cfg.queue = "bench" + std::to_string(::getpid());
  if (cfg.latency) {
    cfg.producers = 1;
    cfg.messages = static_cast<std::uint64_t>(cfg.rate * cfg.duration_s);
  }
  const PeerOptions options{cfg.host,     cfg.port,   cfg.queue,        cfg.durable,
                            cfg.prefetch, cfg.window, cfg.single_frames};
  const std::map<std::string, std::unique_ptr<Peer> (*)(const PeerOptions&)> makers = {
      {"sluice", make_sluice},
      {"redis", make_redis},
      {"beanstalkd", make_beanstalkd},
      {"rabbitmq", make_rabbitmq},
      {"nats", make_nats}};
  const auto maker = makers.find(cfg.peer);
  if (maker == makers.end()) return usage_error("unknown peer " + cfg.peer);
  auto peer = maker->second(options);
  if (std::string e = peer->prepare(); !e.empty()) {
    std::fprintf(stderr, "sluice-compare: %s\n", e.c_str());
    return 2;
  }

  std::unique_ptr<std::atomic<std::uint8_t>[]> seen(new std::atomic<std::uint8_t>[cfg.messages]);
  for (std::uint64_t i = 0; i < cfg.messages; ++i) seen[i].store(0, std::memory_order_relaxed);
  std::atomic<std::uint64_t> unique{0}, duplicates{0};

  std::vector<std::unique_ptr<Tally>> tallies;
  std::vector<std::unique_ptr<Consumer>> consumers;
  std::vector<std::unique_ptr<Producer>> producers;
  std::string error;
  for (std::uint32_t c = 0; c < cfg.consumers; ++c) {
    consumers.push_back(peer->consumer(error));
    if (!consumers.back()) {
      std::fprintf(stderr, "sluice-compare: %s\n", error.c_str());
      return 2;
    }
    tallies.push_back(std::make_unique<Tally>());
    tallies.back()->latencies_us.reserve(cfg.messages / cfg.consumers * 2 + 1024);
    if (cfg.latency) tallies.back()->sent.reserve(tallies.back()->latencies_us.capacity());
  }
  for (std::uint32_t p = 0; p < cfg.producers; ++p) {
    producers.push_back(peer->producer(error));
    if (!producers.back()) {
      std::fprintf(stderr, "sluice-compare: %s\n", error.c_str());
      return 2;
    }
  }
  const auto start_consumers = [&] {
    for (std::uint32_t c = 0; c < cfg.consumers; ++c) {
      Tally* tally = tallies[c].get();
      consumers[c]->start([tally, &seen, &unique, &duplicates, &cfg](std::string_view payload) {
        const std::uint64_t arrived = now_ns();
        std::uint64_t seq = ~0ull, sent = arrived;
        if (payload.size() >= 16) {
          std::memcpy(&seq, payload.data(), 8);
          std::memcpy(&sent, payload.data() + 8, 8);
        }
        if (seq < cfg.messages && seen[seq].exchange(1, std::memory_order_relaxed) == 0)
          unique.fetch_add(1, std::memory_order_relaxed);
        else
          duplicates.fetch_add(1, std::memory_order_relaxed);
        if (tally->latencies_us.size() < tally->latencies_us.capacity()) {
          tally->latencies_us.push_back(
              static_cast<std::uint32_t>(std::min<std::uint64_t>((arrived - sent) / 1000, ~0u)));
          if (cfg.latency) tally->sent.emplace_back(seq, sent);
        }
        tally->last_delivery_ns.store(arrived, std::memory_order_relaxed);
      });
    }
  };
  if (!cfg.burst) start_consumers();
  // The broker's resident memory with the queue made and connections open, before a message.
  const long idle_rss_kib = status_kib(cfg.broker_pid, "VmRSS");

  const double broker_cpu_before = process_cpu_s(cfg.broker_pid);
  const double client_cpu_before = own_cpu_s();
  const std::uint64_t start_ns = now_ns();
  std::atomic<std::uint64_t> confirmed_ns{0};
  std::atomic<bool> confirms_ok{true};
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < cfg.producers; ++p) {
    threads.emplace_back([&, p] {
      Producer& producer = *producers[p];
      std::string payload(cfg.size, 'x');
      auto send = [&](std::uint64_t seq) {
        const std::uint64_t t = now_ns();
        std::memcpy(payload.data(), &seq, 8);
        std::memcpy(payload.data() + 8, &t, 8);
        producer.publish(payload);
      };
      if (cfg.latency) {
        // Whatever is due every 200 µs, written at once (no batching delay).
        const auto begin = Clock::now();
        for (std::uint64_t sent = 0; sent < cfg.messages;) {
          const double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
          const auto due = std::min<std::uint64_t>(
              cfg.messages, static_cast<std::uint64_t>(elapsed * cfg.rate) + 1);
          for (; sent < due; ++sent) send(sent);
          producer.flush();
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      } else {
        for (std::uint64_t seq = p; seq < cfg.messages; seq += cfg.producers) send(seq);
      }
      if (!producer.wait_confirms(std::chrono::seconds(600))) confirms_ok.store(false);
      const std::uint64_t t = now_ns();
      std::uint64_t prev = confirmed_ns.load();
      while (prev < t && !confirmed_ns.compare_exchange_weak(prev, t)) {
      }
    });
  }
  for (auto& t : threads) t.join();
  long peak_rss_kib = -1, held_rss_kib = -1;
  std::uint64_t drain_start_ns = 0;
  if (cfg.burst) {
    // Every message confirmed and held: the broker at its fullest.
    peak_rss_kib = status_kib(cfg.broker_pid, "VmHWM");
    held_rss_kib = status_kib(cfg.broker_pid, "VmRSS");
    drain_start_ns = now_ns();
    start_consumers();
  }

  // Wait for the last delivery; give up after 30 s without progress.
  sluice::bench::wait_for_count(unique, cfg.messages);
  std::uint64_t end_ns = start_ns;
  for (auto& t : tallies) end_ns = std::max(end_ns, t->last_delivery_ns.load());
  const double client_cpu_s = own_cpu_s() - client_cpu_before;
  const double broker_cpu_after = process_cpu_s(cfg.broker_pid);
  const double broker_cpu_s =
      broker_cpu_before < 0 || broker_cpu_after < 0 ? -1 : broker_cpu_after - broker_cpu_before;
  std::string consumer_error;
  for (auto& c : consumers)
    if (consumer_error.empty()) consumer_error = c->error();
  for (auto& c : consumers) c->stop();
  std::uint64_t publish_failures = 0;
  for (auto& p : producers) publish_failures += p->failures();

  std::vector<std::uint32_t> latencies;
  for (auto& t : tallies)
    latencies.insert(latencies.end(), t->latencies_us.begin(), t->latencies_us.end());
  std::sort(latencies.begin(), latencies.end());
  // Latency mode: the messages in send order. Slow ones come in stalls: runs
  // sent within 5 ms of each other, each over 500 us, which one event (a
  // thread that did not run) held back together.
  struct Sent {
    std::uint64_t seq, sent_ns;
    std::uint32_t latency_us;
  };
  std::vector<Sent> in_order;
  for (auto& t : tallies)
    for (std::size_t i = 0; i < t->sent.size(); ++i)
      in_order.push_back({t->sent[i].first, t->sent[i].second, t->latencies_us[i]});
  std::sort(in_order.begin(), in_order.end(),
            [](const Sent& a, const Sent& b) { return a.sent_ns < b.sent_ns; });
  std::uint64_t stalls = 0, largest_stall_messages = 0, stall_messages = 0, last_slow_ns = 0;
  std::uint32_t largest_stall_us = 0;
  for (const Sent& m : in_order) {
    if (m.latency_us <= 500) continue;
    if (stalls == 0 || m.sent_ns - last_slow_ns > 5'000'000) {
      ++stalls;
      stall_messages = 0;
    }
    last_slow_ns = m.sent_ns;
    largest_stall_messages = std::max(largest_stall_messages, ++stall_messages);
    largest_stall_us = std::max(largest_stall_us, m.latency_us);
  }
  if (!cfg.trace.empty()) {
    std::ofstream trace(cfg.trace);
    for (const Sent& m : in_order)
      trace << m.seq << ' ' << m.sent_ns << ' ' << m.latency_us << '\n';
  }
  if (!cfg.cdf.empty()) {
    std::ofstream cdf(cfg.cdf);
    for (int i = 1; i <= 1000; ++i) {
      const double p = i / 1000.0;
      cdf << percentile(latencies, p) << ' ' << p << '\n';
    }
  }

  const double elapsed_s = static_cast<double>(end_ns - start_ns) / 1e9;
  const double publish_s = static_cast<double>(confirmed_ns.load() - start_ns) / 1e9;
  const std::uint64_t lost = cfg.messages - unique.load();
  const double msgs_per_sec = elapsed_s > 0 ? static_cast<double>(unique.load()) / elapsed_s : 0;
  const double drain_s = static_cast<double>(end_ns - drain_start_ns) / 1e9;
  const double drain_per_sec =
      cfg.burst && drain_s > 0 ? static_cast<double>(unique.load()) / drain_s : 0;
  // Broker memory per held message above its idle size, and of that what is not payload.
  const double bytes_per_msg = cfg.burst && peak_rss_kib > 0 && idle_rss_kib > 0
                                   ? static_cast<double>(peak_rss_kib - idle_rss_kib) * 1024 /
                                         static_cast<double>(cfg.messages)
                                   : -1;
  const double publish_per_sec = publish_s > 0 ? static_cast<double>(cfg.messages) / publish_s : 0;
  const auto pct = [&](double p) { return percentile(latencies, p); };
  const double client_pct = elapsed_s > 0 ? 100 * client_cpu_s / elapsed_s : 0;
  const double broker_pct =
      elapsed_s > 0 && broker_cpu_s >= 0 ? 100 * broker_cpu_s / elapsed_s : -1;
  const char* mode = cfg.latency ? "latency" : cfg.burst ? "burst" : "throughput";
  const bool ok = lost == 0 && publish_failures == 0 && confirms_ok.load();

  if (cfg.json) {
    std::printf(
        "{\"peer\":\"%s\",\"mode\":\"%s\",\"durable\":%s,\"messages\":%llu,\"size\":%u,"
        "\"producers\":%u,\"consumers\":%u,\"prefetch\":%u,\"window\":%u,\"offered_rate\":%.0f,"
        "\"elapsed_s\":%.3f,\"msgs_per_sec\":%.0f,\"publish_msgs_per_sec\":%.0f,"
        "\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"p999_us\":%u,\"max_us\":%u,"
        "\"stalls\":%llu,\"largest_stall_messages\":%llu,\"largest_stall_us\":%u,"
        "\"lost\":%llu,\"duplicates\":%llu,\"publish_failures\":%llu,\"client_cpu_pct\":%.0f,"
        "\"broker_cpu_pct\":%.0f,\"idle_rss_kib\":%ld,\"peak_rss_kib\":%ld,"
        "\"held_rss_kib\":%ld,\"bytes_per_msg\":%.1f,\"overhead_per_msg\":%.1f,"
        "\"drain_msgs_per_sec\":%.0f,\"ok\":%s}\n",
        cfg.peer.c_str(), mode, cfg.durable ? "true" : "false",
        static_cast<unsigned long long>(cfg.messages), cfg.size, cfg.producers, cfg.consumers,
        cfg.prefetch, cfg.window, cfg.latency ? cfg.rate : 0.0, elapsed_s, msgs_per_sec,
        publish_per_sec, pct(0.5), pct(0.9), pct(0.99), pct(0.999),
        latencies.empty() ? 0u : latencies.back(), static_cast<unsigned long long>(stalls),
        static_cast<unsigned long long>(largest_stall_messages), largest_stall_us,
        static_cast<unsigned long long>(lost), static_cast<unsigned long long>(duplicates.load()),
        static_cast<unsigned long long>(publish_failures), client_pct, broker_pct, idle_rss_kib,
        peak_rss_kib, held_rss_kib, bytes_per_msg,
        bytes_per_msg < 0 ? -1.0 : bytes_per_msg - cfg.size, drain_per_sec, ok ? "true" : "false");
  } else {
    std::printf("%-22s %s%s, %s\n", "broker", cfg.peer.c_str(), cfg.durable ? " (durable)" : "",
                mode);
    std::printf("%-22s %llu x %u bytes, %u producers, %u consumers x %u prefetch\n", "workload",
                static_cast<unsigned long long>(cfg.messages), cfg.size, cfg.producers,
                cfg.consumers, cfg.prefetch);
    if (cfg.latency) std::printf("%-22s %.0f msg/s\n", "offered", cfg.rate);
    std::printf("%-22s %.0f msg/s (publish confirmed %.0f msg/s)\n", "end to end", msgs_per_sec,
                publish_per_sec);
    std::printf("%-22s p50 %u  p99 %u  p99.9 %u  max %u\n", "publish->deliver us", pct(0.5),
                pct(0.99), pct(0.999), latencies.empty() ? 0u : latencies.back());
    if (cfg.latency)
      std::printf("%-22s %llu over 500 us (at most %llu messages each, the slowest %u us)\n",
                  "stalls", static_cast<unsigned long long>(stalls),
                  static_cast<unsigned long long>(largest_stall_messages), largest_stall_us);
    std::printf("%-22s lost %llu, duplicates %llu, publish failures %llu\n", "delivery",
                static_cast<unsigned long long>(lost),
                static_cast<unsigned long long>(duplicates.load()),
                static_cast<unsigned long long>(publish_failures));
    std::printf("%-22s client %.0f %%, broker %.0f %% (of one core)\n", "cpu", client_pct,
                broker_pct);
    if (cfg.burst)
      std::printf(
          "%-22s idle %ld KiB, peak %ld KiB: %.1f bytes per message (%.1f above the "
          "payload); drained at %.0f msg/s\n",
          "broker memory", idle_rss_kib, peak_rss_kib, bytes_per_msg, bytes_per_msg - cfg.size,
          drain_per_sec);
  }
  if (!consumer_error.empty()) std::fprintf(stderr, "sluice-compare: %s\n", consumer_error.c_str());
  if (!confirms_ok.load())
    std::fprintf(stderr, "sluice-compare: not every publish was confirmed\n");
  return ok ? 0 : 1;
}
