// How sluicectl prints the broker's answers: the stats table, the storage
// line, and what a dead-letter operation returned.
#include "output.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace sluicectl {

namespace {

/// How long ago a Unix time in µs was, roughly: "45s", "12m", "5h", "3d".
std::string age_of(std::int64_t wall_us) {
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const std::int64_t s = std::max<std::int64_t>(0, (now - wall_us) / 1'000'000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

}  // namespace

void print_queue_stats(const std::vector<sluice::client::QueueStats>& queues) {
  std::printf("%-24s %10s %8s %10s %9s %12s %12s %12s %10s %10s %8s %10s %10s\n", "QUEUE", "READY",
              "DELAYED", "IN_FLIGHT", "CONSUMERS", "PUBLISHED", "DELIVERED", "ACKED", "NACKED",
              "EXPIRED", "PRESSURE", "REFUSED", "DEAD");
  for (const auto& q : queues) {
    std::printf(
        "%-24s %10llu %8llu %10llu %9llu %12llu %12llu %12llu %10llu %10llu %7llu%% %10llu "
        "%10llu\n",
        q.name.c_str(), (unsigned long long)q.ready, (unsigned long long)q.delayed,
        (unsigned long long)q.in_flight, (unsigned long long)q.consumers,
        (unsigned long long)q.published_total, (unsigned long long)q.delivered_total,
        (unsigned long long)q.acked_total, (unsigned long long)q.nacked_total,
        (unsigned long long)q.expired_total, (unsigned long long)q.pressure,
        (unsigned long long)q.refused_total, (unsigned long long)q.dead_letters);
  }
}

void print_storage_stats(const sluice::client::StorageStats& s) {
  const auto mib = [](std::uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
  std::printf(
      "\nSTORAGE  file %.1f MiB, used %.1f MiB of %.1f MiB (%.0f%%), %llu commits, %llu "
      "operations, median batch %llu, waiting %llu%s\n",
      mib(s.file_bytes), mib(s.used_bytes), mib(s.limit_bytes),
      s.limit_bytes ? 100.0 * static_cast<double>(s.used_bytes) / static_cast<double>(s.limit_bytes)
                    : 0.0,
      (unsigned long long)s.commits_total, (unsigned long long)s.operations_total,
      (unsigned long long)s.median_batch, (unsigned long long)s.waiting,
      s.full ? ", FULL: durable queues push back on publishers" : "");
}

void print_dead_letters(const sluice::client::DeadLetterQuery& q,
                        const sluice::client::DeadLetterResult& result) {
  using Op = sluice::client::DeadLetterQuery::Op;
  switch (q.op) {
    case Op::list:
      for (const auto& e : result.entries)
        std::printf("%llu %llu %u %s %s\n", (unsigned long long)e.entry_id,
                    (unsigned long long)e.message_id, e.attempts, age_of(e.last_failure_us).c_str(),
                    e.reason.empty() ? "-" : e.reason.c_str());
      if (result.next_after != 0)
        std::printf("next: --after %llu\n", (unsigned long long)result.next_after);
      std::fprintf(stderr, "%llu dead letters in %s\n", (unsigned long long)result.affected,
                   q.queue.c_str());
      break;
    case Op::show:
      for (const auto& e : result.entries) {
        std::printf("entry %llu\nmessage %llu\nqueue %s\nattempts %u\nreason %s\n",
                    (unsigned long long)e.entry_id, (unsigned long long)e.message_id,
                    e.queue.c_str(), e.attempts, e.reason.c_str());
        std::printf("published %s ago\nfirst failure %s ago\nlast failure %s ago\n",
                    age_of(e.publish_time_us).c_str(), age_of(e.first_failure_us).c_str(),
                    age_of(e.last_failure_us).c_str());
        for (const auto& [k, v] : e.message.headers)
          std::printf("header %s=%s\n", k.c_str(), v.c_str());
        std::printf("payload %s\n", e.message.payload.c_str());
      }
      break;
    case Op::redrive:
      std::printf("redriving %llu\n", (unsigned long long)result.affected);
      break;
    case Op::remove:
    case Op::purge:
      std::printf("deleted %llu\n", (unsigned long long)result.affected);
      break;
  }
}

void print_triggers(const std::vector<sluice::client::TriggerState>& triggers) {
  std::printf("%-20s %-20s %-8s %-9s %6s %9s %12s %12s %10s  %s\n", "TRIGGER", "QUEUE", "STATE",
              "BREAKER", "LIMIT", "IN_FLIGHT", "SENT", "OK", "FAILED", "URL");
  for (const auto& t : triggers) {
    // Every outcome but ok is an invocation that did not succeed.
    std::uint64_t ok = 0, failed = 0;
    for (std::size_t i = 0; i < t.invocations.size(); ++i)
      (i == 0 ? ok : failed) += t.invocations[i];
    std::printf("%-20s %-20s %-8s %-9s %6u %9u %12llu %12llu %10llu  %s\n", t.name.c_str(),
                t.queue.c_str(), t.paused ? "paused" : "running", t.breaker.c_str(),
                t.concurrency_limit, t.in_flight, (unsigned long long)t.messages_sent,
                (unsigned long long)ok, (unsigned long long)failed, t.url.c_str());
  }
}

}  // namespace sluicectl
