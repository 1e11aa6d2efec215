// Scale scenarios of sluice-bench: many queues on one broker, and many
// consumer connections on one queue.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "flow_scenarios.hpp"
#include "sluice/client/client.hpp"

namespace sluice::bench {
namespace {

using Clock = std::chrono::steady_clock;
using client::Connection;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// Current resident size of `pid` in MiB (VmRSS), or -1 when unknown.
double rss_mib(pid_t pid) {
  if (pid <= 0) return -1;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

/// Each connection is a client I/O thread with a socket, an epoll and an
/// eventfd: a thousand of them need more descriptors than the usual 1024.
void raise_descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int run_queues(const FlowConfig& cfg) {
  constexpr std::uint32_t kConsumers = 4, kPerQueue = 10;
  const std::uint32_t queues = cfg.queues;
  const std::uint64_t messages = std::uint64_t{queues} * kPerQueue;
  auto name = [&](std::uint32_t q) { return cfg.queue + "-" + std::to_string(q); };
  std::unique_ptr<std::atomic<std::uint8_t>[]> seen(new std::atomic<std::uint8_t>[messages]);
  for (std::uint64_t i = 0; i < messages; ++i) seen[i].store(0);
  std::atomic<std::uint64_t> unique{0}, duplicates{0};
  std::atomic<std::int64_t> last_ns{0};

  // Consumer c subscribes to every queue q with q % 4 == c (which creates it).
  std::vector<std::unique_ptr<Connection>> consumers;
  const double rss_before = rss_mib(cfg.broker_pid);
  const auto subscribe_start = Clock::now();
  for (std::uint32_t c = 0; c < kConsumers; ++c) {
    consumers.push_back(connect_or_report(cfg.host, cfg.port, "sluice-bench-consumer"));
    if (!consumers.back()) return 2;
    for (std::uint32_t q = c; q < queues; q += kConsumers) {
      auto sub = consumers.back()->subscribe(
          name(q), {.max_in_flight = 16}, [&](const client::Delivery& d) {
            std::uint64_t seq = ~0ull;
            if (d.payload.size() >= 8) std::memcpy(&seq, d.payload.data(), 8);
            if (seq < messages && seen[seq].exchange(1) == 0)
              unique.fetch_add(1);
            else
              duplicates.fetch_add(1);
            last_ns.store(Clock::now().time_since_epoch().count());
            return client::Disposition::ack;
          });
      if (!sub) {
        std::fprintf(stderr, "sluice-bench: subscribe %s: %s\n", name(q).c_str(),
                     sub.error().to_string().c_str());
        return 2;
      }
    }
  }
  const double subscribe_s = seconds_since(subscribe_start);
  const double rss_idle = rss_mib(cfg.broker_pid);

  auto producer = connect_or_report(cfg.host, cfg.port, "sluice-bench-producer");
  if (!producer) return 2;
  std::string payload(std::max<std::uint32_t>(cfg.size, 8), 'x');
  const auto start = Clock::now();
  for (std::uint32_t round = 0; round < kPerQueue; ++round)
    for (std::uint32_t q = 0; q < queues; ++q) {
      const std::uint64_t seq = std::uint64_t{round} * queues + q;
      std::memcpy(payload.data(), &seq, 8);
      producer->publish_async(name(q), payload, nullptr);
    }
  producer->wait_confirms(std::chrono::minutes(5));
  const double publish_s = seconds_since(start);
  wait_for_count(unique, messages);
  const double end_to_end_s =
      static_cast<double>(last_ns.load() - start.time_since_epoch().count()) / 1e9;
  const std::uint64_t lost = messages - unique.load();
  const double peak = peak_rss_mib(cfg.broker_pid);
  const double publish_rate = static_cast<double>(messages) / publish_s;
  const double consume_rate =
      end_to_end_s > 0 ? static_cast<double>(unique.load()) / end_to_end_s : 0;
  if (cfg.json) {
    std::printf(
        "{\"mode\":\"queues\",\"queues\":%u,\"messages\":%llu,\"size\":%u,\"subscribe_s\":%.3f,"
        "\"publish_msgs_per_sec\":%.0f,\"consume_msgs_per_sec\":%.0f,\"rss_before_mib\":%.1f,"
        "\"rss_idle_mib\":%.1f,\"peak_rss_mib\":%.1f,\"lost\":%llu,\"duplicates\":%llu}\n",
        queues, (unsigned long long)messages, cfg.size, subscribe_s, publish_rate, consume_rate,
        rss_before, rss_idle, peak, (unsigned long long)lost,
        (unsigned long long)duplicates.load());
  } else {
    std::printf("%-30s %u, %u messages each (%llu)\n", "queues", queues, kPerQueue,
                (unsigned long long)messages);
    std::printf("%-30s %.3f s (4 connections)\n", "subscribe to every queue", subscribe_s);
    std::printf("%-30s %.1f MiB before, %.1f MiB with the queues, %.1f MiB peak\n", "broker RSS",
                rss_before, rss_idle, peak);
    std::printf("%-30s %.0f msg/s confirmed, %.0f msg/s end to end\n", "rates", publish_rate,
                consume_rate);
    std::printf("%-30s lost %llu, duplicates %llu\n", "delivery", (unsigned long long)lost,
                (unsigned long long)duplicates.load());
  }
  return lost == 0 ? 0 : 1;
}

int run_connections(const FlowConfig& cfg) {
  raise_descriptor_limit();
  constexpr std::uint32_t kCredit = 8;
  const std::uint32_t n = cfg.connections;
  const std::uint64_t messages = cfg.burst;
  std::unique_ptr<std::atomic<std::uint8_t>[]> seen(new std::atomic<std::uint8_t>[messages]);
  for (std::uint64_t i = 0; i < messages; ++i) seen[i].store(0);
  std::atomic<std::uint64_t> unique{0}, duplicates{0};
  std::atomic<std::int64_t> last_ns{0};
  std::vector<std::atomic<std::uint64_t>> per_consumer(n);

  struct Subscriber {
    std::unique_ptr<Connection> connection;
    std::uint32_t subscription = 0;
  };
  std::vector<Subscriber> subscribers(n);
  const auto connect_start = Clock::now();
  for (std::uint32_t c = 0; c < n; ++c) {
    subscribers[c].connection = connect_or_report(cfg.host, cfg.port, "sluice-bench-consumer");
    if (!subscribers[c].connection) return 2;
    auto sub = subscribers[c].connection->subscribe(
        cfg.queue, {.max_in_flight = kCredit}, [&, c](const client::Delivery& d) {
          std::uint64_t seq = ~0ull;
          if (d.payload.size() >= 8) std::memcpy(&seq, d.payload.data(), 8);
          if (seq < messages && seen[seq].exchange(1) == 0)
            unique.fetch_add(1);
          else
            duplicates.fetch_add(1);
          per_consumer[c].fetch_add(1, std::memory_order_relaxed);
          last_ns.store(Clock::now().time_since_epoch().count());
          return client::Disposition::ack;
        });
    if (!sub) {
      std::fprintf(stderr, "sluice-bench: subscribe (connection %u): %s\n", c,
                   sub.error().to_string().c_str());
      return 2;
    }
    subscribers[c].subscription = *sub;
  }
  const double connect_s = seconds_since(connect_start);
  const double rss_idle = rss_mib(cfg.broker_pid);

  auto producer = connect_or_report(cfg.host, cfg.port, "sluice-bench-producer");
  if (!producer) return 2;
  std::string payload(std::max<std::uint32_t>(cfg.size, 8), 'x');
  const auto start = Clock::now();
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    std::memcpy(payload.data(), &seq, 8);
    producer->publish_async(cfg.queue, payload, nullptr);
  }
  producer->wait_confirms(std::chrono::minutes(5));
  wait_for_count(unique, messages);
  const double elapsed =
      static_cast<double>(last_ns.load() - start.time_since_epoch().count()) / 1e9;
  for (auto& s : subscribers) s.connection->ping();  // the last acks are out
  std::uint64_t fewest = ~0ull, most = 0, peak_held = 0;
  for (std::uint32_t c = 0; c < n; ++c) {
    fewest = std::min<std::uint64_t>(fewest, per_consumer[c].load());
    most = std::max<std::uint64_t>(most, per_consumer[c].load());
    peak_held = std::max(
        peak_held,
        subscribers[c].connection->subscription_stats(subscribers[c].subscription).peak_held);
  }
  const std::uint64_t lost = messages - unique.load();
  const double rate = elapsed > 0 ? static_cast<double>(unique.load()) / elapsed : 0;
  const double peak = peak_rss_mib(cfg.broker_pid);
  const bool credit_ok = peak_held <= kCredit;
  if (cfg.json) {
    std::printf(
        "{\"mode\":\"connections\",\"connections\":%u,\"messages\":%llu,\"size\":%u,"
        "\"credit\":%u,\"connect_s\":%.3f,\"msgs_per_sec\":%.0f,\"min_per_consumer\":%llu,"
        "\"max_per_consumer\":%llu,\"peak_held\":%llu,\"credit_respected\":%s,"
        "\"rss_idle_mib\":%.1f,\"peak_rss_mib\":%.1f,\"lost\":%llu,\"duplicates\":%llu}\n",
        n, (unsigned long long)messages, cfg.size, kCredit, connect_s, rate,
        (unsigned long long)fewest, (unsigned long long)most, (unsigned long long)peak_held,
        credit_ok ? "true" : "false", rss_idle, peak, (unsigned long long)lost,
        (unsigned long long)duplicates.load());
  } else {
    std::printf("%-28s %u, credit %u each\n", "consumer connections", n, kCredit);
    std::printf("%-28s %.3f s\n", "connect and subscribe", connect_s);
    std::printf("%-28s %.0f msg/s (%llu messages)\n", "end to end", rate,
                (unsigned long long)messages);
    std::printf("%-28s fewest %llu, most %llu\n", "per consumer", (unsigned long long)fewest,
                (unsigned long long)most);
    std::printf("%-28s %llu of %u: %s\n", "peak held", (unsigned long long)peak_held, kCredit,
                credit_ok ? "respected" : "EXCEEDED");
    std::printf("%-28s %.1f MiB idle, %.1f MiB peak\n", "broker RSS", rss_idle, peak);
    std::printf("%-28s lost %llu, duplicates %llu\n", "delivery", (unsigned long long)lost,
                (unsigned long long)duplicates.load());
  }
  return lost == 0 && credit_ok ? 0 : 1;
}

}  // namespace sluice::bench
