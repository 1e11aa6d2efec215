#include "metrics.hpp"

#include "triggers.hpp"

#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "durable_store.hpp"
#include "engine.hpp"
#include "http_api.hpp"
#include "http_server.hpp"
#include "broker.hpp"
#include "listener.hpp"
#include "sluice/config/settings.hpp"

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
/// division, so bounds like 100 µs come out as 0.0001 exactly. Several
/// histograms (of one bound set) are summed into one series.
void histogram(MetricFamily& f, std::vector<ClientMetric::Label> labels,
               const std::vector<const engine::Histogram*>& hs, double per_unit) {
  ClientMetric& m = f.metric.emplace_back();
  m.label = std::move(labels);
  std::uint64_t count = 0, sum = 0;
  for (const auto* h : hs) count += h->count(), sum += h->sum();
  m.histogram.sample_count = count;
  m.histogram.sample_sum = static_cast<double>(sum) / per_unit;
  const auto& bounds = hs.front()->bounds();
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    for (const auto* h : hs) cumulative += h->counts()[i];
    m.histogram.bucket.push_back({cumulative, static_cast<double>(bounds[i]) / per_unit});
  }
  m.histogram.bucket.push_back({count, std::numeric_limits<double>::infinity()});
}

void histogram(MetricFamily& f, std::vector<ClientMetric::Label> labels, const engine::Histogram& h,
               double per_unit) {
  histogram(f, std::move(labels), std::vector<const engine::Histogram*>{&h}, per_unit);
}

/// The queues of one `queue` label: one queue, or (queue="_other") those
/// metrics.per_queue leaves out, summed.
struct QueueGroup {
  std::string label;
  std::vector<const engine::Queue*> queues;
};

/// What the standard process_* metrics report, from /proc (Linux).
struct ProcessStats {
  double cpu_seconds = 0;
  double start_time_seconds = 0;  // Unix time
  double virtual_bytes = 0;
  double resident_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;
};

ProcessStats process_stats() {
  ProcessStats p;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  if (std::FILE* f = std::fopen("/proc/self/stat", "r")) {
    char buf[1024];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // Fields after the command's closing parenthesis: 3 state ... 14 utime, 15 stime,
    // 22 starttime (ticks after boot), 23 vsize (bytes), 24 rss (pages).
    if (const char* rest = std::strrchr(buf, ')')) {
      unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
      long long rss = 0;
      if (std::sscanf(rest + 2,
                      "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                      "%*d %llu %llu %lld",
                      &utime, &stime, &start, &vsize, &rss) == 5) {
        p.cpu_seconds = static_cast<double>(utime + stime) / ticks;
        p.virtual_bytes = static_cast<double>(vsize);
        p.resident_bytes = static_cast<double>(rss) * page;
        if (std::FILE* s = std::fopen("/proc/stat", "r")) {
          char line[256];
          unsigned long long boot = 0;
          while (std::fgets(line, sizeof line, s))
            if (std::sscanf(line, "btime %llu", &boot) == 1) break;
          std::fclose(s);
          p.start_time_seconds = static_cast<double>(boot) + static_cast<double>(start) / ticks;
        }
      }
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++p.open_fds;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) p.max_fds = static_cast<double>(limit.rlim_cur);
  return p;
}

constexpr double kMicro = 1e-6;
constexpr double kMicrosPerSecond = 1e6;

}  // namespace

std::vector<MetricFamily> Metrics::Collect() const {
  std::vector<MetricFamily> out;
  auto queues = engine_.queues();
  std::sort(queues.begin(), queues.end(),
            [](const auto* a, const auto* b) { return a->name() < b->name(); });
  std::vector<QueueGroup> groups;
  QueueGroup other{"_other", {}};
  for (const engine::Queue* q : queues) {
    const bool shown = std::any_of(per_queue_.begin(), per_queue_.end(), [&](const auto& p) {
      return config::pattern_matches(p, q->name());
    });
    if (shown)
      groups.push_back({q->name(), {q}});
    else
      other.queues.push_back(q);
  }
  if (!other.queues.empty()) groups.push_back(std::move(other));
  // A group's value: the sum over its queues (counts), or the largest (ratios, ages).
  const auto total = [](const QueueGroup& g, auto value_of) {
    double sum = 0;
    for (const engine::Queue* q : g.queues) sum += static_cast<double>(value_of(*q));
    return sum;
  };
  const auto largest = [](const QueueGroup& g, auto value_of) {
    double most = 0;
    for (const engine::Queue* q : g.queues)
      most = std::max(most, static_cast<double>(value_of(*q)));
    return most;
  };
  const auto counter = [&](const char* name, const char* help, auto value_of) {
    MetricFamily& f = family(out, name, help, MetricType::Counter);
    for (const QueueGroup& g : groups) sample(f, {{"queue", g.label}}, total(g, value_of));
  };
  const auto gauge = [&](const char* name, const char* help, auto value_of, bool max = false) {
    MetricFamily& f = family(out, name, help, MetricType::Gauge);
    for (const QueueGroup& g : groups)
      sample(f, {{"queue", g.label}}, max ? largest(g, value_of) : total(g, value_of));
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
    for (const QueueGroup& g : groups)
      for (std::size_t r = 0; r < engine::kThrottleReasons; ++r)
        sample(f, {{"queue", g.label}, {"reason", kReasons[r]}},
               total(g, [r](Q q) { return q.counters().throttled_total[r]; }));
  }
  counter("sluice_queue_rate_limit_wait_seconds_total",
          "Time dispatch waited for the queue's dispatch rate.",
          [](Q q) { return static_cast<double>(q.counters().rate_wait_us_total) * kMicro; });
  {
    MetricFamily& f =
        family(out, "sluice_queue_messages", "Messages held, by state.", MetricType::Gauge);
    using Count = std::uint64_t engine::QueueCounters::*;
    static constexpr std::pair<const char*, Count> kStates[] = {
        {"ready", &engine::QueueCounters::ready},
        {"delayed", &engine::QueueCounters::delayed},
        {"in_flight", &engine::QueueCounters::in_flight},
        {"staged", &engine::QueueCounters::staged},
        {"held", &engine::QueueCounters::held},
        {"dead_lettering", &engine::QueueCounters::dead_lettering}};
    for (const QueueGroup& g : groups)
      for (const auto& state : kStates) {
        const Count member = state.second;  // clang 14 cannot capture a structured binding
        sample(f, {{"queue", g.label}, {"state", state.first}},
               total(g, [member](Q q) { return q.counters().*member; }));
      }
  }
  gauge("sluice_queue_bytes", "Encoded bytes of the messages held.",
        [](Q q) { return q.counters().bytes; });
  gauge("sluice_queue_max_messages", "The queue's capacity in messages (max_messages).",
        [](Q q) { return q.options().max_messages; });
  gauge(
      "sluice_queue_pressure_ratio",
      "How full the queue is against its high watermark, 0 to 1 (the producers' hint).",
      [](Q q) { return q.pressure() / 100.0; }, true);
  gauge("sluice_queue_consumers", "Consumers subscribed (HTTP receives while they wait).",
        [](Q q) { return q.consumer_count(); });
  {
    const std::int64_t wall_now = wall_us();
    gauge(
        "sluice_queue_oldest_ready_age_seconds",
        "Age of the oldest message ready for delivery (0 when none is): the consumer lag.",
        [&](Q q) {
          const std::int64_t t = engine_.oldest_ready_wall_us(q);
          return t == 0 ? 0.0
                        : static_cast<double>(std::max<std::int64_t>(0, wall_now - t)) * kMicro;
        },
        true);
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
    for (const QueueGroup& g : groups) {
      std::vector<const engine::Histogram*> hs;
      for (const engine::Queue* q : g.queues) hs.push_back(&q->delivery_latency());
      histogram(f, {{"queue", g.label}}, hs, kMicrosPerSecond);
    }
  }
  {
    MetricFamily& f = family(out, "sluice_queue_processing_seconds",
                             "Delivery to ack: how long consumers take.", MetricType::Histogram);
    for (const QueueGroup& g : groups) {
      std::vector<const engine::Histogram*> hs;
      for (const engine::Queue* q : g.queues) hs.push_back(&q->processing_time());
      histogram(f, {{"queue", g.label}}, hs, kMicrosPerSecond);
    }
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
  {
    // The standard process metrics every Prometheus client library exports; RSS also under
    // its older Sluice name, from the same reading.
    const ProcessStats p = process_stats();
    single("sluice_process_resident_memory_bytes", "Resident set size of sluiced.",
           MetricType::Gauge, p.resident_bytes);
    single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
           MetricType::Counter, p.cpu_seconds);
    single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, p.open_fds);
    single("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
           p.max_fds);
    single("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
           p.virtual_bytes);
    single("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
           p.resident_bytes);
    single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
           MetricType::Gauge, p.start_time_seconds);
  }
  if (http_requests_ != nullptr) {
    MetricFamily& f =
        family(out, "sluice_http_requests_total",
               "HTTP requests answered, by route and status class.", MetricType::Counter);
    static constexpr const char* kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    for (std::size_t r = 0; r < HttpRequestCounts::kRouteCount; ++r)
      for (std::size_t c = 1; c < 5; ++c)  // no 1xx is ever answered
        sample(f, {{"route", std::string(HttpRequestCounts::kRoutes[r])}, {"code", kClasses[c]}},
               static_cast<double>(http_requests_->counts[r][c]));
  }
  {
    MetricFamily& f = family(out, "sluice_authentication_failures_total",
                             "Connections (protocol) and requests (http) refused for a missing or "
                             "unknown token.",
                             MetricType::Counter);
    sample(f, {{"listener", "protocol"}},
           static_cast<double>(broker_.auth_failures(Port::protocol)));
    sample(f, {{"listener", "http"}}, static_cast<double>(broker_.auth_failures(Port::http)));
  }
  if (!broker_.sources().all().empty()) {
    MetricFamily& f =
        family(out, "sluice_source_requests_total",
               "Requests to a verified source (POST /v1/sources/NAME), by what came of them.",
               MetricType::Counter);
    for (const Sources::Source& source : broker_.sources().all()) {
      const SourceCounts& c = source.counts;
      const std::pair<const char*, std::uint64_t> results[] = {
          {"accepted", c.accepted},           {"duplicate", c.duplicate},
          {"bad_signature", c.bad_signature}, {"stale", c.stale},
          {"rate_limited", c.rate_limited},   {"refused", c.refused}};
      for (const auto& [result, count] : results)
        sample(f, {{"source", source.settings.name}, {"result", result}},
               static_cast<double>(count));
    }
  }
  if (!broker_.schemas().empty()) {
    MetricFamily& f = family(out, "sluice_schema_checks_total",
                             "Messages checked against a queue's JSON Schema, by version and "
                             "result (a refusal for a missing or unknown version has version "
                             "\"\").",
                             MetricType::Counter);
    for (const Schemas::Queue& q : broker_.schemas().queues()) {
      for (const Schemas::Version& v : q.versions) {
        sample(f, {{"queue", q.name}, {"version", v.name}, {"result", "valid"}},
               static_cast<double>(v.valid));
        sample(f, {{"queue", q.name}, {"version", v.name}, {"result", "invalid"}},
               static_cast<double>(v.invalid));
      }
      sample(f, {{"queue", q.name}, {"version", ""}, {"result", "missing_version"}},
             static_cast<double>(q.missing));
      sample(f, {{"queue", q.name}, {"version", ""}, {"result", "unknown_version"}},
             static_cast<double>(q.unknown));
    }
  }
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
