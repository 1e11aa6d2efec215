// Sluice through its own client library, as users run it: publish_async with
// confirms (the library keeps at most `window` unconfirmed), subscribe with a
// credit of `prefetch`, ack each delivery (the library batches the acks).
#include <atomic>

#include "../flow_scenarios.hpp"
#include "peer.hpp"
#include "sluice/client/client.hpp"

namespace sluice::bench::peers {
namespace {

class SluiceProducer final : public Producer {
 public:
  SluiceProducer(std::unique_ptr<client::Connection> c, std::string queue)
      : connection_(std::move(c)), queue_(std::move(queue)) {}

  void publish(std::string_view payload) override {
    connection_->publish_async(queue_, payload, [this](const client::Error& e, std::uint64_t) {
      if (e) failed_.fetch_add(1, std::memory_order_relaxed);
    });
  }
  void flush() override {}  // the library's I/O thread writes as soon as it can
  bool wait_confirms(std::chrono::seconds timeout) override {
    return connection_->wait_confirms(timeout);
  }
  std::uint64_t failures() const override { return failed_.load(); }

 private:
  std::unique_ptr<client::Connection> connection_;
  std::string queue_;
  std::atomic<std::uint64_t> failed_{0};
};

class SluiceConsumer final : public Consumer {
 public:
  SluiceConsumer(std::unique_ptr<client::Connection> c, std::string queue, std::uint32_t prefetch)
      : connection_(std::move(c)), queue_(std::move(queue)), prefetch_(prefetch) {}

  void start(Handler handler) override {
    auto sub = connection_->subscribe(queue_, {.max_in_flight = prefetch_},
                                      [h = std::move(handler)](const client::Delivery& d) {
                                        h(d.payload);
                                        return client::Disposition::ack;
                                      });
    if (!sub) error_ = "sluice: subscribe: " + sub.error().to_string();
  }
  void stop() override { connection_.reset(); }
  std::string error() const override { return error_; }

 private:
  std::unique_ptr<client::Connection> connection_;
  std::string queue_;
  std::uint32_t prefetch_;
  std::string error_;
};

class Sluice final : public Peer {
 public:
  explicit Sluice(const PeerOptions& o) : options_(o) {}

  std::string prepare() override {
    auto c = connect_or_report(options_.host, options_.port, "sluice-compare", options_.window);
    if (!c) return "sluice: cannot connect";
    if (options_.durable)
      if (auto e = c->configure(options_.queue, {{"durability", "durable"}}))
        return "sluice: durability = durable: " + e.to_string();
    return {};
  }
  std::unique_ptr<Producer> producer(std::string& error) override {
    auto c = connect_or_report(options_.host, options_.port, "sluice-compare", options_.window,
                               options_.single_frames ? 1 : 0);
    if (!c) {
      error = "sluice: cannot connect";
      return nullptr;
    }
    return std::make_unique<SluiceProducer>(std::move(c), options_.queue);
  }
  std::unique_ptr<Consumer> consumer(std::string& error) override {
    auto c = connect_or_report(options_.host, options_.port, "sluice-compare", options_.window);
    if (!c) {
      error = "sluice: cannot connect";
      return nullptr;
    }
    return std::make_unique<SluiceConsumer>(std::move(c), options_.queue, options_.prefetch);
  }

 private:
  PeerOptions options_;
};

}  // namespace

std::unique_ptr<Peer> make_sluice(const PeerOptions& options) {
  return std::make_unique<Sluice>(options);
}

}  // namespace sluice::bench::peers
