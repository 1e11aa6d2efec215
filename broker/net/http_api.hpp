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
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "auth.hpp"
#include "engine.hpp"
#include "http_types.hpp"
#include "intake.hpp"
#include "publish_draft.hpp"
#include "stats_history.hpp"

namespace sluice::net {

class Broker;
class DurableStore;
class Metrics;
class Triggers;

struct HttpApiOptions {
  std::uint32_t max_payload_bytes = 1u << 20;  // limits.max_payload_bytes
  std::uint32_t max_batch = 1000;              // messages per batch publish
  std::uint32_t max_receive = 1000;            // max_messages per receive
  /// A receive takes no more messages once it holds this many bytes (one always goes).
  std::uint64_t max_response_bytes = 4u << 20;
  std::chrono::milliseconds max_wait{20000};  // longest long poll
};

/// Requests answered by route (a fixed set: the queue name is not a label) and status class.
struct HttpRequestCounts {
  static constexpr std::string_view kRoutes[] = {
      "/healthz",
      "/readyz",
      "/metrics",
      "/v1/log-level",
      "/v1/triggers",
      "/v1/sources/{source}",
      "/v1/stats/history",
      "/ui/",
      "/v1/queues",
      "/v1/queues/{queue}",
      "/v1/queues/{queue}/messages",
      "/v1/queues/{queue}/messages/batch",
      "/v1/queues/{queue}/receive",
      "/v1/queues/{queue}/ack",
      "/v1/queues/{queue}/nack",
      "/v1/queues/{queue}/extend",
      "/v1/queues/{queue}/dlq",
      "/v1/queues/{queue}/purge",
      "other",
  };
  static constexpr std::size_t kRouteCount = std::size(kRoutes);
  /// The route a request path counts under.
  static std::size_t route_of(std::string_view path) noexcept;
  /// [route][status / 100 - 1]: 1xx to 5xx.
  std::uint64_t counts[kRouteCount][5] = {};
};

class HttpApi final {
 public:
  HttpApi(Broker& broker, const Metrics& metrics, HttpApiOptions options);
  ~HttpApi();
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  /// Answers one request (now, or later for a long poll or a durable publish).
  void handle(HttpRequest&& request, Respond respond);
  /// Recovery done and listening: /readyz says so.
  void set_ready(bool ready) noexcept { ready_ = ready; }
  /// Shutting down: /readyz fails, waiting receives answer with what they have.
  void stop();
  /// After the token table changed: a receive whose token lost the right to
  /// consume its queue gives its messages back at once (and a waiting one
  /// answers 401 or 403).
  void recheck_grants();
  /// Requests answered so far, for sluice_http_requests_total.
  const HttpRequestCounts& request_counts() const noexcept { return counts_; }

 private:
  struct Receive;
  void route(const HttpRequest& request, Respond& respond);
  /// True when `grant` may do `what` on `queue`; otherwise answers 401/403 and false.
  bool allowed(Grant& grant, Permission what, std::string_view queue, Respond& respond);

  /// The queue (created on first use), or nullptr after answering too_many_queues.
  engine::Queue* open_queue(std::string_view name, Respond& respond);
  /// Answers a publish: now, or on a durable queue once what it wrote is on disk.
  void answer_published(const engine::Queue& queue, HttpResponse response, Respond& respond);
  /// One request to an endpoint under /v1/queues/{queue}/ (see kQueueRoutes).
  struct QueueCall {
    const HttpRequest& request;
    std::string_view queue;
    std::string_view action;  // what follows the queue name
    std::string_view rest;    // the action's path after its name ("" or "/...")
    const Grant& grant;
  };
  struct QueueRoute;
  static const QueueRoute kQueueRoutes[];
  void publish_one(const QueueCall& call, Respond& respond);
  void publish_batch(const QueueCall& call, Respond& respond);
  /// CloudEvents in structured mode (one event) or batch mode (an array).
  void publish_events(const QueueCall& call, bool batch, Respond& respond);
  /// Encodes `drafts`, offers them to `queue` and answers: one message's
  /// answer, or a batch's. False when refused (answered with the error);
  /// taken_ tells what came of it either way.
  bool publish_drafts(std::string_view queue, std::vector<PublishDraft>& drafts, bool batch,
                      Respond& respond);
  /// GET /v1/stats/history?queue=A&queue=B[&seconds=N]: each visible queue's
  /// last N seconds (StatsHistory), for the console.
  void stats_history(const HttpRequest& request, Grant& grant, Respond& respond);
  /// Samples every queue once a second into history_.
  void arm_history();
  /// GET /ui/...: the web console's files (ui/), with a strict CSP.
  void console_file(std::string_view path, Respond& respond);
  /// POST /v1/sources/NAME: a verified webhook (sources.hpp); no bearer token.
  void source(const HttpRequest& request, std::string_view name, Respond& respond);
  void receive(const QueueCall& call, Respond& respond);
  /// ack, nack or extend (the action names it).
  void settle(const QueueCall& call, Respond& respond);
  /// GET /v1/queues[?limit=N&after=NAME&contains=TEXT]: by name, a page at a time.
  void queue_list(const HttpRequest& request, Grant& grant, Respond& respond);
  void queue_show(const QueueCall& call, Respond& respond);
  /// The rights `grant` has on `queue` ("publish", "consume", "admin").
  std::vector<std::string> rights(Grant& grant, std::string_view queue) const;
  /// PUT /v1/queues/Q (create; a JSON object of settings), PATCH /v1/queues/Q
  /// (live settings, as sluicectl set), DELETE /v1/queues/Q (?force=true),
  /// POST /v1/queues/Q/purge.
  void queue_lifecycle(const QueueCall& call, Respond& respond);
  void dead_letters(const QueueCall& call, Respond& respond);
  void log_level(const HttpRequest& request, Respond& respond);
  /// /v1/triggers[/NAME[/ACTION]]: `rest` is what follows "/v1/triggers/".
  void triggers(const HttpRequest& request, std::string_view rest, Grant& grant, Respond& respond);

  /// A delivery to `receive`'s consumer; false: no more for now.
  bool on_delivery(Receive& receive, const protocol::Delivery& delivery);
  /// Answers a receive with what it got; its consumer is paused, then
  /// unsubscribed once the answer is written (or disconnected if it cannot be).
  void finish(Receive& receive);
  /// finish() from a timer or a posted handler, if the receive still waits.
  void finish_later(std::uint64_t receive_id);
  /// The receive's queue was deleted (inside the engine's call): answered
  /// queue_not_found if it still waits, and forgotten.
  void queue_deleted(std::uint64_t receive_id);

  Broker& broker_;
  engine::Engine& engine_;
  const Metrics& metrics_;
  HttpRequestCounts counts_;
  HttpApiOptions options_;
  Intake intake_;
  IntakeResult taken_;  // of the last publish
  bool ready_ = false;
  bool stopping_ = false;
  std::uint32_t next_subscription_ = 1;
  std::uint64_t next_receive_ = 1;
  std::unordered_map<std::uint64_t, std::unique_ptr<Receive>> receives_;  // by id
  StatsHistory history_;
  std::unique_ptr<boost::asio::steady_timer> history_timer_;
  std::shared_ptr<HttpApi*> alive_;  // timers and posted handlers check it
};

}  // namespace sluice::net
