// The settings, described once: one field table per TOML table, and the lookups and "did you
// mean" suggestions over them.

#include "settings_internal.hpp"

#include <algorithm>
#include <cctype>

namespace sluice::config::detail {
namespace {

Number read_ms(std::chrono::milliseconds value) {
  return from_int64(value.count());
}

}  // namespace

constexpr Field<Settings> kServerFields[] = {
    {.key = "listen",
     .rule = {.kind = Kind::endpoint},
     .store =
         [](Settings& s, const Parsed& v) {
           s.listen_host = v.text;
           s.listen_port = v.port;
         }},
    {.key = "port_file",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.port_file = v.text; }},
    {.key = "max_connections",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s, const Parsed& v) { s.max_connections = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_connections); }},
    {.key = "max_connections_per_source",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s,
                 const Parsed& v) { s.max_connections_per_source = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_connections_per_source); }},
    {.key = "shutdown_grace",
     .rule = {.kind = Kind::duration, .min = 0, .max = 10 * kMinute},
     .store =
         [](Settings& s, const Parsed& v) {
           s.shutdown_grace = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.shutdown_grace); }},
};

constexpr std::string_view kOnOffChoices[] = {"off", "on"};

constexpr Field<Settings> kHttpFields[] = {
    {.key = "enabled",
     .rule = {.kind = Kind::choice, .choices = kOnOffChoices},
     .store = [](Settings& s, const Parsed& v) { s.http_enabled = v.choice == 1; }},
    {.key = "listen",
     .rule = {.kind = Kind::endpoint},
     .store =
         [](Settings& s, const Parsed& v) {
           s.http_host = v.text;
           s.http_port = v.port;
         }},
    {.key = "max_body_bytes",
     .rule = {.kind = Kind::size, .min = kKiB, .max = 64 * kMiB},
     .store = [](Settings& s, const Parsed& v) { s.http_max_body_bytes = v.number; },
     .read = [](const Settings& s) { return whole(s.http_max_body_bytes); }},
    {.key = "max_connections",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s, const Parsed& v) { s.http_max_connections = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.http_max_connections); }},
    {.key = "max_connections_per_source",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s,
                 const Parsed& v) { s.http_max_connections_per_source = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.http_max_connections_per_source); }},
    {.key = "idle_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = kHour},
     .store =
         [](Settings& s, const Parsed& v) {
           s.http_idle_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.http_idle_timeout); }},
    {.key = "max_wait",
     .rule = {.kind = Kind::duration, .min = 0, .max = 5 * kMinute},
     .store =
         [](Settings& s, const Parsed& v) {
           s.http_max_wait = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.http_max_wait); }},
};

constexpr Field<Settings> kLimitsFields[] = {
    {.key = "max_frame_bytes",
     .rule = {.kind = Kind::size, .min = 4 * kKiB, .max = 64 * kMiB},
     .store = [](Settings& s, const Parsed& v) { s.max_frame_bytes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_frame_bytes); }},
    // The bound against max_frame_bytes is checked in validate(), when both are known.
    {.key = "max_payload_bytes",
     .rule = {.kind = Kind::size,
              .min = 1,
              .max = 64 * kMiB - kFrameOverhead,
              .max_note = "limits.max_frame_bytes minus 64KiB"},
     .store = [](Settings& s, const Parsed& v) { s.max_payload_bytes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_payload_bytes); }},
    {.key = "connection_outbound_bytes",
     .rule = {.kind = Kind::size, .min = 64 * kKiB, .max = kGiB},
     .store = [](Settings& s, const Parsed& v) { s.connection_outbound_bytes = v.number; },
     .read = [](const Settings& s) { return whole(s.connection_outbound_bytes); }},
    {.key = "max_headers",
     .rule = {.kind = Kind::count, .min = 1, .max = 64},
     .store = [](Settings& s, const Parsed& v) { s.max_headers = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_headers); }},
    {.key = "max_header_bytes",
     .rule = {.kind = Kind::size, .min = 0, .max = kMiB},
     .store = [](Settings& s, const Parsed& v) { s.max_header_bytes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_header_bytes); }},
    {.key = "max_pending_publishes",
     .rule = {.kind = Kind::count, .min = 1, .max = 10'000'000},
     .store = [](Settings& s, const Parsed& v) { s.max_pending_publishes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_pending_publishes); }},
    {.key = "frame_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = kHour},
     .store =
         [](Settings& s, const Parsed& v) {
           s.frame_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.frame_timeout); }},
    {.key = "handshake_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = 10 * kMinute},
     .store =
         [](Settings& s, const Parsed& v) {
           s.handshake_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.handshake_timeout); }},
    {.key = "max_queues",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s, const Parsed& v) { s.max_queues = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_queues); }},
    {.key = "memory",
     .rule = {.kind = Kind::size, .min = kMiB, .max = 1024 * kGiB},
     .store = [](Settings& s, const Parsed& v) { s.memory = v.number; },
     .read = [](const Settings& s) { return whole(s.memory); }},
};

constexpr std::string_view kSyncChoices[] = {"fsync", "nosync"};
constexpr std::string_view kSettleChoices[] = {"at_once", "commit"};
constexpr std::string_view kDurabilityChoices[] = {"memory", "durable"};
constexpr std::string_view kOrderingChoices[] = {"none", "key"};
constexpr std::string_view kJitterChoices[] = {"none", "full", "equal"};

constexpr Field<Settings> kStorageFields[] = {
    {.key = "path",
     .rule = {.kind = Kind::path},
     .store =
         [](Settings& s, const Parsed& v) {
           s.storage_path = v.text;
           s.storage_path_given = true;
         }},
    {.key = "sync",
     .rule = {.kind = Kind::choice,
              .choices = kSyncChoices,
              .choices_note = "fsync: on disk before a publish is confirmed; nosync: faster, an OS "
                              "crash can lose the last commits"},
     .store = [](Settings& s, const Parsed& v) { s.storage_sync = v.choice == 0; }},
    {.key = "max_size",
     .rule = {.kind = Kind::size, .min = kMiB, .max = 16 * 1024 * kGiB},
     .store = [](Settings& s, const Parsed& v) { s.storage_max_size = v.number; },
     .read = [](const Settings& s) { return whole(s.storage_max_size); }},
    {.key = "settle",
     .rule = {.kind = Kind::choice,
              .choices = kSettleChoices,
              .choices_note = "at_once: acks and nacks of durable queues are answered when "
                              "applied; commit: when their change is committed"},
     .store = [](Settings& s, const Parsed& v) { s.storage_settle_commit = v.choice == 1; }},
};

// queues.auto_create: a plain value inside [queues], beside the [queues.NAME] tables.
constexpr Field<Settings> kQueuesAutoCreateField = {
    .key = "auto_create",
    .rule = {.kind = Kind::choice,
             .choices = kOnOffChoices,
             .choices_note = "on: first use creates a queue; off: only the config file and "
                             "an explicit create do"},
    .store = [](Settings& s, const Parsed& v) { s.queues_auto_create = v.choice == 1; }};
const Field<Settings>& kQueuesAutoCreate = kQueuesAutoCreateField;

constexpr Field<Settings> kMetricsFields[] = {
    {.key = "per_queue",
     .rule = {.kind = Kind::queue_selection},
     .store = [](Settings& s, const Parsed& v) { s.metrics_per_queue = v.list; }},
};

constexpr Field<Settings> kTlsFields[] = {
    {.key = "cert_file",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.tls_cert_file = v.text; }},
    {.key = "key_file",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.tls_key_file = v.text; }},
};

constexpr Field<TokenSettings> kTokenFields[] = {
    {.key = "hash",
     .rule = {.kind = Kind::token_hash},
     .store = [](TokenSettings& t, const Parsed& v) { t.hash = v.text; }},
    {.key = "publish",
     .rule = {.kind = Kind::patterns},
     .store = [](TokenSettings& t, const Parsed& v) { t.publish = v.list; }},
    {.key = "consume",
     .rule = {.kind = Kind::patterns},
     .store = [](TokenSettings& t, const Parsed& v) { t.consume = v.list; }},
    {.key = "admin",
     .rule = {.kind = Kind::patterns},
     .store = [](TokenSettings& t, const Parsed& v) { t.admin = v.list; }},
    {.key = "metrics",
     .rule = {.kind = Kind::choice,
              .choices = kOnOffChoices,
              .choices_note = "on: may read /metrics, which names every queue"},
     .store = [](TokenSettings& t, const Parsed& v) { t.metrics = v.choice == 1; }},
};
constexpr std::span<const Field<TokenSettings>> kTokenFieldSpan{kTokenFields};

constexpr Field<Settings> kLogFields[] = {
    {.key = "level",
     .rule = {.kind = Kind::log_level},
     .store = [](Settings& s, const Parsed& v) { s.log_level = v.level; }},
};

constexpr Field<QueueSettings> kQueueFields[] = {
    {.key = "lease_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = 12 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.lease_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.lease_timeout); }},
    {.key = "max_consumer_in_flight",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q,
                 const Parsed& v) { q.max_consumer_in_flight = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.max_consumer_in_flight); }},
    {.key = "max_messages",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_messages = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.max_messages); }},
    {.key = "max_bytes",
     .rule = {.kind = Kind::size, .min = kKiB, .max = 64 * kGiB},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_bytes = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.max_bytes); }},
    {.key = "high_watermark",
     .rule = {.kind = Kind::count, .min = 1, .max = 100},
     .store = [](QueueSettings& q, const Parsed& v) { q.high_watermark = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.high_watermark); }},
    {.key = "low_watermark",
     .rule = {.kind = Kind::count, .min = 1, .max = 99},
     .store = [](QueueSettings& q, const Parsed& v) { q.low_watermark = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.low_watermark); }},
    {.key = "overflow",
     .rule = {.kind = Kind::overflow},
     .store = [](QueueSettings& q, const Parsed& v) { q.overflow = v.overflow; }},
    {.key = "dispatch_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.dispatch_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.dispatch_rate); }},
    {.key = "dispatch_burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.dispatch_burst = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.dispatch_burst); }},
    {.key = "max_consumer_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_consumer_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.max_consumer_rate); }},
    {.key = "ingress_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.ingress_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.ingress_rate); }},
    {.key = "ingress_burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.ingress_burst = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.ingress_burst); }},
    {.key = "max_in_flight",
     .rule = {.kind = Kind::count, .min = 0, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_in_flight = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.max_in_flight); }},
    {.key = "key_header",
     .rule = {.kind = Kind::header_name},
     .store = [](QueueSettings& q, const Parsed& v) { q.key_header = v.text; }},
    {.key = "key_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.key_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.key_rate); }},
    {.key = "key_burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.key_burst = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.key_burst); }},
    {.key = "durability",
     .rule = {.kind = Kind::choice,
              .choices = kDurabilityChoices,
              .choices_note = "memory: lost on a crash; durable: committed to storage.path "
                              "before the publish is confirmed"},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.durability = v.choice == 0 ? Durability::memory : Durability::durable;
         }},
    {.key = "ordering",
     .rule = {.kind = Kind::choice,
              .choices = kOrderingChoices,
              .choices_note = "key: FIFO per key_header value with one message of a key out at "
                              "a time"},
     .store = [](QueueSettings& q, const Parsed& v) { q.ordered = v.choice == 1; }},
    {.key = "max_attempts",
     .rule = {.kind = Kind::count, .min = 0, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_attempts = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.max_attempts); }},
    {.key = "retry_backoff",
     .rule = {.kind = Kind::duration, .min = 0, .max = kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.retry_backoff = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.retry_backoff); }},
    {.key = "retry_backoff_max",
     .rule = {.kind = Kind::duration, .min = 0, .max = 24 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.retry_backoff_max = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.retry_backoff_max); }},
    {.key = "retry_multiplier",
     .rule = {.kind = Kind::factor, .min = 1000, .max = 100'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.retry_multiplier = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.retry_multiplier); }},
    {.key = "retry_jitter",
     .rule = {.kind = Kind::choice,
              .choices = kJitterChoices,
              .choices_note = "full: anywhere up to the backoff; equal: half of it plus up to "
                              "the other half"},
     .store = [](QueueSettings& q,
                 const Parsed& v) { q.retry_jitter = static_cast<Jitter>(v.choice); }},
    {.key = "dedup_window",
     .rule = {.kind = Kind::duration, .min = 0, .max = 24 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.dedup_window = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.dedup_window); }},
    {.key = "dedup_max_entries",
     .rule = {.kind = Kind::count, .min = 1, .max = 100'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.dedup_max_entries = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.dedup_max_entries); }},
    {.key = "resequence",
     .rule = {.kind = Kind::choice,
              .choices = kOnOffChoices,
              .choices_note =
                  "on: messages with sluice-seq are released in sequence order per key"},
     .store = [](QueueSettings& q, const Parsed& v) { q.resequence = v.choice == 1; }},
    {.key = "gap_timeout",
     .rule = {.kind = Kind::duration, .min = 1, .max = kHour},
     .store = [](QueueSettings& q,
                 const Parsed& v) { q.gap_timeout = std::chrono::milliseconds(int64_t(v.number)); },
     .read = [](const QueueSettings& q) { return read_ms(q.gap_timeout); }},
    {.key = "dlq_max_entries",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.dlq_max_entries = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.dlq_max_entries); }},
    {.key = "dlq_retention",
     .rule = {.kind = Kind::duration, .min = kMinute, .max = 365 * 24 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.dlq_retention = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.dlq_retention); }},
};

constexpr std::span<const Field<QueueSettings>> kQueueFieldSpan{kQueueFields};

constexpr std::string_view kMethodChoices[] = {"POST", "PUT"};
constexpr std::string_view kBodyChoices[] = {"raw", "json"};
constexpr std::string_view kConcurrencyChoices[] = {"fixed", "adaptive"};

constexpr Field<TriggerSettings> kTriggerFields[] = {
    {.key = "queue",
     .rule = {.kind = Kind::queue_name},
     .store = [](TriggerSettings& t, const Parsed& v) { t.queue = v.text; }},
    {.key = "url",
     .rule = {.kind = Kind::url},
     .store = [](TriggerSettings& t, const Parsed& v) { t.url = v.text; }},
    {.key = "method",
     .rule = {.kind = Kind::choice, .choices = kMethodChoices},
     .store = [](TriggerSettings& t,
                 const Parsed& v) { t.method = std::string(kMethodChoices[v.choice]); }},
    {.key = "headers",
     .rule = {.kind = Kind::header_lines},
     .store = [](TriggerSettings& t, const Parsed& v) { t.headers = v.list; }},
    {.key = "timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = 15 * kMinute},
     .store = [](TriggerSettings& t,
                 const Parsed& v) { t.timeout = std::chrono::milliseconds(int64_t(v.number)); },
     .read = [](const TriggerSettings& t) { return read_ms(t.timeout); }},
    {.key = "max_concurrency",
     .rule = {.kind = Kind::count, .min = 1, .max = 10'000},
     .store = [](TriggerSettings& t, const Parsed& v) { t.max_concurrency = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.max_concurrency); }},
    {.key = "concurrency",
     .rule = {.kind = Kind::choice,
              .choices = kConcurrencyChoices,
              .choices_note = "fixed: max_concurrency; adaptive: between min_concurrency and "
                              "max_concurrency, following the function's latency"},
     .store = [](TriggerSettings& t, const Parsed& v) { t.adaptive = v.choice == 1; }},
    {.key = "min_concurrency",
     .rule = {.kind = Kind::count, .min = 1, .max = 10'000},
     .store = [](TriggerSettings& t, const Parsed& v) { t.min_concurrency = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.min_concurrency); }},
    {.key = "rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](TriggerSettings& t, const Parsed& v) { t.rate = v.number; },
     .read = [](const TriggerSettings& t) { return whole(t.rate); }},
    {.key = "burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](TriggerSettings& t, const Parsed& v) { t.burst = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.burst); }},
    {.key = "batch_size",
     .rule = {.kind = Kind::count, .min = 1, .max = 1000},
     .store = [](TriggerSettings& t, const Parsed& v) { t.batch_size = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.batch_size); }},
    {.key = "batch_window",
     .rule = {.kind = Kind::duration, .min = 0, .max = kMinute},
     .store =
         [](TriggerSettings& t, const Parsed& v) {
           t.batch_window = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const TriggerSettings& t) { return read_ms(t.batch_window); }},
    {.key = "batch_max_bytes",
     .rule = {.kind = Kind::size, .min = kKiB, .max = 64 * kMiB},
     .store = [](TriggerSettings& t, const Parsed& v) { t.batch_max_bytes = v.number; },
     .read = [](const TriggerSettings& t) { return whole(t.batch_max_bytes); }},
    {.key = "body",
     .rule = {.kind = Kind::choice,
              .choices = kBodyChoices,
              .choices_note = "raw: one message as the body, its headers as HTTP headers; json: "
                              "a batch as a JSON array"},
     .store = [](TriggerSettings& t, const Parsed& v) { t.body_json = v.choice == 1; }},
    {.key = "signing_secret_file",
     .rule = {.kind = Kind::path},
     .store = [](TriggerSettings& t, const Parsed& v) { t.signing_secret_file = v.text; }},
    {.key = "ca_file",
     .rule = {.kind = Kind::path},
     .store = [](TriggerSettings& t, const Parsed& v) { t.ca_file = v.text; }},
    {.key = "verify",
     .rule = {.kind = Kind::choice, .choices = kOnOffChoices},
     .store = [](TriggerSettings& t, const Parsed& v) { t.verify = v.choice == 1; }},
    {.key = "dead_letter_on",
     .rule = {.kind = Kind::statuses},
     .store =
         [](TriggerSettings& t, const Parsed& v) {
           t.dead_letter_on.clear();
           for (const auto& status : v.list)
             t.dead_letter_on.push_back(uint32_t(std::stoul(status)));
         }},
    {.key = "breaker_window",
     .rule = {.kind = Kind::count, .min = 1, .max = 1000},
     .store = [](TriggerSettings& t, const Parsed& v) { t.breaker_window = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.breaker_window); }},
    {.key = "breaker_failure_ratio",
     .rule = {.kind = Kind::factor, .min = 10, .max = 1000},
     .store = [](TriggerSettings& t,
                 const Parsed& v) { t.breaker_failure_ratio = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.breaker_failure_ratio); }},
    {.key = "breaker_min_calls",
     .rule = {.kind = Kind::count, .min = 1, .max = 1000},
     .store = [](TriggerSettings& t, const Parsed& v) { t.breaker_min_calls = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.breaker_min_calls); }},
    {.key = "breaker_consecutive",
     .rule = {.kind = Kind::count, .min = 1, .max = 1000},
     .store = [](TriggerSettings& t,
                 const Parsed& v) { t.breaker_consecutive = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.breaker_consecutive); }},
    {.key = "breaker_open_for",
     .rule = {.kind = Kind::duration, .min = 100, .max = kHour},
     .store =
         [](TriggerSettings& t, const Parsed& v) {
           t.breaker_open_for = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const TriggerSettings& t) { return read_ms(t.breaker_open_for); }},
    {.key = "breaker_open_max",
     .rule = {.kind = Kind::duration, .min = 100, .max = 24 * kHour},
     .store =
         [](TriggerSettings& t, const Parsed& v) {
           t.breaker_open_max = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const TriggerSettings& t) { return read_ms(t.breaker_open_max); }},
    {.key = "breaker_probes",
     .rule = {.kind = Kind::count, .min = 1, .max = 100},
     .store = [](TriggerSettings& t, const Parsed& v) { t.breaker_probes = uint32_t(v.number); },
     .read = [](const TriggerSettings& t) { return whole(t.breaker_probes); }},
};
constexpr std::span<const Field<TriggerSettings>> kTriggerFieldSpan{kTriggerFields};
constexpr std::string_view kSchemeChoices[] = {"github", "stripe", "standard-webhooks", "hmac"};
constexpr std::string_view kEncodingChoices[] = {"hex", "base64"};

namespace {
/// Header names compare lower-case (HTTP requests arrive with lower-cased names).
std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}
}  // namespace

constexpr Field<SourceSettings> kSourceFields[] = {
    {.key = "queue",
     .rule = {.kind = Kind::queue_name},
     .store = [](SourceSettings& s, const Parsed& v) { s.queue = v.text; }},
    {.key = "scheme",
     .rule = {.kind = Kind::choice,
              .choices = kSchemeChoices,
              .choices_note = "github: X-Hub-Signature-256; stripe: Stripe-Signature; "
                              "standard-webhooks: webhook-signature; hmac: signature_header"},
     .store = [](SourceSettings& s,
                 const Parsed& v) { s.scheme = static_cast<SourceScheme>(v.choice); }},
    {.key = "secret_file",
     .rule = {.kind = Kind::path},
     .store = [](SourceSettings& s, const Parsed& v) { s.secret_file = v.text; }},
    {.key = "previous_secret_file",
     .rule = {.kind = Kind::path},
     .store = [](SourceSettings& s, const Parsed& v) { s.previous_secret_file = v.text; }},
    {.key = "tolerance",
     .rule = {.kind = Kind::duration, .min = kSecond, .max = kHour},
     .store = [](SourceSettings& s,
                 const Parsed& v) { s.tolerance = std::chrono::milliseconds(int64_t(v.number)); },
     .read = [](const SourceSettings& s) { return read_ms(s.tolerance); }},
    {.key = "signature_header",
     .rule = {.kind = Kind::header_name},
     .store = [](SourceSettings& s, const Parsed& v) { s.signature_header = lower(v.text); }},
    {.key = "signature_encoding",
     .rule = {.kind = Kind::choice, .choices = kEncodingChoices},
     .store = [](SourceSettings& s, const Parsed& v) { s.signature_base64 = v.choice == 1; }},
    {.key = "id_header",
     .rule = {.kind = Kind::header_name},
     .store = [](SourceSettings& s, const Parsed& v) { s.id_header = lower(v.text); }},
    {.key = "rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](SourceSettings& s, const Parsed& v) { s.rate = v.number; },
     .read = [](const SourceSettings& s) { return whole(s.rate); }},
    {.key = "burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](SourceSettings& s, const Parsed& v) { s.burst = uint32_t(v.number); },
     .read = [](const SourceSettings& s) { return whole(s.burst); }},
};
constexpr std::span<const Field<SourceSettings>> kSourceFieldSpan{kSourceFields};

constexpr TableSpec kSettingsTableList[] = {{"server", kServerFields},  {"http", kHttpFields},
                                            {"limits", kLimitsFields},  {"storage", kStorageFields},
                                            {"tls", kTlsFields},        {"log", kLogFields},
                                            {"metrics", kMetricsFields}};
constexpr std::span<const TableSpec> kSettingsTables{kSettingsTableList};

const TableSpec* find_table(std::string_view name) {
  for (const auto& table : kSettingsTables) {
    if (table.name == name) return &table;
  }
  return nullptr;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

std::vector<std::string> all_setting_names() {
  std::vector<std::string> names;
  for (const auto& table : kSettingsTables) {
    for (const auto& field : table.fields)
      names.push_back(std::string(table.name) + "." + std::string(field.key));
  }
  for (const auto& field : kQueueFields) {
    names.push_back("queue_defaults." + std::string(field.key));
  }
  for (const auto& field : kQueueFields) names.push_back("queues.NAME." + std::string(field.key));
  for (const auto& field : kTokenFields) names.push_back("tokens.NAME." + std::string(field.key));
  for (const auto& field : kTriggerFields)
    names.push_back("triggers.NAME." + std::string(field.key));
  for (const auto& field : kSourceFields) names.push_back("sources.NAME." + std::string(field.key));
  return names;
}

namespace {

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

/// "; did you mean X?" for a near miss (a typo is the usual reason for an unknown key), else "".
std::string suggestion(std::string_view typed, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = 3;  // more than two edits away is not a typo
  for (const auto& candidate : candidates) {
    const size_t distance = edit_distance(typed, candidate);
    if (distance < best_distance && distance < candidate.size() / 2) {
      best = &candidate;
      best_distance = distance;
    }
  }
  return best ? "; did you mean " + *best + "?" : "";
}

}  // namespace sluice::config::detail
