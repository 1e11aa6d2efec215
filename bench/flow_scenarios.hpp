// Flow-control scenarios of sluice-bench: a burst into a bounded, rate-limited
// queue, and a consumer that stops reading beside one that does not.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sluice/client/client.hpp"

namespace sluice::bench {

/// A connection to the broker, or nullptr after saying on stderr why not.
/// `max_batch_bytes` 0 keeps the library's default; 1 sends each message in a PUBLISH frame of its
/// own.
std::unique_ptr<client::Connection> connect_or_report(const std::string& host, std::uint16_t port,
                                                      const char* name,
                                                      std::size_t max_unconfirmed = 16384,
                                                      std::size_t max_batch_bytes = 0);

struct FlowConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7450;
  std::string queue;
  bool json = false;
  std::uint64_t burst = 200'000;  // messages published at once
  std::uint32_t size = 100;
  double dispatch_rate = 50'000;    // the queue's configured drain rate (0: none)
  std::uint64_t capacity = 20'000;  // the queue's max_messages
  std::uint32_t consumers = 4;
  std::uint32_t in_flight = 64;
  pid_t broker_pid = 0;           // for peak RSS (VmHWM); 0: not measured
  std::string series;             // burst: write "seconds depth rss_mib delivered/10" lines here
  std::uint32_t queues = 10'000;  // queues scenario
  std::uint32_t connections = 1'000;  // connections scenario
};

/// Peak resident size of `pid` in MiB (VmHWM), or -1 when unknown.
double peak_rss_mib(pid_t pid);

/// Publishes `burst` messages at once into a queue set to `capacity` with
/// overflow block and `dispatch_rate`, drains it with `consumers`, and prints
/// burst size, peak depth, peak broker RSS, time the producer was throttled
/// and the achieved drain rate against the configured one. Exit status as
/// sluice-bench's.
int run_burst(const FlowConfig& config);

/// For each dispatch rate from 1/s to 100,000/s: a backlog in a queue with
/// that rate, drained by one consumer with ample credit; prints the achieved
/// rate in the steady state (after the bucket's burst) and its error.
int run_rate_limit(const FlowConfig& config);

/// `queues` queues (default 10,000): 4 consumer connections subscribe to all
/// of them, one producer publishes 10 messages into each; prints subscribe
/// time, publish and end-to-end rates and the broker's peak RSS.
int run_queues(const FlowConfig& config);

/// `connections` consumer connections (default 1,000) on one queue, credit 8
/// each, one producer; prints the rate, the fewest and most messages one
/// consumer got, the peak held against the credit and the broker's RSS.
int run_connections(const FlowConfig& config);

/// Measures one consumer's throughput alone, then beside a consumer of the
/// same queue that stops reading its socket; prints both and the slowdown.
int run_slow_consumer(const FlowConfig& config);

}  // namespace sluice::bench
