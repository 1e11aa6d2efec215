// HttpApi: the HTTP face of the broker (docs/http-api.md). Producers POST
// messages; consumers in any language receive, ack, nack and extend with
// receipt handles; operators read /metrics, health, queue stats and the
// dead-letter queues. It speaks to the same engine as the binary protocol and
// under the same rules: an HTTP receive is a consumer with credit = its
// max_messages, so concurrency caps, rate limits and leases apply exactly as
// they do to protocol consumers.
//
// Engine thread only. Not a socket in sight: requests arrive as HttpRequest
// values from HttpServer (or a test) and leave through Respond.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine.hpp"
#include "http_types.hpp"

namespace sluice::net {

class Server;
class DurableStore;
class Metrics;

struct HttpApiOptions {
  std::uint32_t max_payload_bytes = 1u << 20;  // limits.max_payload_bytes
  std::uint32_t max_batch = 1000;              // messages per batch publish
  std::uint32_t max_receive = 1000;            // max_messages per receive
  std::chrono::milliseconds max_wait{20000};   // longest long poll
};

class HttpApi final : public engine::DeliverySink {
 public:
  HttpApi(Server& server, const Metrics& metrics, HttpApiOptions options);
  ~HttpApi();
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  /// Answers one request (now, or later for a long poll or a durable publish).
  void handle(HttpRequest&& request, Respond respond);
  /// Recovery done and listening: /readyz says so.
  void set_ready(bool ready) noexcept { ready_ = ready; }
  /// Shutting down: /readyz fails, waiting receives answer with what they have.
  void stop();

  // engine::DeliverySink: deliveries to the consumers behind waiting receives.
  bool deliver(engine::Consumer& consumer, const protocol::Delivery& delivery) override;
  void released(engine::Consumer& consumer) override;

 private:
  struct Receive;
  struct Route;
  void route(const HttpRequest& request, Respond& respond);

  void publish_one(const HttpRequest& request, std::string_view queue, Respond& respond);
  void publish_batch(const HttpRequest& request, std::string_view queue, Respond& respond);
  void receive(const HttpRequest& request, std::string_view queue, Respond& respond);
  void settle(const HttpRequest& request, std::string_view queue, std::string_view verb,
              Respond& respond);
  void queue_list(Respond& respond);
  void queue_show(std::string_view queue, Respond& respond);
  void dead_letters(const HttpRequest& request, std::string_view queue, std::string_view rest,
                    Respond& respond);
  void log_level(const HttpRequest& request, Respond& respond);

  /// Finishes a receive: unsubscribes its consumer and answers with what it got.
  void finish(Receive& receive);

  Server& server_;
  engine::Engine& engine_;
  const Metrics& metrics_;
  HttpApiOptions options_;
  bool ready_ = false;
  bool stopping_ = false;
  std::uint32_t next_subscription_ = 1;
  std::uint64_t next_receive_ = 1;
  Receive* subscribing_ = nullptr;  // the receive whose subscribe is running
  std::unordered_map<engine::Consumer*, std::unique_ptr<Receive>> receives_;
  std::shared_ptr<HttpApi*> alive_;  // timers and posted handlers check it
};

}  // namespace sluice::net
