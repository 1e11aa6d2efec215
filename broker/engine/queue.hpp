// A named queue and the consumers subscribed to it. Plain state owned and
// mutated by the Engine (its friend); sessions hold Consumer pointers as
// handles and read the counters. Not thread-safe: engine thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "dedup_ledger.hpp"
#include "histogram.hpp"
#include "key_lanes.hpp"
#include "message_store.hpp"
#include "ready_spool.hpp"
#include "resequencer.hpp"
#include "retry_policy.hpp"
#include "sluice/protocol/frames.hpp"
#include "token_bucket.hpp"

namespace sluice::engine {

/// What a queue does when a publish would take it past its high watermark.
enum class Overflow : std::uint8_t {
  block,   // stop reading the publishing connection until below the low watermark
  reject,  // refuse the publish with queue_full and a retry-after
};

/// A token bucket's setting: rate in milli-messages per second (0 = unlimited).
struct RateLimit {
  MilliRate rate = 0;
  std::uint32_t burst = 1;
};

/// Per-queue behaviour, resolved from config when the queue is created.
struct QueueOptions {
  Micros lease = 30'000'000;                     // default visibility timeout
  std::uint32_t max_consumer_in_flight = 10000;  // highest credit one consumer may ask for
  // Capacity: messages held in any state, and their encoded bytes.
  std::uint64_t max_messages = 1'000'000;
  std::uint64_t max_bytes = 256ull << 20;
  std::uint8_t high_watermark_pct = 100;  // overflow acts at this % of either maximum
  std::uint8_t low_watermark_pct = 80;    // and stops once below this %
  Overflow overflow = Overflow::block;
  RateLimit dispatch_rate;          // deliveries/s to all consumers together
  MilliRate max_consumer_rate = 0;  // cap on what a consumer may ask for (0 = none)
  RateLimit ingress_rate;           // published messages/s
  std::uint32_t max_in_flight = 0;  // queue-wide concurrency cap (0 = none)
  // Messages are keyed by the value of this header (absent: the empty key).
  // Keys serve per-key rates (key_rate), ordering and the resequencer.
  std::string key_header{protocol::kKeyHeader};
  RateLimit key_rate;  // each key gets a bucket of key_rate (0: none)
  // Ordering keys: FIFO per key, at most one message of a key out at a time.
  bool ordered = false;
  RetryPolicy retry;
  // Publishes carrying sluice-dedup-id are remembered this long (0: no dedup).
  Micros dedup_window = 300'000'000;
  std::uint32_t dedup_max_entries = 100'000;
  // Resequencing stage for messages carrying sluice-seq (per key).
  bool resequence = false;
  Micros gap_timeout = 5'000'000;
  // Dead-letter retention (applied by the store that keeps them).
  std::uint64_t dlq_max_entries = 100'000;
  Micros dlq_retention = 14LL * 24 * 3600 * 1'000'000;
  // Publishes are committed to the journal before they are confirmed or
  // delivered (needs Engine::set_journal).
  bool durable = false;
  /// Ready messages are split into lanes by key (per-key rates or ordering).
  bool keyed() const noexcept { return !key_header.empty() && (key_rate.rate != 0 || ordered); }
};

/// A connection blocked from publishing into a full (overflow = block) or
/// throttled queue; the engine calls `room` once it may try again. Called from
/// inside engine operations; it must not call back into the engine there.
class PublishWaiter {
 public:
  virtual void room(Queue& queue) = 0;

 protected:
  ~PublishWaiter() = default;
};

/// Receives deliveries for the consumers of one connection. Called
/// synchronously from inside engine operations; it must not call back into the
/// engine. Returns false when it wants no more deliveries for now (its
/// outbound buffer is full): the engine then pauses that consumer until
/// Engine::resume.
class DeliverySink {
 public:
  virtual bool deliver(Consumer& consumer, const protocol::Delivery& delivery) = 0;
  /// An unsubscribed consumer settled its last lease and was freed: forget it.
  virtual void released(Consumer& consumer) = 0;
  /// The consumer's queue was deleted: forget it (the engine frees it right
  /// after; what it held is gone, so its leases are stale).
  virtual void ended(Consumer& consumer) = 0;

 protected:
  ~DeliverySink() = default;
};

/// Why a publish was held back (blocked or refused): the metrics' `reason` label.
enum class Throttle : std::uint8_t {
  capacity,  // the queue is at its high watermark
  memory,    // the broker-wide memory limit
  storage,   // storage is full (durable queues)
  rate,      // the queue's ingress rate
};
inline constexpr std::size_t kThrottleReasons = 4;

/// Counters and gauges of one queue, as STATS reports them.
struct QueueCounters {
  std::uint64_t staged = 0;  // durable publishes waiting for their commit
  std::uint64_t ready = 0;
  std::uint64_t delayed = 0;  // delayed publishes and retries waiting for their backoff
  std::uint64_t in_flight = 0;
  std::uint64_t held = 0;            // in the resequencer
  std::uint64_t dead_lettering = 0;  // dead-letter record being written
  std::uint64_t bytes = 0;
  std::uint64_t published_total = 0;
  std::uint64_t delivered_total = 0;
  std::uint64_t acked_total = 0;
  std::uint64_t nacked_total = 0;
  std::uint64_t expired_total = 0;   // leases that ran out
  std::uint64_t requeued_total = 0;  // returned at once because the consumer left
  std::uint64_t refused_total = 0;   // publishes refused with queue_full (reject)
  std::uint64_t blocked_total = 0;   // times a publishing connection was blocked
  std::uint64_t retried_total = 0;   // failed attempts given another try
  std::uint64_t dead_lettered_total = 0;
  std::uint64_t duplicates_total = 0;  // publishes not enqueued again (dedup id, sequence)
  /// Publishes held back (blocked or refused) by reason, indexed by Throttle.
  std::uint64_t throttled_total[kThrottleReasons] = {};
  /// Time the dispatcher waited for the queue's dispatch rate (µs).
  std::uint64_t rate_wait_us_total = 0;

  std::uint64_t messages() const noexcept {
    return staged + ready + delayed + in_flight + held + dead_lettering;
  }
};

class Consumer {
 public:
  Queue& queue() const noexcept { return *queue_; }
  std::uint32_t subscription_id() const noexcept { return subscription_id_; }
  std::uint32_t credit() const noexcept { return credit_; }
  std::uint32_t in_flight() const noexcept { return in_flight_; }
  /// Highest in_flight ever reached (the per-consumer limit check in tests).
  std::uint32_t peak_in_flight() const noexcept { return peak_in_flight_; }
  bool paused() const noexcept { return paused_; }
  /// Unsubscribed, its leases still running.
  bool draining() const noexcept { return draining_; }
  /// The rate it asked for (0: none).
  MilliRate rate() const noexcept { return rate_.rate(); }
  DeliverySink& sink() const noexcept { return *sink_; }

 private:
  friend class Engine;
  bool can_take() const noexcept {
    return !paused_ && !draining_ && !throttled_ && in_flight_ < credit_;
  }

  Queue* queue_ = nullptr;
  DeliverySink* sink_ = nullptr;
  Micros lease_ = 0;
  std::uint32_t subscription_id_ = 0;
  std::uint32_t credit_ = 0;
  std::uint32_t in_flight_ = 0;
  std::uint32_t peak_in_flight_ = 0;
  std::uint32_t inflight_head_ = kNil;  // intrusive list through Slot::prev/next
  bool paused_ = false;
  bool draining_ = false;  // unsubscribed: no new deliveries, leases stay valid
  bool in_ring_ = false;
  bool throttled_ = false;  // its rate bucket is empty: waits in Queue::throttled_
  bool prepaid_ = false;    // holds a token taken when it came due (see Engine::on_wakeup)
  Micros rate_due_ = kNever;
  TokenBucket rate_;
};

class Queue {
 public:
  const std::string& name() const noexcept { return name_; }
  const QueueOptions& options() const noexcept { return options_; }
  const QueueCounters& counters() const noexcept { return counters_; }
  /// Publishes go through the journal first (see Engine::publish).
  bool durable() const noexcept { return options_.durable; }
  std::size_t consumer_count() const noexcept { return consumers_.size(); }
  /// Keys with a lane now (per-key rates on): the ones holding messages or still refilling.
  std::size_t key_lanes() const noexcept { return lanes_ ? lanes_->lanes() : 0; }
  /// Calls `f(const Consumer&)` for each consumer (draining ones too).
  template <typename F>
  void for_each_consumer(F&& f) const {
    for (const auto& c : consumers_) f(*c);
  }
  /// Calls `f(const KeyLane&)` for each key with a lane (keyed queues only).
  template <typename F>
  void for_each_key_lane(F&& f) const {
    if (lanes_) lanes_->for_each_lane(f);
  }
  /// How full the queue is against its high watermark, 0..100 (the CONFIRM pressure hint).
  std::uint8_t pressure() const noexcept;
  /// Dedup entries dropped before their window ended (the ledger was full).
  std::uint64_t dedup_evicted() const noexcept { return dedup_.evicted(); }
  /// Gaps the resequencer released after the gap timeout.
  std::uint64_t sequence_gaps() const noexcept { return stage_ ? stage_->gaps() : 0; }
  /// Publish to first delivery, µs (includes a delay the producer asked for).
  const Histogram& delivery_latency() const noexcept { return delivery_latency_; }
  /// Delivery to ack, µs.
  const Histogram& processing_time() const noexcept { return processing_time_; }

 private:
  friend class Engine;

  std::string name_;
  QueueOptions options_;
  QueueCounters counters_;
  // Unkeyed queues: ready messages, in the order they go out. `front_` is a
  // stack of slots put back at the front (the last one pushed goes first);
  // then the spool, oldest first.
  std::vector<std::uint32_t> front_;
  ReadySpool spool_;
  std::unique_ptr<KeyLanes> lanes_;     // keyed queues: ready messages by key
  std::unique_ptr<Resequencer> stage_;  // resequencing queues
  DedupLedger dedup_;
  std::deque<Consumer*> ring_;  // consumers with free credit, round-robin order
  std::vector<std::unique_ptr<Consumer>> consumers_;  // including draining ones
  std::vector<Consumer*> throttled_;                  // waiting for their rate bucket
  std::vector<PublishWaiter*> waiters_;               // blocked publishers
  TokenBucket dispatch_bucket_;
  TokenBucket ingress_bucket_;
  bool full_ = false;              // hit the high watermark; clears below the low one
  bool dispatch_prepaid_ = false;  // a dispatch token taken when it came due
  Micros dispatch_due_ = kNever;
  Micros wakeup_at_ = kNever;  // earliest scheduled Engine wake-up for this queue
  Histogram delivery_latency_{kLatencyBoundsUs};
  Histogram processing_time_{kLatencyBoundsUs};
};

}  // namespace sluice::engine
