#include "metrics.hpp"

#include "triggers.hpp"

#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <limits>

#include "durable_store.hpp"
#include "engine.hpp"
#include "http_server.hpp"
#include "broker.hpp"
#include "listener.hpp"

namespace sluice::net {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily& family(std::vector<MetricFamily>& out, std::string name, std::string help,
                     MetricType type) {
  out.push_back({std::move(name), std::move(help), type, {}});
  return out.back();
}

ClientMetric& sample(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric& m = f.metric.emplace_back();
  m.label = std::move(labels);
  if (f.type == MetricType::Counter)
    m.counter.value = value;
  else
    m.gauge.value = value;
  return m;
}

/// `per_unit`: observations per exposed unit (1e6 for µs → seconds). A
/// division, so bounds like 100 µs come out as 0.0001 exactly.
void histogram(MetricFamily& f, std::vector<ClientMetric::Label> labels, const engine::Histogram& h,
               double per_unit) {
  ClientMetric& m = f.metric.emplace_back();
  m.label = std::move(labels);
  m.histogram.sample_count = h.count();
  m.histogram.sample_sum = static_cast<double>(h.sum()) / per_unit;
  std::uint64_t cumulative = 0;
  const auto& counts = h.counts();
  for (std::size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += counts[i];
    m.histogram.bucket.push_back({cumulative, static_cast<double>(h.bounds()[i]) / per_unit});
  }
  m.histogram.bucket.push_back({h.count(), std::numeric_limits<double>::infinity()});
}

double resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) : 0;
}

constexpr double kMicro = 1e-6;
constexpr double kMicrosPerSecond = 1e6;

}  // namespace

std::vector<MetricFamily> Metrics::Collect() const {
  std::vector<MetricFamily> out;
  auto queues = engine_.queues();
  std::sort(queues.begin(), queues.end(),
            [](const auto* a, const auto* b) { return a->name() < b->name(); });
  const auto counter = [&](const char* name, const char* help, auto value_of) {
    MetricFamily& f = family(out, name, help, MetricType::Counter);
    for (const engine::Queue* q : queues)
      sample(f, {{"queue", q->name()}}, static_cast<double>(value_of(*q)));
  };
  const auto gauge = [&](const char* name, const char* help, auto value_of) {
    MetricFamily& f = family(out, name, help, MetricType::Gauge);
    for (const engine::Queue* q : queues)
      sample(f, {{"queue", q->name()}}, static_cast<double>(value_of(*q)));
  };
  using Q = const engine::Queue&;
  counter("sluice_queue_published_total", "Messages accepted into the queue (duplicates excluded).",
          [](Q q) { return q.counters().published_total; });
  counter("sluice_queue_delivered_total", "Deliveries to consumers (retries included).",
          [](Q q) { return q.counters().delivered_total; });
  counter("sluice_queue_acked_total", "Deliveries acknowledged.",
          [](Q q) { return q.counters().acked_total; });
  counter("sluice_queue_nacked_total", "Deliveries given back by a nack.",
          [](Q q) { return q.counters().nacked_total; });
  counter("sluice_queue_retried_total", "Failed attempts given another try after a backoff.",
          [](Q q) { return q.counters().retried_total; });
  counter("sluice_queue_dead_lettered_total", "Messages moved to the dead-letter queue.",
          [](Q q) { return q.counters().dead_lettered_total; });
  counter("sluice_queue_lease_expired_total", "Leases that ran out before an ack.",
          [](Q q) { return q.counters().expired_total; });
  counter("sluice_queue_requeued_total", "Deliveries returned at once because the consumer left.",
          [](Q q) { return q.counters().requeued_total; });
  counter("sluice_queue_duplicates_total",
          "Publishes not enqueued again (dedup id or sequence number seen before).",
          [](Q q) { return q.counters().duplicates_total; });
  counter("sluice_queue_dedup_evicted_total",
          "Dedup ids forgotten before their window ended (dedup_max_entries reached).",
          [](Q q) { return q.dedup_evicted(); });
  counter("sluice_queue_sequence_gaps_total",
          "Sequence gaps the resequencer gave up waiting for (gap_timeout).",
          [](Q q) { return q.sequence_gaps(); });
  counter("sluice_queue_publish_refused_total",
          "Publishes refused with queue_full by a queue with overflow = reject (HTTP included).",
          [](Q q) { return q.counters().refused_total; });
  counter("sluice_queue_publish_blocked_total",
          "Times a publishing connection was blocked (overflow = block).",
          [](Q q) { return q.counters().blocked_total; });
  {
    MetricFamily& f =
        family(out, "sluice_queue_publish_throttled_total",
               "Publishes held back (blocked or refused), by reason.", MetricType::Counter);
    static constexpr const char* kReasons[engine::kThrottleReasons] = {"capacity", "memory",
                                                                       "storage", "rate"};
    for (const engine::Queue* q : queues)
      for (std::size_t r = 0; r < engine::kThrottleReasons; ++r)
        sample(f, {{"queue", q->name()}, {"reason", kReasons[r]}},
               static_cast<double>(q->counters().throttled_total[r]));
  }
  counter("sluice_queue_rate_limit_wait_seconds_total",
          "Time dispatch waited for the queue's dispatch rate.",
          [](Q q) { return static_cast<double>(q.counters().rate_wait_us_total) * kMicro; });
  {
    MetricFamily& f =
        family(out, "sluice_queue_messages", "Messages held, by state.", MetricType::Gauge);
    for (const engine::Queue* q : queues) {
      const auto& c = q->counters();
      const std::pair<const char*, std::uint64_t> states[] = {
          {"ready", c.ready},   {"delayed", c.delayed}, {"in_flight", c.in_flight},
          {"staged", c.staged}, {"held", c.held},       {"dead_lettering", c.dead_lettering}};
      for (const auto& [state, n] : states)
        sample(f, {{"queue", q->name()}, {"state", state}}, static_cast<double>(n));
    }
  }
  gauge("sluice_queue_bytes", "Encoded bytes of the messages held.",
        [](Q q) { return q.counters().bytes; });
  gauge("sluice_queue_max_messages", "The queue's capacity in messages (max_messages).",
        [](Q q) { return q.options().max_messages; });
  gauge("sluice_queue_pressure_ratio",
        "How full the queue is against its high watermark, 0 to 1 (the producers' hint).",
        [](Q q) { return q.pressure() / 100.0; });
  gauge("sluice_queue_consumers", "Consumers subscribed (HTTP receives while they wait).",
        [](Q q) { return q.consumer_count(); });
  {
    const std::int64_t wall_now = wall_us();
    gauge("sluice_queue_oldest_ready_age_seconds",
          "Age of the oldest message ready for delivery (0 when none is): the consumer lag.",
          [&](Q q) {
            const std::int64_t t = engine_.oldest_ready_wall_us(q);
            return t == 0 ? 0.0
                          : static_cast<double>(std::max<std::int64_t>(0, wall_now - t)) * kMicro;
          });
  }
  if (store_ != nullptr) {
    gauge("sluice_queue_dead_letters", "Entries in the queue's dead-letter queue.",
          [&](Q q) { return store_->dead_letters().count(q.name()); });
    gauge("sluice_queue_redriving", "Dead letters waiting to be redriven.",
          [&](Q q) { return store_->dead_letters().redriving(q.name()); });
  }
  {
    MetricFamily& f =
        family(out, "sluice_queue_delivery_latency_seconds",
               "Publish to first delivery (including a delay the producer asked for).",
               MetricType::Histogram);
    for (const engine::Queue* q : queues)
      histogram(f, {{"queue", q->name()}}, q->delivery_latency(), kMicrosPerSecond);
  }
  {
    MetricFamily& f = family(out, "sluice_queue_processing_seconds",
                             "Delivery to ack: how long consumers take.", MetricType::Histogram);
    for (const engine::Queue* q : queues)
      histogram(f, {{"queue", q->name()}}, q->processing_time(), kMicrosPerSecond);
  }

  // Broker-wide.
  const auto single = [&](const char* name, const char* help, MetricType type, double value,
                          std::vector<ClientMetric::Label> labels = {}) {
    sample(family(out, name, help, type), std::move(labels), value);
  };
  single("sluice_build_info", "Always 1; the version as a label.", MetricType::Gauge, 1,
         {{"version", SLUICE_VERSION}});
  single("sluice_ready", "1 once recovery is done and the listeners are up.", MetricType::Gauge,
         ready_ ? 1 : 0);
  {
    MetricFamily& f =
        family(out, "sluice_connections", "Open client connections.", MetricType::Gauge);
    if (protocol_ != nullptr)
      sample(f, {{"listener", "protocol"}}, static_cast<double>(protocol_->connections()));
    if (http_ != nullptr)
      sample(f, {{"listener", "http"}}, static_cast<double>(http_->connections()));
  }
  {
    MetricFamily& f = family(out, "sluice_connections_closed_total",
                             "Connections that ended, by listener and why.", MetricType::Counter);
    for (std::size_t i = 0; i < kCloseReasons; ++i) {
      const auto reason = static_cast<CloseReason>(i);
      const std::string why(to_string(reason));
      if (protocol_ != nullptr)
        sample(f, {{"listener", "protocol"}, {"reason", why}},
               static_cast<double>(protocol_->closed(reason)));
      if (http_ != nullptr)
        sample(f, {{"listener", "http"}, {"reason", why}},
               static_cast<double>(http_->closed(reason)));
    }
  }
  if (const Triggers* triggers = broker_.triggers();
      triggers != nullptr && !triggers->running().empty()) {
    // One family at a time: a family is a reference into `out`, which the next one may move.
    const auto per_trigger = [&](const char* name, const char* help, MetricType type,
                                 const auto& fill) {
      MetricFamily& f = family(out, name, help, type);
      for (const auto& [trigger_name, trigger] : triggers->running())
        fill(f, trigger_name, *trigger);
    };
    per_trigger("sluice_trigger_invocations_total",
                "Invocations of a trigger's function, by outcome.", MetricType::Counter,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  for (std::size_t i = 0; i < kInvocationOutcomes; ++i) {
                    const auto outcome = static_cast<InvocationOutcome>(i);
                    sample(f, {{"trigger", name}, {"outcome", std::string(to_string(outcome))}},
                           static_cast<double>(t.invocations(outcome)));
                  }
                });
    per_trigger("sluice_trigger_messages_total", "Messages sent to a trigger's function.",
                MetricType::Counter,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  sample(f, {{"trigger", name}}, static_cast<double>(t.messages_sent()));
                });
    per_trigger("sluice_trigger_invocation_seconds", "How long invocations took, answered or not.",
                MetricType::Histogram,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  histogram(f, {{"trigger", name}}, t.durations(), kMicrosPerSecond);
                });
    per_trigger("sluice_trigger_batch_messages", "Messages per invocation.", MetricType::Histogram,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  histogram(f, {{"trigger", name}}, t.batch_sizes(), 1);
                });
    per_trigger("sluice_trigger_concurrency_limit", "Invocations a trigger may have in flight.",
                MetricType::Gauge, [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  sample(f, {{"trigger", name}}, static_cast<double>(t.limit()));
                });
    per_trigger("sluice_trigger_in_flight", "Invocations in flight.", MetricType::Gauge,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  sample(f, {{"trigger", name}}, static_cast<double>(t.in_flight()));
                });
    per_trigger("sluice_trigger_breaker_state",
                "The circuit breaker: 0 closed, 1 open, 2 half-open.", MetricType::Gauge,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  sample(f, {{"trigger", name}}, static_cast<double>(t.breaker()));
                });
    per_trigger("sluice_trigger_breaker_transitions_total",
                "Times the circuit breaker went to a state.", MetricType::Counter,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  for (std::size_t i = 0; i < kBreakerStates; ++i) {
                    const auto state = static_cast<BreakerState>(i);
                    sample(f, {{"trigger", name}, {"to", std::string(to_string(state))}},
                           static_cast<double>(t.transitions(state)));
                  }
                });
    per_trigger("sluice_trigger_breaker_open_seconds_total", "Time the circuit breaker spent open.",
                MetricType::Counter,
                [&](MetricFamily& f, const std::string& name, const Trigger& t) {
                  sample(f, {{"trigger", name}}, t.open_seconds());
                });
  }
  single("sluice_queues", "Queues that exist.", MetricType::Gauge,
         static_cast<double>(engine_.queue_count()));
  single("sluice_memory_used_bytes", "Message memory in use (encoded bytes + 128 per message).",
         MetricType::Gauge, static_cast<double>(engine_.memory_used()));
  single("sluice_memory_limit_bytes", "limits.memory (0: none).", MetricType::Gauge,
         static_cast<double>(engine_.memory_limit()));
  single("sluice_process_resident_memory_bytes", "Resident set size of sluiced.", MetricType::Gauge,
         resident_bytes());
  if (store_ != nullptr) {
    const StorageStats s = store_->stats();
    single("sluice_storage_file_bytes", "Size of the LMDB data file.", MetricType::Gauge,
           static_cast<double>(s.usage.file_bytes()));
    single("sluice_storage_used_bytes", "Bytes of the data file in use (free pages excluded).",
           MetricType::Gauge, static_cast<double>(s.usage.used_bytes()));
    single("sluice_storage_limit_bytes", "storage.max_size.", MetricType::Gauge,
           static_cast<double>(s.limit));
    single("sluice_storage_full", "1 while new records wait for room (publishes push back).",
           MetricType::Gauge, s.full ? 1 : 0);
    single("sluice_storage_commits_total", "Storage transactions committed.", MetricType::Counter,
           static_cast<double>(s.commits.commits));
    single("sluice_storage_operations_total", "Storage operations committed.", MetricType::Counter,
           static_cast<double>(s.commits.operations));
    single("sluice_storage_commit_failures_total", "Storage transactions that failed (retried).",
           MetricType::Counter, static_cast<double>(s.commits.failures));
    histogram(family(out, "sluice_storage_commit_duration_seconds",
                     "One group commit, begin to durable (fsync included).", MetricType::Histogram),
              {}, store_->commit_duration(), kMicrosPerSecond);
    histogram(family(out, "sluice_storage_commit_batch_operations", "Operations per group commit.",
                     MetricType::Histogram),
              {}, store_->commit_batch(), 1.0);
  }
  return out;
}

Metrics::Metrics(const Broker& broker)
    : broker_(broker), engine_(broker.engine()), store_(broker.store()) {}

std::string Metrics::scrape() const {
  return prometheus::TextSerializer().Serialize(Collect());
}

}  // namespace sluice::net
