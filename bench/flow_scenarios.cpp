#include "flow_scenarios.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "sluice/client/client.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::bench {

std::unique_ptr<client::Connection> connect_or_report(const std::string& host, std::uint16_t port,
                                                      const char* name, std::size_t max_unconfirmed,
                                                      std::size_t max_batch_bytes) {
  client::Options options;
  options.host = host;
  options.port = port;
  options.client_name = name;
  options.max_unconfirmed = max_unconfirmed;
  if (max_batch_bytes != 0) options.max_batch_bytes = max_batch_bytes;
  // bench/run.sh with SLUICE_BENCH_TLS=1 runs the broker with TLS and says which CA to trust.
  if (const char* ca = std::getenv("SLUICE_BENCH_TLS_CA"); ca && *ca) {
    options.tls = true;
    options.ca_file = ca;
  }
  auto c = client::Connection::connect(options);
  if (!c) {
    std::fprintf(stderr, "sluice-bench: cannot reach %s:%u: %s\n", host.c_str(), port,
                 c.error().to_string().c_str());
    return nullptr;
  }
  return std::move(c).value();
}

namespace {

using Clock = std::chrono::steady_clock;
using client::Connection;

std::unique_ptr<Connection> open(const FlowConfig& cfg, const char* name,
                                 std::size_t max_unconfirmed = 16384) {
  return connect_or_report(cfg.host, cfg.port, name, max_unconfirmed);
}

/// A "Vm..." field of /proc/PID/status in MiB, or -1 when unknown.
double status_mib(pid_t pid, const char* field) {
  const long kib = status_kib(pid, field);
  return kib < 0 ? -1 : static_cast<double>(kib) / 1024.0;
}

}  // namespace

double peak_rss_mib(pid_t pid) {
  return status_mib(pid, "VmHWM");
}

namespace {

/// Counts one consumer's deliveries (sequence numbers in the first 8 bytes).
struct Counter {
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::int64_t> first_ns{0};
  std::atomic<std::int64_t> last_ns{0};
  void arrived() {
    const std::int64_t t = Clock::now().time_since_epoch().count();
    std::int64_t zero = 0;
    first_ns.compare_exchange_strong(zero, t);
    last_ns.store(t);
    received.fetch_add(1);
  }
};

bool wait_for(const std::function<bool()>& done, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace

int run_burst(const FlowConfig& cfg) {
  auto admin = open(cfg, "sluice-bench-admin");
  if (!admin) return 2;
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.3f", cfg.dispatch_rate);
  if (auto e = admin->configure(cfg.queue, {{"max_messages", std::to_string(cfg.capacity)},
                                            {"overflow", "block"},
                                            {"dispatch_rate", rate},
                                            {"dispatch_burst", "10"}})) {
    std::fprintf(stderr, "sluice-bench: configure: %s\n", e.to_string().c_str());
    return 2;
  }

  std::unique_ptr<std::atomic<std::uint8_t>[]> seen(new std::atomic<std::uint8_t>[cfg.burst]);
  for (std::uint64_t i = 0; i < cfg.burst; ++i) seen[i].store(0);
  std::atomic<std::uint64_t> unique{0}, duplicates{0};
  Counter all;
  std::vector<std::unique_ptr<Connection>> consumers;
  for (std::uint32_t c = 0; c < cfg.consumers; ++c) {
    consumers.push_back(open(cfg, "sluice-bench-consumer"));
    if (!consumers.back()) return 2;
    auto sub = consumers.back()->subscribe(cfg.queue, {.max_in_flight = cfg.in_flight},
                                           [&](const client::Delivery& d) {
                                             std::uint64_t seq = ~0ull;
                                             if (d.payload.size() >= 8)
                                               std::memcpy(&seq, d.payload.data(), 8);
                                             if (seq < cfg.burst && seen[seq].exchange(1) == 0)
                                               unique.fetch_add(1);
                                             else
                                               duplicates.fetch_add(1);
                                             all.arrived();
                                             return client::Disposition::ack;
                                           });
    if (!sub) return 2;
  }

  // Watch the depth (and, for --series, the broker's RSS) while it runs.
  std::atomic<bool> running{true};
  std::uint64_t peak_depth = 0;
  std::ofstream series;
  if (!cfg.series.empty()) series.open(cfg.series);
  const auto watch_start = Clock::now();
  std::thread watcher([&] {
    for (int tick = 0; running; ++tick) {
      if (auto s = admin->stats(cfg.queue); s && !s->empty()) {
        const auto& q = s->front();
        const std::uint64_t depth = q.ready + q.delayed + q.in_flight;
        peak_depth = std::max(peak_depth, depth);
        if (series.is_open() && tick % 4 == 0)
          series << std::chrono::duration<double>(Clock::now() - watch_start).count() << ' '
                 << depth << ' ' << status_mib(cfg.broker_pid, "VmRSS") << ' '
                 << all.received.load() / 10 << '\n';
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  // One producer, a small confirm window: when the broker stops reading it,
  // publish_async waits, and that wait is the time spent throttled.
  auto producer = open(cfg, "sluice-bench-producer", 1024);
  if (!producer) return 2;
  std::string payload(std::max<std::uint32_t>(cfg.size, 8), 'x');
  std::chrono::nanoseconds throttled{0};
  const auto start = Clock::now();
  for (std::uint64_t seq = 0; seq < cfg.burst; ++seq) {
    std::memcpy(payload.data(), &seq, 8);
    const auto before = Clock::now();
    producer->publish_async(cfg.queue, payload, nullptr);
    const auto took = Clock::now() - before;
    if (took > std::chrono::microseconds(50)) throttled += took;
  }
  const auto before_wait = Clock::now();
  producer->wait_confirms(std::chrono::minutes(10));
  throttled += Clock::now() - before_wait;
  const double publish_s = std::chrono::duration<double>(Clock::now() - start).count();

  wait_for([&] { return unique.load() >= cfg.burst; }, std::chrono::seconds(600));
  running = false;
  watcher.join();

  const double drain_s = static_cast<double>(all.last_ns - all.first_ns) / 1e9;
  const double drain_rate = drain_s > 0 ? static_cast<double>(all.received - 1) / drain_s : 0;
  const std::uint64_t lost = cfg.burst - unique.load();
  const double rss = peak_rss_mib(cfg.broker_pid);
  const double throttled_s = std::chrono::duration<double>(throttled).count();
  if (cfg.json) {
    std::printf(
        "{\"mode\":\"burst\",\"burst\":%llu,\"size\":%u,\"capacity\":%llu,"
        "\"configured_rate\":%.3f,\"peak_depth\":%llu,\"peak_rss_mib\":%.1f,"
        "\"producer_throttled_s\":%.3f,\"publish_s\":%.3f,\"drain_msgs_per_sec\":%.1f,"
        "\"lost\":%llu,\"duplicates\":%llu}\n",
        (unsigned long long)cfg.burst, cfg.size, (unsigned long long)cfg.capacity,
        cfg.dispatch_rate, (unsigned long long)peak_depth, rss, throttled_s, publish_s, drain_rate,
        (unsigned long long)lost, (unsigned long long)duplicates.load());
  } else {
    std::printf("%-26s %llu x %u bytes\n", "burst", (unsigned long long)cfg.burst, cfg.size);
    std::printf("%-26s %llu messages, overflow block\n", "queue capacity",
                (unsigned long long)cfg.capacity);
    std::printf("%-26s %llu\n", "peak depth", (unsigned long long)peak_depth);
    if (rss >= 0)
      std::printf("%-26s %.1f MiB\n", "peak broker RSS", rss);
    else
      std::printf("%-26s (pass --broker-pid)\n", "peak broker RSS");
    std::printf("%-26s %.3f s of %.3f s publishing\n", "producer throttled", throttled_s,
                publish_s);
    std::printf("%-26s %.1f msg/s (configured %.1f)\n", "drain rate", drain_rate,
                cfg.dispatch_rate);
    std::printf("%-26s lost %llu, duplicates %llu\n", "delivery", (unsigned long long)lost,
                (unsigned long long)duplicates.load());
  }
  return lost == 0 ? 0 : 1;
}

namespace {

/// One run: `messages` into a fresh queue; consumer A acks everything; with
/// `stuck`, consumer B subscribes first and stops reading at its first
/// delivery. Returns A's msg/s over the messages it got before B's leases ran
/// out, or a negative number when something failed.
double slow_consumer_run(const FlowConfig& cfg, const std::string& queue, std::uint64_t messages,
                         bool stuck) {
  auto producer = open(cfg, "sluice-bench-producer");
  if (!producer) return -1;
  std::string payload(cfg.size, 'x');
  for (std::uint64_t i = 0; i < messages; ++i) producer->publish_async(queue, payload, nullptr);
  producer->wait_confirms(std::chrono::minutes(5));

  // The stuck consumer speaks the protocol by hand: HELLO, SUBSCRIBE, and then
  // it never reads its socket again. The broker's outbound buffer for it
  // fills, and its leases (2 s) run out.
  int stuck_fd = -1;
  if (stuck) {
    stuck_fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(cfg.port);
    if (::inet_pton(AF_INET, cfg.host == "localhost" ? "127.0.0.1" : cfg.host.c_str(),
                    &addr.sin_addr) != 1 ||
        ::connect(stuck_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(stuck_fd);
      return -1;
    }
    std::string frames;
    protocol::encode_hello(frames, protocol::Hello{1, 1, "sluice-bench-stuck", ""});
    protocol::encode_subscribe(frames, protocol::Subscribe{1, 1, queue, cfg.in_flight, 2000, 0, 1});
    if (::send(stuck_fd, frames.data(), frames.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(frames.size())) {
      ::close(stuck_fd);
      return -1;
    }
  }
  // Both runs pause alike here (the stuck consumer takes its share meanwhile).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Counter a_count;
  auto a = open(cfg, "sluice-bench-consumer");
  if (!a) return -1;
  const auto start = Clock::now();
  auto sub = a->subscribe(queue, {.max_in_flight = cfg.in_flight}, [&](const client::Delivery&) {
    a_count.arrived();
    return client::Disposition::ack;
  });
  if (!sub) return -1;
  // What B holds comes to A only after B's leases expire: measure A up to then.
  const std::uint64_t target = stuck ? messages - cfg.in_flight : messages;
  wait_for([&] { return a_count.received.load() >= target; }, std::chrono::seconds(300));
  const double seconds =
      static_cast<double>(a_count.last_ns.load() - start.time_since_epoch().count()) / 1e9;
  const double rate = seconds > 0 ? static_cast<double>(a_count.received.load()) / seconds : -1;
  // Nothing lost: the rest reaches A once B's leases expire.
  const bool all =
      wait_for([&] { return a_count.received.load() >= messages; }, std::chrono::seconds(30));
  if (stuck_fd >= 0) ::close(stuck_fd);
  return all ? rate : -1;
}

}  // namespace

int run_slow_consumer(const FlowConfig& cfg) {
  const std::uint64_t messages = cfg.burst;
  // A first run warms the broker (its message slots are allocated once, then
  // reused), so the two measured runs start alike.
  slow_consumer_run(cfg, cfg.queue + "-warmup", messages, false);
  const double alone = slow_consumer_run(cfg, cfg.queue + "-alone", messages, false);
  const double beside = slow_consumer_run(cfg, cfg.queue + "-beside", messages, true);
  if (alone <= 0 || beside <= 0) {
    std::fprintf(stderr, "sluice-bench: slow-consumer run failed (messages lost or stuck)\n");
    return 1;
  }
  const double slowdown = (1 - beside / alone) * 100;
  if (cfg.json) {
    std::printf(
        "{\"mode\":\"slow-consumer\",\"messages\":%llu,\"size\":%u,\"in_flight\":%u,"
        "\"alone_msgs_per_sec\":%.0f,\"beside_stuck_msgs_per_sec\":%.0f,\"slowdown_pct\":%.1f}\n",
        (unsigned long long)messages, cfg.size, cfg.in_flight, alone, beside, slowdown);
  } else {
    std::printf("%-34s %llu x %u bytes, %u in flight\n", "messages", (unsigned long long)messages,
                cfg.size, cfg.in_flight);
    std::printf("%-34s %.0f msg/s\n", "consumer alone", alone);
    std::printf("%-34s %.0f msg/s\n", "beside a consumer that stopped", beside);
    std::printf("%-34s %.1f %%\n", "slowdown", slowdown);
  }
  return 0;
}

int run_rate_limit(const FlowConfig& cfg) {
  struct Step {
    double rate, window_s;
  };
  // Long enough windows that one delivery more or less is a small error.
  const Step steps[] = {{1, 8}, {10, 5}, {100, 4}, {1000, 3}, {10000, 3}, {100000, 3}};
  auto admin = open(cfg, "sluice-bench-admin");
  auto producer = open(cfg, "sluice-bench-producer");
  if (!admin || !producer) return 2;
  std::string json = "{\"mode\":\"rate-limit\",\"rates\":[";
  if (!cfg.json)
    std::printf("%14s %14s %9s %10s %8s %6s\n", "configured/s", "achieved/s", "error", "delivered",
                "window", "burst");
  bool all_ok = true;
  for (const Step& step : steps) {
    // The bucket holds 10 ms of tokens (at least one): deliveries after the
    // first `burst` show the steady rate.
    const auto burst = static_cast<std::uint64_t>(std::max(1.0, step.rate / 100));
    const std::string queue = cfg.queue + "-rate" + std::to_string(static_cast<long>(step.rate));
    if (auto e = admin->configure(queue,
                                  {{"dispatch_rate", std::to_string(static_cast<long>(step.rate))},
                                   {"dispatch_burst", std::to_string(burst)}})) {
      std::fprintf(stderr, "sluice-bench: configure: %s\n", e.to_string().c_str());
      return 2;
    }
    // A backlog that outlasts the window: the queue is never empty while measured.
    const auto backlog = static_cast<std::uint64_t>(step.rate * step.window_s * 1.5) + burst + 10;
    std::string payload(cfg.size, 'x');
    for (std::uint64_t i = 0; i < backlog; ++i) producer->publish_async(queue, payload, nullptr);
    producer->wait_confirms(std::chrono::minutes(1));

    std::vector<std::int64_t> got;
    got.reserve(backlog);
    {
      // A connection of its own per rate: closing it (joining its I/O thread)
      // ends the handler's use of `got`.
      auto consumer = open(cfg, "sluice-bench-consumer");
      if (!consumer) return 2;
      auto sub = consumer->subscribe(queue, {.max_in_flight = 1000}, [&](const client::Delivery&) {
        got.push_back(Clock::now().time_since_epoch().count());
        return client::Disposition::ack;
      });
      if (!sub) return 2;
      std::this_thread::sleep_for(std::chrono::duration<double>(step.window_s));
    }
    // Rate over the deliveries after the burst: (n - 1) intervals.
    double achieved = 0, window = 0;
    std::uint64_t counted = 0;
    if (got.size() > burst + 1) {
      counted = got.size() - burst;
      window = static_cast<double>(got.back() - got[burst]) / 1e9;
      achieved = window > 0 ? static_cast<double>(counted - 1) / window : 0;
    }
    const double error_pct = step.rate > 0 ? (achieved / step.rate - 1) * 100 : 0;
    all_ok = all_ok && counted > 1;
    char row[256];
    std::snprintf(row, sizeof row,
                  "%s{\"configured\":%.0f,\"achieved\":%.3f,\"error_pct\":%.3f,\"delivered\":%zu,"
                  "\"burst\":%llu,\"window_s\":%.3f}",
                  &step == steps ? "" : ",", step.rate, achieved, error_pct, got.size(),
                  static_cast<unsigned long long>(burst), window);
    json += row;
    if (!cfg.json)
      std::printf("%14.0f %14.2f %+8.2f%% %10zu %7.2fs %6llu\n", step.rate, achieved, error_pct,
                  got.size(), window, static_cast<unsigned long long>(burst));
  }
  json += "]}";
  if (cfg.json) std::printf("%s\n", json.c_str());
  return all_ok ? 0 : 1;
}

}  // namespace sluice::bench
