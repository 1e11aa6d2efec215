// The Sluice C++ client: one Connection to a broker, usable as a producer
// (publish with confirms, batched, async or blocking) and as a consumer
// (subscribe with a concurrency limit and a handler per message).
//
// Threading: each Connection runs one I/O thread of its own. Every public
// method is thread-safe. Handlers (without SubscribeOptions::workers), publish
// callbacks and the connection-state callback run on the I/O thread: they must
// not block, and must not call the blocking methods (those return
// errc::invalid_argument when called from the I/O thread). Handlers of a
// subscription with workers run on its worker threads and may do anything
// but unsubscribe or destroy the connection.
//
// Reconnecting: when the connection drops after connect() (a broker restart, a
// network blip), the library reconnects by itself (Options::reconnect) and
// subscribes again with the same settings. What the broker had delivered and
// not yet seen settled it delivers again (at least once); requests that were
// on the wire fail with errc::outcome_unknown (a publish may or may not have
// been taken) unless Options::resend_unconfirmed; requests made while it is
// reconnecting wait for the new connection (up to request_timeout).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/protocol/errc.hpp"
#include "sluice/protocol/error.hpp"

namespace sluice::client {

/// A typed failure: sluice::Error (`code` from sluice::errc, `detail` in the
/// broker's or library's words), and when to try again.
struct Error : sluice::Error {
  using sluice::Error::Error;
  Error() = default;
  Error(errc code, std::string detail, std::chrono::milliseconds retry)
      : sluice::Error(code, std::move(detail)), retry_after(retry) {}
  /// With queue_full: the broker's estimate of when trying again is worthwhile.
  std::chrono::milliseconds retry_after{0};
  /// "stale_lease: lease expired" style text.
  std::string to_string() const;
};

/// A value or an Error.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}      // NOLINT: implicit on purpose
  Result(Error error) : error_(std::move(error)) {}  // NOLINT
  bool ok() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return ok(); }
  const T& value() const& { return value_; }
  T& value() & { return value_; }
  T&& value() && { return std::move(value_); }
  const T& operator*() const& { return value_; }
  const T* operator->() const { return &value_; }
  const Error& error() const noexcept { return error_; }

 private:
  T value_{};
  Error error_;
};

/// A message to publish.
struct Message {
  std::string payload;
  std::vector<std::pair<std::string, std::string>> headers;
};

/// One delivery, as a handler sees it. The views are valid only during the
/// handler call; keep `handle()` to settle it later.
struct Delivery {
  std::uint32_t subscription_id = 0;
  std::uint64_t message_id = 0;
  std::uint64_t lease_token = 0;
  std::uint32_t attempt = 0;         // 1 on first delivery
  std::int64_t publish_time_us = 0;  // broker wall clock, µs since the Unix epoch
  std::uint32_t link = 0;            // the connection it came on (see LeaseHandle::link)
  std::string_view payload;
  std::vector<std::pair<std::string_view, std::string_view>> headers;

  /// The value of header `key`, or an empty view.
  std::string_view header(std::string_view key) const noexcept;
};

/// What identifies a lease, to ack/nack/extend after the handler returned.
struct LeaseHandle {
  std::uint64_t message_id = 0;
  std::uint64_t lease_token = 0;
  std::uint32_t subscription_id = 0;
  /// Which connection (counting reconnects from 1) it was delivered on; a lease
  /// from before a reconnect is stale (the broker delivers the message again).
  /// 0: not checked.
  std::uint32_t link = 0;
};
inline LeaseHandle handle(const Delivery& d) {
  return {d.message_id, d.lease_token, d.subscription_id, d.link};
}

/// One message fetch() returned: a copy the application owns, and its lease,
/// to settle with ack(), nack() or extend() like a manual delivery.
struct Fetched {
  LeaseHandle lease;
  std::uint32_t attempt = 0;         // 1 on first delivery
  std::int64_t publish_time_us = 0;  // broker wall clock, µs since the Unix epoch
  Message message;

  /// The value of header `key`, or an empty view.
  std::string_view header(std::string_view key) const noexcept;
};

/// What one subscription has seen, measured where the limit matters: a
/// delivery counts as held from its arrival until its ack or nack is sent.
struct SubscriptionStats {
  std::uint64_t received = 0;
  std::uint64_t held = 0;
  std::uint64_t peak_held = 0;  // never above max_in_flight if the broker keeps its promise
};

/// What a handler decides about a delivery.
enum class Disposition {
  ack,     // done: the broker forgets it
  nack,    // failed: redeliver (counts as a failed attempt)
  manual,  // the application settles it later with ack()/nack()
};

/// The connection's state, as Connection::state() and Options::on_state tell it.
enum class ConnectionState {
  connected,     // the link is up
  reconnecting,  // the link dropped; trying again (Options::reconnect)
  closed,        // for good: closed by the client, refused, or reconnecting gave up
};
std::string_view to_string(ConnectionState state) noexcept;

/// How a dropped connection is re-established.
struct ReconnectOptions {
  bool enabled = true;
  /// The first wait; each failed attempt doubles it up to max_delay. Each wait is a
  /// random point in its upper half, so clients of one broker spread out.
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{5000};
  /// Stop trying (state closed) when the link has been down this long; 0: never.
  std::chrono::milliseconds give_up_after{0};
};

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7450;
  std::string client_name = "sluice-client";
  /// The access token HELLO presents ("" = none; a broker with tokens configured
  /// then refuses the connection with unauthenticated).
  std::string token;
  /// Speak TLS and verify the broker's certificate chain against `ca_file`
  /// ("" = the system's trusted roots) and its name against `server_name`
  /// ("" = `host`; a DNS name or an IP address).
  bool tls = false;
  std::string ca_file;
  std::string server_name;
  std::chrono::milliseconds connect_timeout{5000};
  /// How long blocking calls wait for the broker's answer.
  std::chrono::milliseconds request_timeout{30000};
  /// A PUBLISH frame stops growing at this size; the next message opens another.
  std::size_t max_batch_bytes = 128 * 1024;
  /// Most published-but-unconfirmed messages; publish_async blocks past it.
  std::size_t max_unconfirmed = 16384;
  /// When a queue refuses publishes with queue_full (overflow = reject), keep
  /// retrying for this long, with exponential backoff (10 ms to 1 s, full
  /// jitter, never sooner than the broker's retry-after), before reporting
  /// queue_full. 0: report it at once. Costs a copy of each PUBLISH frame.
  std::chrono::milliseconds retry_queue_full_for{0};
  /// See ReconnectOptions. Credentials that are refused (unauthenticated,
  /// forbidden) and a protocol version the broker does not speak end the
  /// connection for good instead.
  ReconnectOptions reconnect;
  /// After a reconnect, publish again what was on the wire unconfirmed, instead of
  /// failing it with outcome_unknown. Each message then carries a sluice-dedup-id
  /// header (its own if it has one, else one the library makes), so a message the
  /// broker had taken is not enqueued twice (within the queue's dedup_window).
  /// Costs a copy of each PUBLISH frame until it is confirmed.
  bool resend_unconfirmed = false;
  /// Called on the I/O thread at each change after connect() returned: reconnecting
  /// (with why the link dropped, then with each failed attempt's error), connected,
  /// and closed (with why). Must not block.
  std::function<void(ConnectionState state, const Error& why)> on_state;
};

struct QueueStats {
  std::string name;
  std::uint64_t ready = 0;
  std::uint64_t delayed = 0;
  std::uint64_t in_flight = 0;
  std::uint64_t consumers = 0;
  std::uint64_t published_total = 0;
  std::uint64_t delivered_total = 0;
  std::uint64_t acked_total = 0;
  std::uint64_t nacked_total = 0;
  std::uint64_t expired_total = 0;
  std::uint64_t bytes = 0;     // encoded bytes held
  std::uint64_t pressure = 0;  // 0..100: how full against the high watermark
  std::uint64_t refused_total = 0;
  std::uint64_t blocked_total = 0;
  std::uint64_t staged = 0;  // durable publishes waiting for their commit
  std::uint64_t held = 0;    // in the resequencer, waiting for an earlier sequence number
  std::uint64_t retried_total = 0;
  std::uint64_t dead_lettered_total = 0;
  std::uint64_t duplicates_total = 0;  // publishes not enqueued again (dedup id, sequence)
  std::uint64_t dedup_evicted_total = 0;
  std::uint64_t sequence_gaps_total = 0;
  std::uint64_t dead_letters = 0;  // entries in the queue's dead-letter queue
  std::uint64_t redriving = 0;     // dead letters waiting to be redriven
};

/// A publish's outcome: its id, and whether the broker had seen it before
/// (same sluice-dedup-id within the window, or a sequence number seen): then
/// the id is the first message's and nothing new was enqueued.
struct Published {
  std::uint64_t id = 0;
  bool duplicate = false;
};

/// How to give a delivery back.
struct NackOptions {
  std::chrono::milliseconds delay{0};  // 0: the queue's retry backoff
  std::string reason;                  // kept with the message; shown in its dead letter
  bool dead_letter = false;            // poison: to the dead-letter queue now
};

/// One entry of a queue's dead-letter queue.
struct DeadLetter {
  std::uint64_t entry_id = 0;  // the DLQ's id (increasing in dead-letter order)
  std::uint64_t message_id = 0;
  std::string queue;  // origin queue
  std::uint32_t attempts = 0;
  std::int64_t publish_time_us = 0;  // Unix µs
  std::int64_t first_failure_us = 0;
  std::int64_t last_failure_us = 0;
  std::string reason;
  Message message;
};

/// One dead-letter operation (see PROTOCOL.md, DEAD_LETTERS).
struct DeadLetterQuery {
  enum class Op : std::uint8_t { list = 1, show = 2, redrive = 3, remove = 4, purge = 5 };
  Op op = Op::list;
  std::string queue;
  bool newest_first = false;       // list
  std::uint32_t limit = 100;       // list: per page (at most 1000)
  std::uint64_t after = 0;         // list: the previous page's next_after
  std::vector<std::uint64_t> ids;  // show: one; redrive/remove: these (redrive: none = filter)
  std::chrono::milliseconds min_age{0};  // filters: dead-lettered at least / at most this long
  std::chrono::milliseconds max_age{0};  // ago (0: any)
  std::string reason;                    // filter: the reason contains this
  double rate = 0;                       // redrive: messages per second (0: as fast as it can)
};

struct DeadLetterResult {
  std::uint64_t affected = 0;    // list: entries in the DLQ; otherwise entries acted on
  std::uint64_t next_after = 0;  // list: cursor of the next page (0: last page)
  std::vector<DeadLetter> entries;
};

/// One of the broker's triggers ([triggers.NAME]: it pushes a queue's messages to an HTTP
/// function).
struct TriggerState {
  std::string name;
  std::string queue;
  std::string url;
  bool paused = false;
  std::string breaker;    // "closed", "open" or "half_open"
  bool adaptive = false;  // concurrency = "adaptive"
  std::uint32_t concurrency_limit = 0;
  std::uint32_t in_flight = 0;
  std::uint64_t messages_sent = 0;
  /// Invocations by outcome: ok, failed, throttled, timeout, connect_error, dead_lettered.
  std::vector<std::uint64_t> invocations;
};

/// What a function answered to a test invocation.
struct TriggerInvocation {
  std::string outcome;       // "answered", "timeout", "connect_error" or "broken"
  std::uint16_t status = 0;  // answered: the HTTP status
  std::chrono::microseconds took{0};
  std::string error;  // not answered: what went wrong
  std::string body;   // answered: the body (at most 64 KiB of it)
};

/// One trigger operation (see PROTOCOL.md, TRIGGERS). Needs admin on the trigger's queue.
struct TriggerCommand {
  enum class Op : std::uint8_t { list = 1, pause = 2, resume = 3, invoke = 4 };
  Op op = Op::list;
  std::string name;  // list: "" = every trigger the token may administer
  std::string body;  // invoke: the test message's payload
};

struct TriggerResult {
  std::vector<TriggerState> triggers;           // list: those asked for; otherwise the one acted on
  std::optional<TriggerInvocation> invocation;  // invoke
};

/// One queue as Connection::queues lists it.
struct QueueInfo {
  std::string name;
  bool durable = false;
  std::uint64_t messages = 0;  // in any state
  std::uint32_t consumers = 0;
};

/// One queue-lifecycle operation (see PROTOCOL.md, QUEUES). create, remove and
/// purge need admin on the queue; list shows the queues the token may see.
struct QueueCommand {
  enum class Op : std::uint8_t { list = 1, create = 2, remove = 3, purge = 4 };
  Op op = Op::list;
  std::string queue;  // list: "" = every queue
  /// create: settings as in a [queues.NAME] table (none: the defaults).
  std::vector<std::pair<std::string, std::string>> settings;
  /// remove: also when it holds messages or has consumers (they end, and what
  /// it holds goes with it).
  bool force = false;
};

struct QueueResult {
  std::uint64_t affected = 0;     // create: 1; remove, purge: messages that went; list: queues
  std::vector<QueueInfo> queues;  // list: those asked for; create: the new queue
};

/// The broker's storage (durable queues), when it has a data directory.
struct StorageStats {
  std::uint64_t file_bytes = 0;     // the data file's size
  std::uint64_t used_bytes = 0;     // of which in use; the rest is free for reuse
  std::uint64_t limit_bytes = 0;    // storage.max_size
  std::uint64_t commits_total = 0;  // transactions (fsyncs with sync = fsync)
  std::uint64_t operations_total = 0;
  std::uint64_t median_batch = 0;  // operations per commit, median of the last 1024
  std::uint64_t waiting = 0;       // records waiting for room
  bool full = false;               // durable queues push back on publishers
  std::uint64_t failures_total = 0;
};

struct SubscribeOptions {
  std::uint32_t max_in_flight = 64;  // the most unacked deliveries this consumer holds
  /// 0: the handler runs on the connection's I/O thread and must not block (nor call
  /// this connection's blocking methods). N > 0: it runs on N threads of its own, may
  /// block and call anything; a return of ack or nack settles the delivery, a throw
  /// nacks it with the exception's message as the reason; max_in_flight becomes N, so
  /// the consumer holds at most N at once, one per worker. unsubscribe() and
  /// ~Connection wait for running handlers, so neither may be called from one.
  std::uint32_t workers = 0;
  std::chrono::milliseconds lease{0};  // 0: the queue's lease timeout
  double rate = 0;                     // deliveries per second to this consumer; 0: no limit
  std::uint32_t burst = 1;             // with rate: most deliveries at once after a pause
};

class Connection {
 public:
  using PublishCallback = std::function<void(const Error& error, std::uint64_t message_id)>;
  using Handler = std::function<Disposition(const Delivery& delivery)>;

  /// Connects, negotiates the protocol version and starts the I/O thread.
  /// Errors: connection_lost (refused/unreachable), timed_out, unsupported_version.
  static Result<std::unique_ptr<Connection>> connect(const Options& options);
  /// Closes the connection; unconfirmed publishes complete with connection_lost.
  /// Must not run inside this connection's own handler or callback (aborts).
  ~Connection();

  // ---- producer ----

  /// Queues `message` for `queue`; `done` runs on the I/O thread once the
  /// broker confirms (with the message id) or refuses it. Messages published
  /// back to back are batched into one frame. Blocks only while
  /// max_unconfirmed messages await confirms. `done` may be empty (fire and forget;
  /// wait_confirms still waits for it). On an idle plain-TCP connection (nothing
  /// being written, fewer than 8 publishes unconfirmed) the calling thread
  /// writes the message itself, without a hop to the I/O thread: see
  /// direct_publishes().
  void publish_async(std::string_view queue, const Message& message, PublishCallback done);
  /// Same, for a payload without headers.
  void publish_async(std::string_view queue, std::string_view payload, PublishCallback done);
  /// Publishes and waits for the confirm. Returns the message id.
  Result<std::uint64_t> publish(std::string_view queue, const Message& message);
  /// Publishes and waits; says whether it was a duplicate.
  Result<Published> publish_checked(std::string_view queue, const Message& message);
  /// Publishes many messages in one frame and waits; ids in the same order.
  Result<std::vector<std::uint64_t>> publish_batch(std::string_view queue,
                                                   std::span<const Message> messages);
  /// Waits until every publish so far is confirmed or failed. False on timeout.
  bool wait_confirms(std::chrono::milliseconds timeout);

  // ---- consumer ----

  /// Subscribes to `queue`; `handler` runs for each delivery: on the I/O
  /// thread, or on `options.workers` threads of the subscription's own (see
  /// SubscribeOptions::workers). Returns the subscription id.
  Result<std::uint32_t> subscribe(std::string_view queue, SubscribeOptions options,
                                  Handler handler);
  /// Stops deliveries to a subscription; what it holds can still be settled.
  Error unsubscribe(std::uint32_t subscription_id);
  /// Pulls up to `max_messages` (1..65535) from `queue`: returns as soon as that
  /// many arrived, or after `wait` with what did (perhaps none). Each is leased to
  /// this connection for `lease` (0: the queue's lease timeout) and must be
  /// settled with ack/nack. Blocking; not from the I/O thread. Errors as for
  /// subscribe; connection_lost when the connection dropped meanwhile (what it had
  /// got is the broker's again).
  Result<std::vector<Fetched>> fetch(std::string_view queue, std::uint32_t max_messages,
                                     std::chrono::milliseconds wait,
                                     std::chrono::milliseconds lease = std::chrono::milliseconds{
                                         0});
  /// Settles a lease; errc::stale_lease if it expired or was settled already.
  Error ack(LeaseHandle lease);
  /// Gives a lease back as a failed attempt; redelivered after `delay` (0: the
  /// queue's retry backoff), or dead-lettered once its attempts are used up.
  Error nack(LeaseHandle lease, std::chrono::milliseconds delay = std::chrono::milliseconds{0});
  /// The same with a reason, or straight to the dead-letter queue.
  Error nack(LeaseHandle lease, const NackOptions& options);
  /// Sets a lease to run `lease` from now.
  Error extend(LeaseHandle lease, std::chrono::milliseconds lease_time);
  /// Counters of an open subscription of this connection (zeros if unknown or
  /// unsubscribed).
  SubscriptionStats subscription_stats(std::uint32_t subscription_id) const;

  // ---- admin ----

  /// Statistics of one queue, or of all queues when `queue` is empty. A named
  /// queue that does not exist yields an empty list.
  Result<std::vector<QueueStats>> stats(std::string_view queue = {});
  /// Storage figures; nullopt when the broker has no data directory.
  Result<std::optional<StorageStats>> storage_stats();
  /// Changes settings of `queue` in the running broker (names as in a
  /// [queues.NAME] table of the config file, values as text). All or nothing;
  /// invalid_argument carries the broker's one-line explanation.
  Error configure(std::string_view queue,
                  const std::vector<std::pair<std::string, std::string>>& settings);
  /// Lists, shows, redrives, removes or purges dead letters of a queue.
  /// Errors: not_found (show), invalid_argument (a bad query).
  Result<DeadLetterResult> dead_letters(const DeadLetterQuery& query);
  /// Lists, pauses or resumes triggers, or invokes one's function with a test
  /// message (answered when the function answers, within the trigger's timeout).
  /// Errors: not_found (no such trigger), forbidden, invalid_argument.
  Result<TriggerResult> triggers(const TriggerCommand& command);
  /// Lists, creates, deletes or purges queues. Errors: queue_not_found,
  /// queue_exists (create), queue_in_use (delete), forbidden, invalid_argument.
  Result<QueueResult> queues(const QueueCommand& command);
  /// A round trip to the broker.
  Error ping();

  /// True while the link is up: false while reconnecting and once closed; see last_error().
  bool connected() const noexcept;
  ConnectionState state() const noexcept;
  /// Why the link last dropped or the connection closed, if it did.
  Error last_error() const;
  /// Automatic acks and nacks (a handler's return on the I/O thread) the
  /// broker refused, as stale leases; they are sent quietly (PROTOCOL.md, ACK).
  std::uint64_t refused_auto_acks() const noexcept;
  /// The pressure hint of the latest CONFIRM, 0..100: how full the queue last
  /// published to is. Producers can slow down before they hit the wall.
  std::uint8_t pressure() const noexcept;
  /// Messages publish_async wrote from the calling thread because the
  /// connection was idle; the rest were batched by the I/O thread.
  std::uint64_t direct_publishes() const noexcept;

  class Impl;

 private:
  explicit Connection(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace sluice::client
