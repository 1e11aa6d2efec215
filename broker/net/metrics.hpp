// Metrics: the Prometheus exposition of everything the broker counts. Built
// on prometheus-cpp's data model and text serializer, but not its registry:
// the engine already keeps its counters (plain integers on its own thread),
// so a scrape reads them where they are instead of every operation updating a
// second, atomic copy. Names follow Prometheus conventions (sluice_ prefix,
// _total counters, seconds and bytes); the only labels are the queue name
// (bounded by limits.max_queues), a state, a reason and a listener.
//
// Engine thread only (the HTTP listener runs there).
#pragma once

#include <prometheus/collectable.h>

#include <string>
#include <vector>

namespace sluice::engine {
class Engine;
}

namespace sluice::net {

class Broker;
class Listener;
class HttpServer;
struct HttpRequestCounts;
class DurableStore;

class Metrics final : public prometheus::Collectable {
 public:
  /// `broker.store()` may be null (no storage).
  explicit Metrics(const Broker& broker);
  /// The listeners, once they exist (their connection counts).
  void set_protocol(const Listener* protocol) noexcept { protocol_ = protocol; }
  void set_http(const HttpServer* http) noexcept { http_ = http; }
  /// The HTTP API's answers by route and status class (sluice_http_requests_total).
  void set_http_requests(const HttpRequestCounts* counts) noexcept { http_requests_ = counts; }
  void set_ready(bool ready) noexcept { ready_ = ready; }
  /// metrics.per_queue: queue-name patterns shown one by one; the rest sum into queue="_other".
  void set_per_queue(std::vector<std::string> patterns) { per_queue_ = std::move(patterns); }

  std::vector<prometheus::MetricFamily> Collect() const override;
  /// Collect() in the text exposition format (version 0.0.4).
  std::string scrape() const;

 private:
  const Broker& broker_;
  const engine::Engine& engine_;
  const DurableStore* store_;
  const Listener* protocol_ = nullptr;
  const HttpServer* http_ = nullptr;
  const HttpRequestCounts* http_requests_ = nullptr;
  bool ready_ = false;
  std::vector<std::string> per_queue_{"*"};
};

}  // namespace sluice::net
