// Everything sluiced can be told at start-up, as one plain struct with its defaults, and the
// functions that fill it from a TOML file (sluiced.example.toml lists every setting) and from
// "name=value" command-line flags.
//
// Bad input is an expected value here, not an exception: every function reports the first problem
// as a ConfigError that names the file, the line, the setting and what would have been accepted,
// so an operator can fix the config without reading our source.
//
// All functions are pure (no globals, no logging); they are safe to call from any thread as long
// as no two calls share the same Settings object.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::config {

/// How much sluiced logs, from most to least verbose.
enum class LogLevel { trace, debug, info, warn, error };

/// What a full queue does with a publish: make the producer wait, or refuse it.
enum class Overflow { block, reject };

/// Where a queue keeps its messages: in memory only (lost on a crash or restart), or committed
/// to LMDB under storage.path before a publish is confirmed.
enum class Durability { memory, durable };

/// How retry delays are spread: none (exact), full (0..backoff), equal (backoff/2 + 0..backoff/2).
enum class Jitter { none, full, equal };

/// A rate in thousandths of a message per second (0.1/s = 100); 0 = no limit.
using MilliRate = uint64_t;

/// Per-queue behaviour; the same fields serve as defaults ([queue_defaults]) and per queue
/// ([queues.NAME]).
struct QueueSettings {
  /// Visibility timeout: a delivered message not acked within this is delivered again.
  /// [100ms, 12h]
  std::chrono::milliseconds lease_timeout{30000};
  /// Highest credit one consumer may ask for (unacked messages in flight). [1, 1000000]
  uint32_t max_consumer_in_flight = 10000;
  /// Capacity: messages held in any state [1, 1e9], and their bytes [1KiB, 64GiB].
  uint64_t max_messages = 1'000'000;
  uint64_t max_bytes = 256ull << 20;
  /// The overflow policy acts at this percent of either maximum [1, 100] ...
  uint32_t high_watermark = 100;
  /// ... and stops once below this percent [1, 99], which must be below high_watermark.
  uint32_t low_watermark = 80;
  Overflow overflow = Overflow::block;
  /// Deliveries per second to all consumers together, and the burst [1, 1e6].
  MilliRate dispatch_rate = 0;
  uint32_t dispatch_burst = 10;
  /// The highest rate a consumer may ask for when it subscribes (0 = any).
  MilliRate max_consumer_rate = 0;
  /// Publishes per second into the queue, and the burst [1, 1e6].
  MilliRate ingress_rate = 0;
  uint32_t ingress_burst = 1000;
  /// Unacked messages over all consumers together [0 = none, 1e6].
  uint32_t max_in_flight = 0;
  /// Messages are keyed by this header's value ("" = no keys, at most 255 bytes). Keys serve
  /// per-key (tenant) rates: each key gets key_rate with key_burst [1, 1e6]; messages without
  /// the header are not limited per key. They also serve ordering and the resequencer.
  std::string key_header = "sluice-key";
  MilliRate key_rate = 0;
  uint32_t key_burst = 1;
  /// "memory" or "durable" (needs storage.path).
  Durability durability = Durability::memory;
  /// ordering = "key": FIFO per key, at most one message of a key delivered and unsettled.
  bool ordered = false;
  /// Deliveries before a message goes to the dead-letter queue [0 = never, 1e6].
  uint32_t max_attempts = 10;
  /// Backoff after failed attempt n: min(retry_backoff_max, retry_backoff × multiplier^(n-1)),
  /// spread by retry_jitter. [0, 1h], [0, 24h], [1, 100] (thousandths here).
  std::chrono::milliseconds retry_backoff{200};
  std::chrono::milliseconds retry_backoff_max{60000};
  uint32_t retry_multiplier = 2000;
  Jitter retry_jitter = Jitter::equal;
  /// Publishes with sluice-dedup-id are remembered this long [0 = off, 24h], at most
  /// dedup_max_entries of them [1, 1e8] (the oldest go first).
  std::chrono::milliseconds dedup_window{300000};
  uint32_t dedup_max_entries = 100000;
  /// resequence = "on": messages with sluice-seq come out in sequence order per key; a gap
  /// is given up after gap_timeout [1ms, 1h].
  bool resequence = false;
  std::chrono::milliseconds gap_timeout{5000};
  /// Dead-letter retention: most entries kept [1, 1e9] and longest [1m, 365d].
  uint64_t dlq_max_entries = 100000;
  std::chrono::milliseconds dlq_retention{14LL * 24 * 3600 * 1000};
};

/// One version of a queue's message schema ([queues.NAME.schemas] VERSION = "file").
struct SchemaVersion {
  /// [A-Za-z0-9_.:-]{1,64}, as producers name it (sluice-schema-version, CloudEvents dataschema).
  std::string version;
  /// A JSON Schema (draft 7) file; a relative path is relative to the config file's directory.
  std::string file;

  bool operator==(const SchemaVersion&) const = default;
};

/// A queue named in the config ([queues.NAME]), created at start-up rather than on first use.
struct DeclaredQueue {
  /// [A-Za-z0-9_.:-]{1,200}, not "." or ".."
  std::string name;
  /// Starts as a copy of Settings::queue_defaults at the moment the queue is declared.
  QueueSettings settings;
  /// [queues.NAME.schemas]: the JSON Schemas its messages are validated against, by version
  /// (docs/ingress.md). Read again on SIGHUP.
  std::vector<SchemaVersion> schemas = {};
  /// require_schema = "on": every message must name one of `schemas` (needs at least one).
  bool require_schema = false;
};

/// How a verified source signs its requests (docs/ingress.md).
enum class SourceScheme {
  github,             // X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>
  stripe,             // Stripe-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "t.body">
  standard_webhooks,  // webhook-id, webhook-timestamp, webhook-signature: v1,<base64>
  hmac,               // <signature_header>: [sha256=]<HMAC-SHA256 of the body, hex or base64>
};

/// A verified webhook source ([sources.NAME]): POST /v1/sources/NAME, no bearer token, the
/// signature is the credential; what it sends goes to `queue`.
struct SourceSettings {
  /// [A-Za-z0-9_.:-]{1,100}; the endpoint's last path segment, and a metrics label.
  std::string name;
  /// The queue its events go to (required).
  std::string queue;
  /// "github" | "stripe" | "standard-webhooks" | "hmac" (required).
  std::optional<SourceScheme> scheme;
  /// The shared secret, as the sender shows it (a Standard Webhooks "whsec_<base64>" is
  /// decoded); trailing whitespace is dropped. Relative: to the config file's directory.
  std::string secret_file;
  /// During a rotation, the secret being replaced: requests signed with either are accepted.
  std::string previous_secret_file;
  /// stripe and standard-webhooks: how far a request's timestamp may be from the broker's
  /// clock [1s, 1h]; outside it the request is stale (400).
  std::chrono::milliseconds tolerance{300000};
  /// hmac: the header carrying the signature, and how the digest is written ("hex", "base64").
  std::string signature_header = "x-signature";
  bool signature_base64 = false;
  /// hmac: a header whose value identifies a delivery (its retries repeat it), "" = none.
  /// github uses X-GitHub-Delivery, standard-webhooks webhook-id, stripe the event's "id".
  std::string id_header;
  /// Requests per second accepted from the source (a token bucket; 0 = no limit), and the burst.
  MilliRate rate = 0;
  uint32_t burst = 100;

  bool operator==(const SourceSettings&) const = default;
};

/// An access token ([tokens.NAME]): who may do what, on which queues.
struct TokenSettings {
  /// [A-Za-z0-9_.:-]{1,100}; names the token in logs (never the token itself).
  std::string name;
  /// "sha256:<32 hex salt>:<64 hex digest>", as `sluicectl hash-token` prints it.
  std::string hash;
  /// Queue-name patterns, each a name in which '*' stands for any run of characters
  /// ("orders", "orders.*", "*"). publish: publish. consume: receive (subscribe) and settle.
  /// admin: both, plus dead letters, live settings and stats; admin on "*" also covers the
  /// broker-wide actions (the log level, stats of every queue).
  std::vector<std::string> publish;
  std::vector<std::string> consume;
  std::vector<std::string> admin;
  /// metrics = "on": may read /metrics (every queue's name and counts). Admin on "*" may too.
  bool metrics = false;
};

/// A push trigger ([triggers.NAME]): sluiced invokes an HTTP function with a queue's messages
/// (docs/triggers.md). Added, changed and removed by a reload (SIGHUP).
struct TriggerSettings {
  /// [A-Za-z0-9_.:-]{1,100}; names the trigger in logs, metrics and sluicectl.
  std::string name;
  /// The queue it consumes (required).
  std::string queue;
  /// The function: "http://host[:port]/path" or "https://..." (required).
  std::string url;
  /// "POST" | "PUT"
  std::string method = "POST";
  /// "Name: value" lines sent with every request (e.g. an API key).
  std::vector<std::string> headers;
  /// One invocation's deadline [100ms, 15min]; its messages' lease runs from the invocation.
  std::chrono::milliseconds timeout{30000};
  /// Invocations in flight at once [1, 10000]: the limit ("fixed"), or its ceiling ("adaptive").
  uint32_t max_concurrency = 10;
  /// false = "fixed" (max_concurrency), true = "adaptive": the limit moves between
  /// min_concurrency and max_concurrency with the function's latency (docs/triggers.md).
  bool adaptive = false;
  /// The adaptive limit's floor [1, 10000], at most max_concurrency.
  uint32_t min_concurrency = 1;
  /// Messages per second pushed to the function (a token bucket; 0 = no limit), capped by the
  /// queue's max_consumer_rate, and the bucket's burst [1, 1e6].
  MilliRate rate = 0;
  uint32_t burst = 1;
  /// Messages per invocation [1, 1000]; above 1 needs body = "json".
  uint32_t batch_size = 1;
  /// How long a partial batch waits to fill [0, 1min].
  std::chrono::milliseconds batch_window{0};
  /// Payload bytes per invocation, at most [1KiB, 64MiB] (a larger single message goes alone).
  uint64_t batch_max_bytes = 6u << 20;
  /// false = "raw" (one message as the body, its headers as HTTP headers), true = "json" (a
  /// batch as a JSON array).
  bool body_json = false;
  /// A file whose content is the HMAC key requests are signed with (Standard Webhooks); "" = none.
  std::string signing_secret_file;
  /// PEM CA file to verify an https function with ("" = the system's roots).
  std::string ca_file;
  /// "on" | "off": verify the function's certificate and name.
  bool verify = true;
  /// Statuses (400 to 599) that dead-letter the request's messages at once, e.g. [400, 422].
  std::vector<uint32_t> dead_letter_on;
  // The circuit breaker: opens when more than breaker_failure_ratio of the last breaker_window
  // invocations failed (with at least breaker_min_calls of them), or after breaker_consecutive
  // failures to reach the function in a row. Open, nothing is sent and no attempt is used; after
  // breaker_open_for (doubling up to breaker_open_max while probes fail) breaker_probes
  // invocations test the function, and their success closes it.
  /// [1, 1000]
  uint32_t breaker_window = 20;
  /// In thousandths, [0.01, 1] (10 to 1000).
  uint32_t breaker_failure_ratio = 500;
  /// [1, 1000]
  uint32_t breaker_min_calls = 10;
  /// [1, 1000]
  uint32_t breaker_consecutive = 5;
  /// [100ms, 1h]
  std::chrono::milliseconds breaker_open_for{5000};
  /// [100ms, 24h]
  std::chrono::milliseconds breaker_open_max{300000};
  /// [1, 100]
  uint32_t breaker_probes = 1;

  bool operator==(const TriggerSettings&) const = default;
};

/// The whole start-up configuration of sluiced; the defaults are the documented defaults.
struct Settings {
  // [server]
  /// From server.listen = "host:port": an IPv4 address, an IPv6 address (written "[v6]:port",
  /// stored without brackets) or "localhost".
  std::string listen_host = "127.0.0.1";
  /// From server.listen; 0 means "any free port" (tests use it and read port_file).
  uint16_t listen_port = 7450;
  /// server.port_file; "" = none. After binding, sluiced writes the bound port(s) there.
  std::string port_file;
  /// server.max_connections [1, 1000000]
  uint32_t max_connections = 10000;
  /// server.max_connections_per_source [1, 1000000]: connections from one IP address.
  uint32_t max_connections_per_source = 1000;
  /// server.shutdown_grace [0, 10min]: how long SIGTERM waits for outbound data to flush.
  std::chrono::milliseconds shutdown_grace{5000};

  // [http]
  /// http.enabled: "on" | "off" — the HTTP API, /metrics and health endpoints.
  bool http_enabled = true;
  /// From http.listen = "host:port" (same forms as server.listen); port 0 = any free port.
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 7451;
  /// http.max_body_bytes [1 KiB, 64 MiB]: largest request body (413 past it).
  uint64_t http_max_body_bytes = 4u << 20;
  /// http.max_connections [1, 1000000]
  uint32_t http_max_connections = 1000;
  /// http.max_connections_per_source [1, 1000000]: connections from one IP address.
  uint32_t http_max_connections_per_source = 256;
  /// http.idle_timeout [100ms, 1h]: an idle keep-alive connection (or a request that does
  /// not arrive whole) is closed after this.
  std::chrono::milliseconds http_idle_timeout{60000};
  /// http.max_wait [0, 5min]: the longest long poll a receive may ask for.
  std::chrono::milliseconds http_max_wait{20000};

  // [limits]
  /// limits.max_frame_bytes [4 KiB, 64 MiB]
  uint32_t max_frame_bytes = 4u << 20;
  /// limits.max_payload_bytes [1, max_frame_bytes - 64 KiB]; the relation is checked in validate().
  uint32_t max_payload_bytes = 1u << 20;
  /// limits.connection_outbound_bytes [64 KiB, 1 GiB]: per-connection outbound buffer bound.
  uint64_t connection_outbound_bytes = 8u << 20;
  /// limits.max_headers [1, 64]: headers per message (an HTTP publish's correlation id is one).
  uint32_t max_headers = 64;
  /// limits.max_header_bytes [0, 1 MiB]: one message's header keys and values together.
  uint32_t max_header_bytes = 64u << 10;
  /// limits.max_pending_publishes [1, 10000000]: messages published on one connection and
  /// awaiting their durable commit; past it the connection is not read until commits land.
  uint32_t max_pending_publishes = 100000;
  /// limits.frame_timeout [100ms, 1h]: a frame begun must be complete within this, or the
  /// connection is closed with timed_out (a stalled or truncated sender cannot pin a buffer).
  std::chrono::milliseconds frame_timeout{30000};
  /// limits.handshake_timeout [100ms, 10min]: a new connection must send HELLO within this.
  std::chrono::milliseconds handshake_timeout{10000};
  /// limits.memory [1MiB, 1TiB]: all queues' messages together (encoded bytes plus 128 bytes
  /// each); at the limit every queue's overflow policy acts.
  uint64_t memory = 512ull << 20;
  /// limits.max_queues [1, 1000000]: queues created by use (declared queues count too).
  uint32_t max_queues = 10000;
  /// queues.auto_create ("on" | "off"): whether publishing to, receiving from or
  /// subscribing to a queue that does not exist creates it. Off: queue_not_found (HTTP
  /// 404), and queues come from the config file or an explicit create.
  bool queues_auto_create = true;

  // [metrics]
  /// metrics.per_queue: the queues whose series /metrics shows one by one, as queue-name
  /// patterns; the others are summed under queue="_other". "all" = ["*"], "none" = [].
  std::vector<std::string> metrics_per_queue = {"*"};

  // [storage]
  /// storage.path: the data directory of durable queues and dead letters. When the config
  /// does not give it, resolve_defaults() makes it $STATE_DIRECTORY (systemd) or ./sluice-data.
  /// "" = none: memory only (dead letters last until sluiced stops; no queue may be durable).
  std::string storage_path;
  /// True once the config file or a flag gave storage.path (even ""): no default applies.
  bool storage_path_given = false;
  /// storage.sync: true = "fsync" (a commit is on disk before publishes are confirmed),
  /// false = "nosync" (an OS crash or power loss can lose the last commits; a process crash
  /// cannot).
  bool storage_sync = true;
  /// storage.max_size [1MiB, 16TiB]: the most the data file may grow to. At the limit,
  /// publishes to durable queues get their queue's overflow policy.
  uint64_t storage_max_size = 4ull << 30;
  /// storage.settle: false = "at_once" (an ack, nack or extend of a durable queue's message is
  /// answered once applied; a crash before its commit can undo it), true = "commit" (answered
  /// once its change is committed, as a durable publish's confirm is).
  bool storage_settle_commit = false;
  // [tls]
  /// tls.cert_file and tls.key_file (PEM; both or neither): when set, both listeners speak
  /// TLS only (1.2 and 1.3). Read again on SIGHUP.
  std::string tls_cert_file;
  std::string tls_key_file;
  // [tokens.NAME]
  /// With none, anyone who can connect may do anything, so sluiced then listens on loopback
  /// addresses only. With any, every connection and request must present one.
  std::vector<TokenSettings> tokens;
  // [log]
  /// log.level: "trace" | "debug" | "info" | "warn" | "error"
  LogLevel log_level = LogLevel::info;

  /// [queue_defaults]: applies to queues created on first use and to queues declared afterwards.
  QueueSettings queue_defaults;
  /// [queues.NAME] tables, in the order they were declared.
  std::vector<DeclaredQueue> queues;
  /// [triggers.NAME] tables, in the order they were declared.
  std::vector<TriggerSettings> triggers;
  /// [sources.NAME] tables, in the order they were declared.
  std::vector<SourceSettings> sources;
};

/// One problem with the configuration.
struct ConfigError {
  /// The config file path, "command line" for a flag, or "" when not attributable (validate()).
  std::string file;
  /// 1-based line in `file`; 0 when unknown.
  int line = 0;
  /// Dotted name, e.g. "server.listen" or "queues.orders.lease_timeout"; "" for whole-file
  /// problems.
  std::string setting;
  /// What is wrong, e.g. "expected a duration, got \"30 parsecs\"".
  std::string problem;
  /// What would have been accepted, e.g. "a duration like \"30s\" ... from 100ms to 12h".
  std::string allowed;

  /// One line: "<file>:<line>: <setting>: <problem> (allowed: <allowed>)". Empty parts and their
  /// separators are left out (no ":<line>" when line is 0); control characters are escaped so the
  /// result is always a single line.
  std::string to_string() const;
};

/// Reads the TOML file at `path` and applies every setting it holds on top of `settings`.
/// Returns the problem found first in file order (unreadable file, TOML syntax error, unknown
/// table or key, wrong type, out of range, bad queue name); `settings` is left untouched then.
/// [queue_defaults] is applied before any [queues.NAME], wherever it appears in the file.
std::optional<ConfigError> load_file(const std::string& path, Settings& settings);

/// The same for TOML text already in memory; `path` names it in errors.
std::optional<ConfigError> load_text(std::string_view content, const std::string& path,
                                     Settings& settings);

/// Applies one setting given on the command line as `name` = `value`, e.g. "server.listen" =
/// "0.0.0.0:7450" or "queues.orders.lease_timeout" = "45s" (declares the queue if new, starting
/// from the current queue_defaults). `value` is text, parsed with the same rules as the file:
/// integers, sizes, durations, and strings without quotes. Error file is "command line".
std::optional<ConfigError> apply_setting(Settings& settings, std::string_view name,
                                         std::string_view value);

/// Fills the defaults that depend on where sluiced runs: storage.path, when not given, is the
/// first directory of $STATE_DIRECTORY (set by systemd's StateDirectory=), else
/// "sluice-data" in the working directory, made absolute.
void resolve_defaults(Settings& settings);

/// Checks what single settings cannot: every value in range (also for Settings built in code),
/// max_payload_bytes <= max_frame_bytes - 65536, declared queue names valid and unique.
/// Errors have file "" and line 0.
std::optional<ConfigError> validate(const Settings& settings);

/// Parses "host:port" where host is an IPv4 address, "[IPv6 address]" or "localhost".
/// On success sets `host` (IPv6 without brackets) and `port`; returns false if malformed or the
/// port is above 65535, leaving both untouched.
bool parse_endpoint(std::string_view text, std::string& host, uint16_t& port);

/// True when `host` (as server.listen stores it) is a loopback address: 127.0.0.0/8, ::1 or
/// "localhost".
bool is_loopback_host(std::string_view host);
/// True when the queue name `name` matches `pattern` ('*' = any run of characters).
bool pattern_matches(std::string_view pattern, std::string_view name);
/// "trace", "debug", "info", "warn" or "error" (the spelling log.level accepts).
std::string_view to_string(LogLevel level);

}  // namespace sluice::config
