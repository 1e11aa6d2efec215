// A named queue and the consumers subscribed to it. Plain state owned and
// mutated by the Engine (its friend); sessions hold Consumer pointers as
// handles and read the counters. Not thread-safe: engine thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "message_store.hpp"
#include "sluice/protocol/frames.hpp"

namespace sluice::engine {

/// Per-queue behaviour, resolved from config when the queue is created.
struct QueueOptions {
  Micros lease = 30'000'000;                     // default visibility timeout
  std::uint32_t max_consumer_in_flight = 10000;  // highest credit one consumer may ask for
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

 protected:
  ~DeliverySink() = default;
};

/// Counters and gauges of one queue, as STATS reports them.
struct QueueCounters {
  std::uint64_t ready = 0;
  std::uint64_t delayed = 0;
  std::uint64_t in_flight = 0;
  std::uint64_t bytes = 0;
  std::uint64_t published_total = 0;
  std::uint64_t delivered_total = 0;
  std::uint64_t acked_total = 0;
  std::uint64_t nacked_total = 0;
  std::uint64_t expired_total = 0;   // leases that ran out
  std::uint64_t requeued_total = 0;  // returned at once because the consumer left
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
  DeliverySink& sink() const noexcept { return *sink_; }

 private:
  friend class Engine;
  bool can_take() const noexcept { return !paused_ && !draining_ && in_flight_ < credit_; }

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
};

class Queue {
 public:
  const std::string& name() const noexcept { return name_; }
  const QueueOptions& options() const noexcept { return options_; }
  const QueueCounters& counters() const noexcept { return counters_; }
  std::size_t consumer_count() const noexcept { return consumers_.size(); }

 private:
  friend class Engine;

  std::string name_;
  QueueOptions options_;
  QueueCounters counters_;
  std::deque<std::uint32_t> ready_;  // slot indices, oldest first
  std::deque<Consumer*> ring_;       // consumers with free credit, round-robin order
  std::vector<std::unique_ptr<Consumer>> consumers_;  // including draining ones
};

}  // namespace sluice::engine
