// The HTTP API's consumers: receive (a long poll) and ack / nack / extend by receipt.
#include "http_api.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>

#include "broker.hpp"
#include "durable_store.hpp"
#include "http_json.hpp"
#include "http_util.hpp"
#include "json_body.hpp"
#include "log.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::net {

/// One receive: its consumer (whose sink it is, so only its own receipts can
/// settle its leases), what it got so far, and its answer. It lives until its
/// consumer is freed: after the answer, while the client holds the leases.
struct HttpApi::Receive final : engine::DeliverySink {
  explicit Receive(HttpApi& owner) : api(owner) {}
  bool deliver(engine::Consumer&, const protocol::Delivery& d) override {
    return api.on_delivery(*this, d);
  }
  void released(engine::Consumer&) override { api.receives_.erase(id); }  // destroys this
  void ended(engine::Consumer&) override { api.queue_deleted(id); }       // destroys this

  HttpApi& api;
  std::uint64_t id = 0;
  std::uint64_t secret = 0;  // in every receipt: guessing one is guessing 64 random bits
  Grant grant;               // the token it was made with: a reload may revoke it
  engine::Consumer* consumer = nullptr;
  std::uint32_t max_messages = 1;
  std::uint64_t bytes = 0;  // of the messages got, bounded by max_response_bytes
  struct Got {
    std::uint64_t message_id;
    std::uint64_t lease_token;
    std::uint32_t attempt;
    std::uint64_t publish_time_us;
    std::string message;
  };
  std::vector<Got> got;
  Respond respond;
  std::unique_ptr<boost::asio::steady_timer> timer;
  bool finishing = false;  // answered (or about to be): no more deliveries
};

HttpApi::HttpApi(Broker& broker, const Metrics& metrics, HttpApiOptions options)
    : broker_(broker),
      engine_(broker.engine()),
      metrics_(metrics),
      options_(options),
      intake_(broker.engine(), broker.options().limits, &broker.schemas()),
      history_timer_(std::make_unique<boost::asio::steady_timer>(broker.io())),
      alive_(std::make_shared<HttpApi*>(this)) {
  arm_history();
}

void HttpApi::arm_history() {
  history_timer_->expires_after(std::chrono::seconds(1));
  history_timer_->async_wait([alive = alive_](const boost::system::error_code& ec) {
    HttpApi* self = *alive;
    if (ec || self == nullptr || self->stopping_) return;
    self->history_.sample(self->engine_);
    self->arm_history();
  });
}

void HttpApi::stop() {
  stopping_ = true;
  history_timer_->cancel();
  ready_ = false;
  std::vector<std::uint64_t> waiting;
  for (auto& [id, r] : receives_)
    if (!r->finishing) waiting.push_back(id);
  for (std::uint64_t id : waiting) finish_later(id);
}

HttpApi::~HttpApi() {
  *alive_ = nullptr;
}

void HttpApi::receive(const QueueCall& call, Respond& respond) {
  const HttpRequest& request = call.request;
  const std::string_view queue_name = call.queue;
  const Grant& grant = call.grant;
  if (stopping_) {
    respond(error_response(errc::shutting_down, "the broker is stopping"));
    return;
  }
  std::string problem;
  auto body = parse_body(request, true, {"max_messages", "wait_ms", "lease_ms"}, problem);
  std::uint64_t max_messages = 1, wait_ms = 0, lease_ms = 0;
  if (!body || !read_uint(*body, "max_messages", options_.max_receive, 1, max_messages, problem) ||
      !read_uint(*body, "wait_ms", static_cast<std::uint64_t>(options_.max_wait.count()), 0,
                 wait_ms, problem) ||
      !read_uint(*body, "lease_ms", 12ull * 3600 * 1000, 0, lease_ms, problem)) {
    respond(error_response(errc::invalid_argument, "receive: " + problem));
    return;
  }
  if (max_messages == 0) {
    respond(error_response(errc::invalid_argument, "receive: max_messages must be at least 1"));
    return;
  }
  engine::Queue* queue = open_queue(queue_name, respond);
  if (queue == nullptr) return;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  auto owned = std::make_unique<Receive>(*this);
  Receive& r = *owned;
  r.id = next_receive_++;
  r.secret = rng();
  r.max_messages = static_cast<std::uint32_t>(max_messages);
  r.grant = grant;
  r.respond = std::move(respond);
  receives_[r.id] = std::move(owned);
  // Deliveries can arrive inside subscribe, before its consumer is known.
  const auto now = mono_us();
  const engine::SubscribeResult sub =
      engine_.subscribe(*queue, r, next_subscription_++, r.max_messages,
                        static_cast<engine::Micros>(lease_ms) * 1000, now);
  if (sub.consumer == nullptr) {
    Respond answer = std::move(r.respond);
    receives_.erase(r.id);
    answer(error_response(sub.code, std::string("receive: ") + sub.detail));
    return;
  }
  r.consumer = sub.consumer;
  if (!r.got.empty() || wait_ms == 0) {
    finish_later(r.id);
    return;
  }
  r.timer = std::make_unique<boost::asio::steady_timer>(broker_.io());
  r.timer->expires_after(std::chrono::milliseconds(wait_ms));
  r.timer->async_wait([alive = alive_, id = r.id](const boost::system::error_code& ec) {
    if (!ec && *alive != nullptr) (*alive)->finish_later(id);
  });
}

void HttpApi::finish_later(std::uint64_t id) {
  auto it = receives_.find(id);
  if (it == receives_.end() || it->second->finishing) return;
  try {
    finish(*it->second);
  } catch (const std::exception& e) {
    // Out of memory building the answer, say: the broker stays up, the
    // messages go back at once and the client hears of it.
    log::error("http_receive_failed").str("error", e.what());
    it = receives_.find(id);
    if (it == receives_.end()) return;
    Respond answer = std::move(it->second->respond);
    engine_.disconnect(*it->second->consumer, mono_us());
    receives_.erase(it);
    if (answer) answer(error_response(errc::internal, "receive: internal error"));
  }
}

bool HttpApi::on_delivery(Receive& r, const protocol::Delivery& d) {
  if (r.finishing) return false;  // not expected: pause it
  r.got.push_back(
      {d.message_id, d.lease_token, d.attempt, d.publish_time_us, std::string(d.message)});
  r.bytes += d.message.size();
  if (r.got.size() == 1 && r.consumer != nullptr) {
    // A waiting receive answers once messages came: after this engine call
    // (more may come in the same dispatch), never inside it.
    boost::asio::post(broker_.io(), [alive = alive_, id = r.id] {
      if (*alive != nullptr) (*alive)->finish_later(id);
    });
  }
  // The answer's size is bounded too, not just its count (one message always goes).
  return r.got.size() < r.max_messages && r.bytes < options_.max_response_bytes;
}

void HttpApi::recheck_grants() {
  std::vector<std::pair<std::uint64_t, errc>> lost;
  for (auto& [id, r] : receives_) {
    if (r->consumer == nullptr) continue;
    const errc code =
        broker_.auth().check(r->grant, Permission::consume, r->consumer->queue().name());
    if (code != errc::ok) lost.emplace_back(id, code);
  }
  for (const auto& [id, code] : lost) {
    auto it = receives_.find(id);
    Receive& r = *it->second;
    if (r.timer) r.timer->cancel();
    log::info("receive_revoked")
        .str("queue", r.consumer->queue().name())
        .str("token", r.grant.name())
        .unum("messages", r.consumer->in_flight());
    // What it holds goes back to the queue at once, as for a dropped connection.
    engine_.disconnect(*r.consumer, mono_us());  // frees the consumer: no released()
    Respond respond = std::move(r.respond);
    receives_.erase(it);
    if (!respond) continue;  // answered already; its leases were what it held
    respond(code == errc::unauthenticated
                ? unauthenticated("the token was revoked")
                : error_response(code, "the token may no longer consume from this queue"));
  }
}

void HttpApi::queue_deleted(std::uint64_t id) {
  auto it = receives_.find(id);
  if (it == receives_.end()) return;
  Receive& r = *it->second;
  if (r.timer) r.timer->cancel();
  Respond respond = std::move(r.respond);
  receives_.erase(it);   // the engine frees the consumer
  if (!respond) return;  // answered already: its receipts are stale now
  respond(error_response(errc::queue_not_found, "the queue was deleted"));
}

void HttpApi::finish(Receive& r) {
  r.finishing = true;
  if (r.timer) r.timer->cancel();
  // Paused, not gone: no more deliveries, and if the answer cannot be
  // written the messages go back at once (disconnect), as for a protocol
  // consumer whose connection dropped.
  engine_.pause(*r.consumer);
  const std::string prefix = std::to_string(r.id) + "." + std::to_string(r.secret) + ".";
  json messages = json::array();
  for (const auto& g : r.got) {
    json m = {
        {"id", g.message_id},
        {"receipt", prefix + std::to_string(g.message_id) + "." + std::to_string(g.lease_token)},
        {"attempt", g.attempt},
        {"published_at_ms", g.publish_time_us / 1000}};
    describe_message(g.message, m);
    messages.push_back(std::move(m));
  }
  r.got.clear();
  r.got.shrink_to_fit();
  HttpResponse response = json_response(200, {{"messages", std::move(messages)}});
  response.after = [alive = alive_, id = r.id](bool written) {
    if (*alive == nullptr) return;
    HttpApi& api = **alive;
    auto it = api.receives_.find(id);
    if (it == api.receives_.end()) return;
    engine::Consumer* consumer = it->second->consumer;
    if (written) {
      api.engine_.unsubscribe(*consumer);  // may call released(), which erases the receive
    } else {
      log::info("receive_undelivered")
          .str("queue", consumer->queue().name())
          .unum("messages", consumer->in_flight());
      api.engine_.disconnect(*consumer, mono_us());  // frees the consumer: no released()
      api.receives_.erase(id);
    }
  };
  Respond respond = std::move(r.respond);
  respond(std::move(response));
}

void HttpApi::settle(const QueueCall& call, Respond& respond) {
  const HttpRequest& request = call.request;
  const std::string_view queue_name = call.queue;
  const std::string_view verb = call.action;  // ack, nack or extend
  std::string problem;
  std::optional<json> body;
  if (verb == "ack")
    body = parse_body(request, false, {"receipt", "receipts"}, problem);
  else if (verb == "nack")
    body = parse_body(request, false, {"receipt", "receipts", "delay_ms", "reason", "dead_letter"},
                      problem);
  else
    body = parse_body(request, false, {"receipt", "receipts", "lease_ms"}, problem);
  std::vector<std::string> receipts;
  if (body) {
    if (auto it = body->find("receipt"); it != body->end() && !it->is_null()) {
      if (it->is_string())
        receipts.push_back(it->get<std::string>());
      else
        problem = "receipt must be a string";
    }
    if (auto it = body->find("receipts"); it != body->end()) {
      if (!it->is_array()) {
        problem = "receipts must be an array of strings";
      } else {
        for (const auto& v : *it) {
          if (!v.is_string()) {
            problem = "receipts must be an array of strings";
            break;
          }
          receipts.push_back(v.get<std::string>());
        }
      }
    }
    if (problem.empty() && (receipts.empty() || receipts.size() > 10000))
      problem = "give \"receipt\" or \"receipts\" (1..10000)";
  }
  std::uint64_t delay_ms = 0, lease_ms = 0;
  std::string reason;
  bool dead_letter = false;
  if (problem.empty() && verb == "nack") {
    if (read_uint(*body, "delay_ms", protocol::kMaxDelayMs, 0, delay_ms, problem)) {
      if (auto it = body->find("reason"); it != body->end() && !it->is_null()) {
        if (!it->is_string() || it->get<std::string>().size() > protocol::kMaxReasonBytes)
          problem = "reason must be a string of at most 1024 bytes";
        else
          reason = it->get<std::string>();
      }
      if (auto it = body->find("dead_letter"); it != body->end() && !it->is_null()) {
        if (!it->is_boolean())
          problem = "dead_letter must be true or false";
        else
          dead_letter = it->get<bool>();
      }
    }
  } else if (problem.empty() && verb == "extend") {
    if (read_uint(*body, "lease_ms", 12ull * 3600 * 1000, 0, lease_ms, problem) && lease_ms == 0)
      problem = "extend needs lease_ms (1 ms to 12 h)";
  }
  if (!problem.empty()) {
    respond(error_response(errc::invalid_argument, std::string(verb) + ": " + problem));
    return;
  }
  const auto now = mono_us();
  const std::uint64_t written = broker_.store() != nullptr ? broker_.store()->last_seq() : 0;
  std::uint64_t succeeded = 0;
  json failed = json::array();
  errc first_failure = errc::ok;
  for (const auto& receipt : receipts) {
    // "RECEIVE.SECRET.MESSAGE_ID.LEASE_TOKEN"
    std::uint64_t parts[4] = {};
    std::string_view rest = receipt;
    bool well_formed = true;
    for (int i = 0; i < 4 && well_formed; ++i) {
      const auto dot = i < 3 ? rest.find('.') : rest.size();
      well_formed = dot != std::string_view::npos && parse_uint(rest.substr(0, dot), parts[i]);
      if (well_formed && i < 3) rest.remove_prefix(dot + 1);
    }
    const auto [receive_id, secret, id, token] = parts;
    const auto owner = receives_.find(receive_id);
    errc code;
    if (!well_formed) {
      code = errc::invalid_argument;
    } else if (owner == receives_.end() || owner->second->secret != secret ||
               owner->second->consumer == nullptr ||
               owner->second->consumer->queue().name() != queue_name) {
      // Its receive is gone, this broker never issued it, or it is another
      // queue's (the path's queue is the one whose consume right was checked).
      code = errc::stale_lease;
    } else if (verb == "ack") {
      code = engine_.ack(*owner->second, id, token, now);
    } else if (verb == "nack") {
      code = engine_.nack(*owner->second, id, token, static_cast<engine::Micros>(delay_ms) * 1000,
                          now, reason, dead_letter);
    } else {
      code = engine_.extend(*owner->second, id, token, static_cast<engine::Micros>(lease_ms) * 1000,
                            now);
    }
    if (code == errc::ok) {
      succeeded++;
      continue;
    }
    if (first_failure == errc::ok) first_failure = code;
    failed.push_back({{"receipt", receipt},
                      {"code", to_string(code)},
                      {"message", code == errc::stale_lease
                                      ? "the lease has expired or was settled already"
                                      : "a receipt is RECEIVE.SECRET.MESSAGE.LEASE, as received"}});
  }
  HttpResponse r;
  if (first_failure == errc::ok) {
    r = json_response(200, {{"succeeded", succeeded}, {"failed", std::move(failed)}});
  } else {
    // The one error shape, with what was settled and what was not beside it.
    r = error_response(first_failure, std::string(verb) + ": " + std::to_string(failed.size()) +
                                          " of " + std::to_string(receipts.size()) +
                                          " receipts not settled");
    json j = json::parse(r.body);
    j["succeeded"] = succeeded;
    j["failed"] = std::move(failed);
    r.body = json_text(j);
  }
  DurableStore* store = broker_.store();
  if (broker_.options().settle_after_commit && store != nullptr && store->last_seq() != written) {
    // storage.settle = "commit": answered once what it wrote is committed.
    store->after_settled(
        store->last_seq(),
        [respond = std::move(respond), r = std::move(r)]() mutable { respond(std::move(r)); });
    return;
  }
  respond(std::move(r));
}

}  // namespace sluice::net
