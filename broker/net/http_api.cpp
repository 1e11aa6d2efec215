#include "http_api.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <initializer_list>
#include <random>

#include "durable_store.hpp"
#include "http_util.hpp"
#include "json_body.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "server.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::net {

using json = nlohmann::json;

namespace {

constexpr std::string_view kQueuesPrefix = "/v1/queues";

std::string dump(const json& j) {
  // Text from clients (reasons, header values) may be any bytes: replace what
  // is not UTF-8 rather than fail the answer.
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

HttpResponse json_response(unsigned status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = dump(body);
  return r;
}

HttpResponse error_response(errc code, std::string_view message, engine::Micros retry_after = 0) {
  json e = {{"code", to_string(code)}, {"message", message}};
  HttpResponse r;
  if (retry_after > 0) {
    const auto ms = (retry_after + 999) / 1000;
    e["retry_after_ms"] = ms;
    r.headers.emplace_back("Retry-After",
                           std::to_string(std::max<std::int64_t>(1, (ms + 999) / 1000)));
  }
  r.status = http_status(code);
  r.body = dump(json{{"error", e}});
  return r;
}

HttpResponse unauthenticated(std::string_view message) {
  HttpResponse r = error_response(errc::unauthenticated, message);
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"sluice\"");
  return r;
}

/// The token of "Authorization: Bearer <token>" ("" if none).
std::string_view bearer_token(const HttpRequest& request) {
  for (const auto& [name, value] : request.headers) {
    if (name != "authorization") continue;
    std::string_view v = value;
    if (v.size() < 7) return {};
    std::string scheme(v.substr(0, 7));
    for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (scheme != "bearer ") return {};
    v.remove_prefix(7);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v;
  }
  return {};
}

HttpResponse method_not_allowed(std::string_view allow) {
  HttpResponse r =
      error_response(errc::unsupported, "method not allowed here; allowed: " + std::string(allow));
  r.status = 405;
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

/// A JSON request body: an object with only `allowed` fields, or (when empty
/// and allowed) {}. Strict: see parse_strict.
std::optional<json> parse_body(const HttpRequest& request, bool empty_ok,
                               std::initializer_list<std::string_view> allowed,
                               std::string& problem) {
  if (request.body.empty() && empty_ok) return json::object();
  auto j = parse_strict(request.body, problem);
  if (!j) return std::nullopt;
  if (!j->is_object()) {
    problem = "the body must be a JSON object";
    return std::nullopt;
  }
  if (auto unknown = unknown_field(*j, allowed)) {
    problem = *unknown;
    return std::nullopt;
  }
  return j;
}

/// A non-negative integer field: absent → `fallback`; wrong type or over `max` → problem.
bool read_uint(const json& body, const char* name, std::uint64_t max, std::uint64_t fallback,
               std::uint64_t& out, std::string& problem) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) {
    out = fallback;
    return true;
  }
  if (!it->is_number_unsigned() || it->get<std::uint64_t>() > max) {
    problem = std::string(name) + " must be an integer from 0 to " + std::to_string(max);
    return false;
  }
  out = it->get<std::uint64_t>();
  return true;
}

bool parse_uint(std::string_view text, std::uint64_t& out) {
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && p == end && !text.empty();
}

/// A fresh correlation id: 16 hex digits.
std::string new_correlation_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

/// What one message to publish consists of, before it is encoded.
struct Draft {
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload;
  std::string correlation_id;
};

/// Encodes a draft and checks it like a PUBLISH frame's message: header
/// limits, sluice-* values, a not-before time at most 30 days ahead.
std::optional<std::string> encode_draft(const Draft& d, const protocol::Limits& limits,
                                        std::string& message, protocol::SystemHeaders& sys) {
  std::vector<protocol::Header> headers;
  headers.reserve(d.headers.size());
  for (const auto& [k, v] : d.headers) headers.push_back({k, v});
  if (headers.size() > protocol::kMaxHeaders) return "more than 64 headers";
  // The encoding's lengths are 16-bit: check before encoding, not after.
  for (const auto& h : headers) {
    if (h.key.empty() || h.key.size() > protocol::kMaxHeaderKeyBytes)
      return "header names must be 1..255 bytes";
    if (h.value.size() > protocol::kMaxHeaderValueBytes)
      return "header " + std::string(h.key) + ": value over 16384 bytes";
  }
  message.clear();
  protocol::encode_message(message, headers, d.payload);
  protocol::MessageParts parts;
  if (auto s = protocol::parse_message(message, parts); !s) return std::string(s.detail);
  if (auto s = protocol::check_header_limits(parts, limits); !s) return std::string(s.detail);
  if (auto s = protocol::read_system_headers(parts, sys); !s) return std::string(s.detail);
  if (sys.not_before_ms != 0 &&
      sys.not_before_ms >
          static_cast<std::uint64_t>(Server::wall_us() / 1000) + protocol::kMaxDelayMs)
    return "sluice-not-before-ms is more than 30 days ahead";
  return std::nullopt;
}

std::string key_header_of(const engine::Queue& queue) {
  return queue.options().key_header.empty() ? std::string(protocol::kKeyHeader)
                                            : queue.options().key_header;
}

/// The message's headers as a JSON object, its correlation id, and its payload
/// as "payload" (UTF-8) or "payload_base64".
void describe_message(std::string_view raw, json& out) {
  protocol::MessageParts parts;
  if (!protocol::parse_message(raw, parts)) return;
  json headers = json::object();
  protocol::for_each_header(parts, [&](const protocol::Header& h) {
    headers[std::string(h.key)] = std::string(h.value);
    if (h.key == protocol::kCorrelationHeader) out["correlation_id"] = std::string(h.value);
  });
  out["headers"] = std::move(headers);
  if (valid_utf8(parts.payload))
    out["payload"] = std::string(parts.payload);
  else
    out["payload_base64"] = base64_encode(parts.payload);
}

double per_second(engine::MilliRate rate) {
  return static_cast<double>(rate) / 1000.0;
}

json settings_json(const engine::QueueOptions& o) {
  static constexpr const char* kJitter[] = {"none", "full", "equal"};
  return {
      {"durability", o.durable ? "durable" : "memory"},
      {"lease_timeout_ms", o.lease / 1000},
      {"max_consumer_in_flight", o.max_consumer_in_flight},
      {"max_messages", o.max_messages},
      {"max_bytes", o.max_bytes},
      {"high_watermark", o.high_watermark_pct},
      {"low_watermark", o.low_watermark_pct},
      {"overflow", o.overflow == engine::Overflow::block ? "block" : "reject"},
      {"dispatch_rate", per_second(o.dispatch_rate.rate)},
      {"dispatch_burst", o.dispatch_rate.burst},
      {"max_consumer_rate", per_second(o.max_consumer_rate)},
      {"ingress_rate", per_second(o.ingress_rate.rate)},
      {"ingress_burst", o.ingress_rate.burst},
      {"max_in_flight", o.max_in_flight},
      {"key_header", o.key_header},
      {"key_rate", per_second(o.key_rate.rate)},
      {"key_burst", o.key_rate.burst},
      {"ordering", o.ordered ? "key" : "none"},
      {"max_attempts", o.retry.max_attempts},
      {"retry_backoff_ms", o.retry.initial_backoff / 1000},
      {"retry_backoff_max_ms", o.retry.max_backoff / 1000},
      {"retry_multiplier", o.retry.multiplier_milli / 1000.0},
      {"retry_jitter", kJitter[static_cast<int>(o.retry.jitter)]},
      {"dedup_window_ms", o.dedup_window / 1000},
      {"dedup_max_entries", o.dedup_max_entries},
      {"resequence", o.resequence ? "on" : "off"},
      {"gap_timeout_ms", o.gap_timeout / 1000},
      {"dlq_max_entries", o.dlq_max_entries},
      {"dlq_retention_ms", o.dlq_retention / 1000},
  };
}

}  // namespace

/// One receive: its consumer (whose sink it is, so only its own receipts can
/// settle its leases), what it got so far, and its answer. It lives until its
/// consumer is freed: after the answer, while the client holds the leases.
struct HttpApi::Receive final : engine::DeliverySink {
  explicit Receive(HttpApi& owner) : api(owner) {}
  bool deliver(engine::Consumer&, const protocol::Delivery& d) override {
    return api.on_delivery(*this, d);
  }
  void released(engine::Consumer&) override { api.receives_.erase(id); }  // destroys this

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

HttpApi::HttpApi(Server& server, const Metrics& metrics, HttpApiOptions options)
    : server_(server),
      engine_(server.engine()),
      metrics_(metrics),
      options_(options),
      alive_(std::make_shared<HttpApi*>(this)) {}

HttpApi::~HttpApi() {
  *alive_ = nullptr;
}

void HttpApi::stop() {
  stopping_ = true;
  ready_ = false;
  std::vector<std::uint64_t> waiting;
  for (auto& [id, r] : receives_)
    if (!r->finishing) waiting.push_back(id);
  for (std::uint64_t id : waiting) finish_later(id);
}

void HttpApi::handle(HttpRequest&& request, Respond respond) {
  try {
    route(request, respond);
  } catch (const std::exception& e) {
    // A bug, not bad input (bad input is answered where it is found); the
    // broker stays up and the client learns something went wrong.
    log::error("http_handler_failed").str("target", request.target).str("error", e.what());
    if (respond) respond(error_response(errc::internal, "internal error"));
  }
}

void HttpApi::route(const HttpRequest& request, Respond& respond) {
  const auto [path, query] = split_target(request.target);
  const std::string& method = request.method;
  const auto only = [&](std::string_view allowed) {
    if (method == allowed) return true;
    respond(method_not_allowed(allowed));
    return false;
  };
  if (path == "/healthz") {
    if (only("GET")) respond(json_response(200, {{"status", "ok"}}));
    return;
  }
  if (path == "/readyz") {
    if (!only("GET")) return;
    if (ready_)
      respond(json_response(200, {{"status", "ready"}}));
    else
      respond(json_response(503, {{"status", stopping_ ? "stopping" : "starting"}}));
    return;
  }
  // Everything past the health checks needs a token when tokens are configured.
  Grant grant;
  const std::string_view token = bearer_token(request);
  if (server_.auth().authenticate(token, grant) != errc::ok) {
    log::warn("authentication_failed")
        .str("listener", "http")
        .str("peer", request.peer)
        .str("reason", token.empty() ? "no token" : "unknown token");
    respond(unauthenticated(token.empty() ? "this broker needs Authorization: Bearer <token>"
                                          : "the bearer token is not valid"));
    return;
  }
  if (path == "/metrics") {
    if (!only("GET")) return;
    if (const errc code = server_.auth().check_metrics(grant); code != errc::ok) {
      respond(error_response(code, "token " + std::string(grant.name()) +
                                       " may not read /metrics (needs metrics = \"on\")"));
      return;
    }
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.scrape();
    respond(std::move(r));
    return;
  }
  if (path == "/v1/log-level") {
    if (allowed(grant, Permission::admin, kEveryQueue, respond)) log_level(request, respond);
    return;
  }
  if (path == kQueuesPrefix || path == "/v1/queues/") {
    if (only("GET")) queue_list(grant, respond);
    return;
  }
  if (path.substr(0, kQueuesPrefix.size() + 1) != "/v1/queues/") {
    respond(error_response(errc::not_found, "no such endpoint: " + std::string(path)));
    return;
  }
  std::string_view rest = path.substr(kQueuesPrefix.size() + 1);
  const auto slash = rest.find('/');
  const std::string_view queue = rest.substr(0, slash);
  const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  if (!protocol::valid_queue_name(queue)) {
    respond(error_response(errc::invalid_queue_name,
                           "queue names are " + std::string(protocol::kQueueNameRule)));
    return;
  }
  // Rights are checked before the queue is looked up: 403 whether or not it exists.
  if (action.empty()) {
    if (only("GET") && allowed(grant, Permission::read, queue, respond)) queue_show(queue, respond);
  } else if (action == "messages") {
    if (only("POST") && allowed(grant, Permission::publish, queue, respond))
      publish_one(request, queue, respond);
  } else if (action == "messages/batch") {
    if (only("POST") && allowed(grant, Permission::publish, queue, respond))
      publish_batch(request, queue, respond);
  } else if (action == "receive") {
    if (only("POST") && allowed(grant, Permission::consume, queue, respond))
      receive(request, queue, grant, respond);
  } else if (action == "ack" || action == "nack" || action == "extend") {
    if (only("POST") && allowed(grant, Permission::consume, queue, respond))
      settle(request, queue, action, respond);
  } else if (action == "dlq" || action.substr(0, 4) == "dlq/") {
    if (allowed(grant, Permission::admin, queue, respond))
      dead_letters(request, queue, action.substr(3), respond);
  } else {
    respond(error_response(errc::not_found, "no such endpoint: " + std::string(path)));
  }
}

bool HttpApi::allowed(Grant& grant, Permission what, std::string_view queue, Respond& respond) {
  const errc code = server_.auth().check(grant, what, queue);
  if (code == errc::ok) return true;
  static constexpr const char* kWhat[] = {"publish to", "consume from", "administer", "see"};
  const std::string target =
      queue == kEveryQueue ? std::string("the broker") : "queue " + std::string(queue);
  respond(code == errc::unauthenticated
              ? unauthenticated("the token was revoked")
              : error_response(code, "token " + std::string(grant.name()) + " may not " +
                                         kWhat[static_cast<int>(what)] + " " + target));
  return false;
}

// ---- publish ----

namespace {

/// The draft's headers from one HTTP request's Sluice-* headers.
void draft_from_http(const HttpRequest& request, const engine::Queue& queue, Draft& d) {
  for (const auto& [name, value] : request.headers) {
    if (name == "sluice-key") {
      d.headers.emplace_back(key_header_of(queue), value);
    } else if (name == protocol::kDedupHeader || name == protocol::kSequenceHeader ||
               name == protocol::kDelayHeader || name == protocol::kNotBeforeHeader) {
      d.headers.emplace_back(name, value);
    } else if (name == protocol::kCorrelationHeader || name == "x-correlation-id") {
      if (d.correlation_id.empty()) d.correlation_id = value;
    } else if (name.starts_with("sluice-header-") && name.size() > 14) {
      d.headers.emplace_back(name.substr(14), value);
    } else if (name == "content-type") {
      d.headers.emplace_back(name, value);
    }
  }
}

/// The draft of one entry of a batch publish; the problem, or nullopt.
std::optional<std::string> draft_from_json(const json& m, const engine::Queue& queue, Draft& d) {
  if (!m.is_object()) return "each message must be a JSON object";
  if (auto unknown = unknown_field(m, {"payload", "payload_base64", "key", "dedup_id", "seq",
                                       "delay_ms", "not_before_ms", "correlation_id", "headers"}))
    return unknown;
  // Text fields take a string; the numeric ones (seq, delay_ms,
  // not_before_ms) a non-negative integer or its decimal string.
  const auto text = [&](const char* name, std::string& out,
                        bool number_ok = false) -> std::optional<std::string> {
    const auto it = m.find(name);
    if (it == m.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) {
      out = it->get<std::string>();
      return std::nullopt;
    }
    if (number_ok && it->is_number_unsigned()) {
      out = std::to_string(it->get<std::uint64_t>());
      return std::nullopt;
    }
    return std::string(name) +
           (number_ok ? " must be a non-negative integer or a string" : " must be a string");
  };
  std::string value;
  if (m.contains("payload") && m.contains("payload_base64"))
    return "give payload or payload_base64, not both";
  if (auto p = text("payload", d.payload)) return p;
  if (auto it = m.find("payload_base64"); it != m.end()) {
    if (!it->is_string()) return "payload_base64 must be a string";
    auto decoded = base64_decode(it->get<std::string>());
    if (!decoded) return "payload_base64 is not valid base64";
    d.payload = std::move(*decoded);
  }
  const std::pair<const char*, std::string> fields[] = {
      {"key", key_header_of(queue)},
      {"dedup_id", std::string(protocol::kDedupHeader)},
      {"seq", std::string(protocol::kSequenceHeader)},
      {"delay_ms", std::string(protocol::kDelayHeader)},
      {"not_before_ms", std::string(protocol::kNotBeforeHeader)}};
  for (const auto& [name, header] : fields) {
    value.clear();
    const std::string_view n = name;
    if (auto p = text(name, value, n == "seq" || n == "delay_ms" || n == "not_before_ms")) return p;
    if (m.contains(name) && !m[name].is_null()) d.headers.emplace_back(header, value);
  }
  if (auto p = text("correlation_id", d.correlation_id)) return p;
  if (auto it = m.find("headers"); it != m.end() && !it->is_null()) {
    if (!it->is_object()) return "headers must be an object of strings";
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) return "headers must be an object of strings";
      d.headers.emplace_back(k, v.get<std::string>());
    }
  }
  return std::nullopt;
}

}  // namespace

engine::Queue* HttpApi::open_queue(std::string_view name, Respond& respond) {
  engine::Queue* queue = engine_.open(name);
  if (queue == nullptr) respond(error_response(errc::too_many_queues, "limits.max_queues reached"));
  return queue;
}

void HttpApi::answer_published(const engine::Queue& queue, HttpResponse response,
                               Respond& respond) {
  if (!queue.durable()) {
    respond(std::move(response));
    return;
  }
  // Confirmed once on disk, like a protocol CONFIRM.
  DurableStore& store = *server_.durable();
  store.after_durable(store.last_seq(),
                      [respond = std::move(respond), response = std::move(response)]() mutable {
                        respond(std::move(response));
                      });
}

void HttpApi::publish_one(const HttpRequest& request, std::string_view queue_name,
                          Respond& respond) {
  if (request.body.size() > options_.max_payload_bytes) {
    respond(error_response(errc::payload_too_large, "payload over limits.max_payload_bytes (" +
                                                        std::to_string(options_.max_payload_bytes) +
                                                        " bytes)"));
    return;
  }
  engine::Queue* queue = open_queue(queue_name, respond);
  if (queue == nullptr) return;
  Draft d;
  draft_from_http(request, *queue, d);
  d.payload = request.body;
  if (d.correlation_id.empty()) d.correlation_id = new_correlation_id();
  d.headers.emplace_back(protocol::kCorrelationHeader, d.correlation_id);
  std::string message;
  protocol::SystemHeaders sys;
  if (auto problem = encode_draft(d, server_.options().limits, message, sys)) {
    respond(error_response(errc::invalid_argument, *problem));
    return;
  }
  const auto now = Server::now();
  const engine::Admission admission = engine_.admit(*queue, 1, now);
  if (admission.code != errc::ok) {
    respond(error_response(admission.code, admission.detail, admission.retry_after));
    return;
  }
  const engine::Published published = engine_.publish(*queue, message, sys, now, Server::wall_us());
  server_.watch_deadlines();
  log::debug("published")
      .str("queue", queue->name())
      .unum("message_id", published.id)
      .str("correlation_id", d.correlation_id)
      .str("via", "http");
  HttpResponse r = json_response(202, {{"id", published.id},
                                       {"duplicate", published.duplicate},
                                       {"correlation_id", d.correlation_id},
                                       {"pressure", queue->pressure() / 100.0}});
  answer_published(*queue, std::move(r), respond);
}

void HttpApi::publish_batch(const HttpRequest& request, std::string_view queue_name,
                            Respond& respond) {
  std::string problem;
  auto body = parse_body(request, false, {"messages"}, problem);
  if (!body) {
    respond(error_response(errc::invalid_argument, "batch: " + problem));
    return;
  }
  const auto messages = body->find("messages");
  if (messages == body->end() || !messages->is_array() || messages->empty() ||
      messages->size() > options_.max_batch) {
    respond(error_response(errc::invalid_argument, "batch: \"messages\" must be an array of 1.." +
                                                       std::to_string(options_.max_batch) +
                                                       " messages"));
    return;
  }
  engine::Queue* queue = open_queue(queue_name, respond);
  if (queue == nullptr) return;
  // Every message is checked before any is admitted: a batch goes whole or not at all.
  std::vector<std::string> encoded(messages->size());
  std::vector<protocol::SystemHeaders> sys(messages->size());
  std::vector<std::string> correlation(messages->size());
  for (std::size_t i = 0; i < messages->size(); ++i) {
    Draft d;
    auto p = draft_from_json((*messages)[i], *queue, d);
    if (!p && d.payload.size() > options_.max_payload_bytes) {
      respond(error_response(
          errc::payload_too_large,
          "batch: message " + std::to_string(i) + ": payload over limits.max_payload_bytes"));
      return;
    }
    if (!p) {
      if (d.correlation_id.empty()) d.correlation_id = new_correlation_id();
      d.headers.emplace_back(protocol::kCorrelationHeader, d.correlation_id);
      correlation[i] = d.correlation_id;
      p = encode_draft(d, server_.options().limits, encoded[i], sys[i]);
    }
    if (p) {
      respond(error_response(errc::invalid_argument,
                             "batch: message " + std::to_string(i) + ": " + *p));
      return;
    }
  }
  const auto now = Server::now();
  const engine::Admission admission = engine_.admit(*queue, encoded.size(), now);
  if (admission.code != errc::ok) {
    respond(error_response(admission.code, admission.detail, admission.retry_after));
    return;
  }
  json results = json::array();
  const auto wall = Server::wall_us();
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    const auto published = engine_.publish(*queue, encoded[i], sys[i], now, wall);
    results.push_back({{"id", published.id},
                       {"duplicate", published.duplicate},
                       {"correlation_id", correlation[i]}});
    log::debug("published")
        .str("queue", queue->name())
        .unum("message_id", published.id)
        .str("correlation_id", correlation[i])
        .str("via", "http");
  }
  server_.watch_deadlines();
  HttpResponse r = json_response(
      202, {{"messages", std::move(results)}, {"pressure", queue->pressure() / 100.0}});
  answer_published(*queue, std::move(r), respond);
}

// ---- receive and settle ----

void HttpApi::receive(const HttpRequest& request, std::string_view queue_name, const Grant& grant,
                      Respond& respond) {
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
  const auto now = Server::now();
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
  server_.watch_deadlines();
  if (!r.got.empty() || wait_ms == 0) {
    finish_later(r.id);
    return;
  }
  r.timer = std::make_unique<boost::asio::steady_timer>(server_.io());
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
    engine_.disconnect(*it->second->consumer, Server::now());
    receives_.erase(it);
    server_.watch_deadlines();
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
    boost::asio::post(server_.io(), [alive = alive_, id = r.id] {
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
        server_.auth().check(r->grant, Permission::consume, r->consumer->queue().name());
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
    engine_.disconnect(*r.consumer, Server::now());  // frees the consumer: no released()
    Respond respond = std::move(r.respond);
    receives_.erase(it);
    if (!respond) continue;  // answered already; its leases were what it held
    respond(code == errc::unauthenticated
                ? unauthenticated("the token was revoked")
                : error_response(code, "the token may no longer consume from this queue"));
  }
  server_.watch_deadlines();
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
      api.engine_.disconnect(*consumer, Server::now());  // frees the consumer: no released()
      api.receives_.erase(id);
    }
    api.server_.watch_deadlines();
  };
  Respond respond = std::move(r.respond);
  respond(std::move(response));
}

void HttpApi::settle(const HttpRequest& request, std::string_view queue_name, std::string_view verb,
                     Respond& respond) {
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
  const auto now = Server::now();
  const std::uint64_t written = server_.durable() != nullptr ? server_.durable()->last_seq() : 0;
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
  server_.watch_deadlines();
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
    r.body = dump(j);
  }
  DurableStore* store = server_.durable();
  if (server_.options().settle_after_commit && store != nullptr && store->last_seq() != written) {
    // storage.settle = "commit": answered once what it wrote is committed.
    store->after_settled(
        store->last_seq(),
        [respond = std::move(respond), r = std::move(r)]() mutable { respond(std::move(r)); });
    return;
  }
  respond(std::move(r));
}

// ---- admin ----

namespace {

json queue_json(const engine::Engine& engine, const engine::Queue& q, const DurableStore* store) {
  const auto& c = q.counters();
  const std::int64_t oldest = engine.oldest_ready_wall_us(q);
  json j = {
      {"name", q.name()},
      {"messages",
       {{"ready", c.ready},
        {"delayed", c.delayed},
        {"in_flight", c.in_flight},
        {"staged", c.staged},
        {"held", c.held},
        {"dead_lettering", c.dead_lettering}}},
      {"bytes", c.bytes},
      {"consumers", q.consumer_count()},
      {"pressure", q.pressure() / 100.0},
      {"oldest_ready_age_ms",
       oldest == 0 ? 0 : std::max<std::int64_t>(0, Server::wall_us() - oldest) / 1000},
      {"totals",
       {{"published", c.published_total},
        {"delivered", c.delivered_total},
        {"acked", c.acked_total},
        {"nacked", c.nacked_total},
        {"retried", c.retried_total},
        {"dead_lettered", c.dead_lettered_total},
        {"lease_expired", c.expired_total},
        {"requeued", c.requeued_total},
        {"duplicates", c.duplicates_total},
        {"refused", c.refused_total},
        {"blocked", c.blocked_total},
        {"sequence_gaps", q.sequence_gaps()},
        {"dedup_evicted", q.dedup_evicted()}}},
      {"settings", settings_json(q.options())},
  };
  if (store != nullptr) {
    j["dead_letters"] = store->dead_letter_count(q.name());
    j["redriving"] = store->redriving(q.name());
  }
  return j;
}

}  // namespace

void HttpApi::queue_list(Grant& grant, Respond& respond) {
  std::vector<const engine::Queue*> queues;
  for (const auto* q : engine_.queues())
    if (server_.auth().can_see(grant, q->name())) queues.push_back(q);
  std::sort(queues.begin(), queues.end(),
            [](const auto* a, const auto* b) { return a->name() < b->name(); });
  json list = json::array();
  for (const auto* q : queues) list.push_back(queue_json(engine_, *q, server_.durable()));
  respond(json_response(200, {{"queues", std::move(list)}}));
}

void HttpApi::queue_show(std::string_view queue, Respond& respond) {
  const engine::Queue* q = engine_.find(queue);
  if (q == nullptr) {
    respond(error_response(errc::not_found, "no queue named " + std::string(queue)));
    return;
  }
  respond(json_response(200, queue_json(engine_, *q, server_.durable())));
}

void HttpApi::log_level(const HttpRequest& request, Respond& respond) {
  static constexpr const char* kLevels[] = {"trace", "debug", "info", "warn", "error"};
  if (request.method == "PUT") {
    std::string problem;
    auto body = parse_body(request, false, {"level"}, problem);
    int level = -1;
    if (body) {
      if (auto it = body->find("level"); it != body->end() && it->is_string())
        for (int i = 0; i < 5; ++i)
          if (it->get<std::string>() == kLevels[i]) level = i;
    }
    if (level < 0) {
      respond(error_response(errc::invalid_argument,
                             "log-level: {\"level\": trace|debug|info|warn|error}"));
      return;
    }
    log::set_level(static_cast<log::Level>(level));
    log::info("log_level_set").str("level", kLevels[level]).str("peer", request.peer);
  } else if (request.method != "GET") {
    respond(method_not_allowed("GET, PUT"));
    return;
  }
  int current = 4;
  for (int i = 4; i >= 0; --i)
    if (log::enabled(static_cast<log::Level>(i))) current = i;
  respond(json_response(200, {{"level", kLevels[current]}}));
}

// ---- dead letters ----

void HttpApi::dead_letters(const HttpRequest& request, std::string_view queue,
                           std::string_view rest, Respond& respond) {
  DurableStore* store = server_.durable();
  if (store == nullptr) {
    respond(error_response(errc::unsupported, "this broker keeps no dead letters"));
    return;
  }
  const auto [path, query] = split_target(request.target);
  protocol::DeadLetterRequest req;
  req.queue = queue;
  std::string problem;
  std::uint64_t single = 0;
  const bool one = rest.size() > 1 && rest[0] == '/' && parse_uint(rest.substr(1), single);
  std::optional<json> body;
  if (rest.empty() && request.method == "GET") {
    req.op = protocol::DeadLetterOp::list;
    for (const auto& [name, value] : query) {
      std::uint64_t n = 0;
      if (name == "limit" && parse_uint(value, n) && n >= 1 && n <= 1000)
        req.limit = static_cast<std::uint32_t>(n);
      else if (name == "after" && parse_uint(value, n))
        req.after = n;
      else if (name == "order" && (value == "newest" || value == "oldest"))
        req.flags = value == "newest" ? protocol::kDeadLettersNewestFirst : 0;
      else
        problem = "unknown or bad query parameter " + name +
                  " (limit=1..1000, after=ENTRY_ID, order=oldest|newest)";
    }
  } else if (rest.empty() && request.method == "DELETE") {
    req.op = protocol::DeadLetterOp::purge;
  } else if (one && (request.method == "GET" || request.method == "DELETE")) {
    req.op =
        request.method == "GET" ? protocol::DeadLetterOp::show : protocol::DeadLetterOp::remove;
    req.ids.push_back(single);
  } else if ((rest == "/redrive" || rest == "/delete") && request.method == "POST") {
    req.op = rest == "/redrive" ? protocol::DeadLetterOp::redrive : protocol::DeadLetterOp::remove;
    if (req.op == protocol::DeadLetterOp::redrive)
      body = parse_body(request, false,
                        {"ids", "min_age_ms", "max_age_ms", "reason", "rate", "all"}, problem);
    else
      body = parse_body(request, false, {"ids"}, problem);
    if (body) {
      std::uint64_t rate_milli = 0;
      if (auto it = body->find("ids"); it != body->end()) {
        if (!it->is_array() || it->size() > protocol::kMaxDeadLetterIds) {
          problem = "ids must be an array of up to 10000 entry ids";
        } else {
          for (const auto& v : *it) {
            if (!v.is_number_unsigned()) {
              problem = "ids must be entry ids (integers)";
              break;
            }
            req.ids.push_back(v.get<std::uint64_t>());
          }
        }
      }
      if (problem.empty()) {
        read_uint(*body, "min_age_ms", UINT64_MAX, 0, req.min_age_ms, problem);
        read_uint(*body, "max_age_ms", UINT64_MAX, 0, req.max_age_ms, problem);
      }
      if (problem.empty()) {
        if (auto it = body->find("rate"); it != body->end() && !it->is_null()) {
          if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 1e9)
            problem = "rate must be a positive number of messages per second";
          else
            rate_milli = static_cast<std::uint64_t>(it->get<double>() * 1000.0 + 0.5);
        }
      }
      req.rate_milli = static_cast<std::uint32_t>(std::min<std::uint64_t>(rate_milli, UINT32_MAX));
      if (auto it = body->find("reason"); problem.empty() && it != body->end() && !it->is_null()) {
        if (!it->is_string()) problem = "reason must be a string";
      }
      const auto all_it = body->find("all");
      if (all_it != body->end() && !all_it->is_boolean()) problem = "all must be true or false";
      const bool all = all_it != body->end() && all_it->is_boolean() && all_it->get<bool>();
      const auto reason_it = body->find("reason");
      const bool filtered = req.min_age_ms || req.max_age_ms ||
                            (reason_it != body->end() && reason_it->is_string() &&
                             !reason_it->get<std::string>().empty());
      if (problem.empty() && req.ids.empty() && !all && !filtered)
        problem =
            "name the entries: \"ids\", a filter (min_age_ms, max_age_ms, reason) or \"all\": true";
      if (problem.empty() && req.op == protocol::DeadLetterOp::remove && req.ids.empty())
        problem = "delete needs \"ids\" (DELETE on the dlq purges it)";
    }
  } else {
    respond(error_response(errc::not_found, "no such endpoint: " + std::string(path)));
    return;
  }
  // The reason filter must outlive the request struct's view.
  std::string reason;
  if (body && body->contains("reason") && (*body)["reason"].is_string()) {
    reason = (*body)["reason"].get<std::string>();
    req.reason = reason;
  }
  if (!problem.empty()) {
    respond(error_response(errc::invalid_argument, "dlq: " + problem));
    return;
  }
  std::string frame;
  // Pages of a listing stop well below a response's size.
  if (auto e = store->dead_letters(req, frame, 4u << 20)) {
    respond(error_response(e->code, e->message));
    return;
  }
  server_.watch_deadlines();
  protocol::DeadLetterResult result;
  constexpr std::size_t kFrameHeader = 5;  // u32 length, u8 type
  if (frame.size() < kFrameHeader ||
      !protocol::decode_dead_letters_result(std::string_view(frame).substr(kFrameHeader), result)) {
    respond(error_response(errc::internal, "dlq: could not read the result"));
    return;
  }
  const auto entry_json = [](const protocol::DeadLetterEntry& e) {
    json j = {{"entry_id", e.entry_id},
              {"message_id", e.message_id},
              {"queue", std::string(e.queue)},
              {"attempts", e.attempts},
              {"published_at_ms", e.publish_time_us / 1000},
              {"first_failure_at_ms", e.first_failure_us / 1000},
              {"last_failure_at_ms", e.last_failure_us / 1000},
              {"reason", std::string(e.reason)}};
    describe_message(e.message, j);
    return j;
  };
  switch (req.op) {
    case protocol::DeadLetterOp::list: {
      json entries = json::array();
      for (const auto& e : result.entries) entries.push_back(entry_json(e));
      json j = {{"total", result.affected}, {"entries", std::move(entries)}};
      if (result.next_after != 0) j["next_after"] = result.next_after;
      respond(json_response(200, j));
      break;
    }
    case protocol::DeadLetterOp::show:
      respond(json_response(200, entry_json(result.entries.at(0))));
      break;
    case protocol::DeadLetterOp::remove:
      if (one && result.affected == 0) {
        respond(error_response(errc::not_found, "no dead letter " + std::to_string(single) +
                                                    " in " + std::string(queue)));
        break;
      }
      [[fallthrough]];
    default:
      respond(json_response(req.op == protocol::DeadLetterOp::redrive ? 202 : 200,
                            {{"affected", result.affected}}));
  }
}

}  // namespace sluice::net
