// The one interface sluice-compare drives every broker through: Sluice (its
// client library) and the peers (Redis, beanstalkd, RabbitMQ, NATS
// JetStream), each over its own wire protocol. The workload, the clock, the
// loss check and the latency figures live in compare.cpp, once, so that what
// differs between rows is the broker and its protocol.
//
// Semantics every implementation must keep (at-least-once, as users run it):
//   - a publish counts only when the broker confirmed it (Sluice publish
//     confirm, Redis reply, beanstalkd INSERTED, RabbitMQ publisher confirm,
//     JetStream PubAck);
//   - a consumer holds at most `prefetch` unacked messages, and acks each one
//     after its handler ran (Sluice ACK, Redis LREM of the processing list,
//     beanstalkd delete, AMQP basic.ack, JetStream +ACK);
//   - both sides pipeline: a producer keeps up to `window` publishes
//     unconfirmed, a consumer writes its acks in batches.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace sluice::bench::peers {

struct PeerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string queue = "bench";   // queue, list, tube or stream name
  bool durable = false;          // persistent queue and messages where the peer has them
  std::uint32_t prefetch = 64;   // most unacked messages one consumer holds
  std::uint32_t window = 16384;  // most unconfirmed publishes one producer has out
  /// Sluice: one message per PUBLISH frame instead of the client's batching
  /// (each peer's own publish already carries one message).
  bool single_frames = false;
};

/// One producer connection, used by one thread.
class Producer {
 public:
  virtual ~Producer() = default;
  /// Publishes one message (possibly buffered); blocks while `window`
  /// publishes are unconfirmed.
  virtual void publish(std::string_view payload) = 0;
  /// Sends whatever publish() buffered.
  virtual void flush() = 0;
  /// Flushes and waits until every publish is confirmed or refused; false
  /// when the connection failed or `timeout` passed first.
  virtual bool wait_confirms(std::chrono::seconds timeout) = 0;
  /// Publishes the broker refused (negative confirms, error replies).
  virtual std::uint64_t failures() const = 0;
};

/// One consumer connection. start() runs the consume loop on a thread of its
/// own; `handler` sees each delivered payload once per delivery, on that
/// thread, before the message is acked.
class Consumer {
 public:
  using Handler = std::function<void(std::string_view payload)>;
  virtual ~Consumer() = default;
  virtual void start(Handler handler) = 0;
  /// Stops the loop and closes the connection (acks not yet written are dropped).
  virtual void stop() = 0;
  /// Why the loop ended early, or empty.
  virtual std::string error() const = 0;
};

class Peer {
 public:
  virtual ~Peer() = default;
  /// Makes the queue (stream, consumer...) the run uses; empty on success,
  /// else why not.
  virtual std::string prepare() = 0;
  /// nullptr after setting `error`.
  virtual std::unique_ptr<Producer> producer(std::string& error) = 0;
  virtual std::unique_ptr<Consumer> consumer(std::string& error) = 0;
};

std::unique_ptr<Peer> make_sluice(const PeerOptions& options);
std::unique_ptr<Peer> make_redis(const PeerOptions& options);
std::unique_ptr<Peer> make_beanstalkd(const PeerOptions& options);
std::unique_ptr<Peer> make_rabbitmq(const PeerOptions& options);
std::unique_ptr<Peer> make_nats(const PeerOptions& options);

}  // namespace sluice::bench::peers
