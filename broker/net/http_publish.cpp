// The HTTP API's publish: one message per request, or a JSON batch.
#include "http_api.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "attempt_log.hpp"
#include "broker.hpp"
#include "cloudevents.hpp"
#include "durable_store.hpp"
#include "http_json.hpp"
#include "http_util.hpp"
#include "intake.hpp"
#include "json_body.hpp"
#include "log.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::net {

namespace {

/// A fresh correlation id: 16 hex digits.
std::string new_correlation_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

/// Encodes a draft; what the encoding cannot carry (its lengths are 16-bit)
/// is refused first. The Intake checks the rest, as for a PUBLISH frame.
std::optional<std::string> encode_draft(const PublishDraft& d, std::string& message) {
  std::vector<protocol::Header> headers;
  headers.reserve(d.headers.size());
  for (const auto& [k, v] : d.headers) headers.push_back({k, v});
  if (headers.size() > protocol::kMaxHeaders) return "more than 64 headers";
  for (const auto& h : headers) {
    if (h.key.empty() || h.key.size() > protocol::kMaxHeaderKeyBytes)
      return "header names must be 1..255 bytes";
    if (h.value.size() > protocol::kMaxHeaderValueBytes)
      return "header " + std::string(h.key) + ": value over 16384 bytes";
  }
  message.clear();
  protocol::encode_message(message, headers, d.payload);
  return std::nullopt;
}

std::string key_header_of(const engine::QueueOptions& queue) {
  return queue.key_header.empty() ? std::string(protocol::kKeyHeader) : queue.key_header;
}

/// The draft's headers from one HTTP request's Sluice-* headers.
void draft_from_http(const HttpRequest& request, const engine::QueueOptions& queue,
                     PublishDraft& d) {
  for (const auto& [name, value] : request.headers) {
    if (name == "sluice-key") {
      d.headers.emplace_back(key_header_of(queue), value);
    } else if (name == protocol::kDedupHeader || name == protocol::kSequenceHeader ||
               name == protocol::kDelayHeader || name == protocol::kNotBeforeHeader ||
               name == kSchemaVersionHeader) {
      d.headers.emplace_back(name, value);
    } else if (name == protocol::kCorrelationHeader || name == "x-correlation-id") {
      if (d.correlation_id.empty()) d.correlation_id = value;
    } else if (name.starts_with("sluice-header-") && name.size() > 14) {
      d.headers.emplace_back(name.substr(14), value);
    } else if (name == "content-type") {
      d.headers.emplace_back(name, value);
    }
  }
  // W3C trace context travels with the message to consumers and dead letters;
  // tracestate only beside a valid traceparent, as the spec says.
  const std::string* parent = request.header("traceparent");
  if (parent != nullptr && valid_traceparent(*parent)) {
    d.headers.emplace_back("traceparent", *parent);
    if (const std::string* state = request.header("tracestate"))
      d.headers.emplace_back("tracestate", *state);
  }
}

/// The request's W3C trace context, for the batch entries that carry none of their own.
void inherit_trace_context(const HttpRequest& request, PublishDraft& d) {
  const std::string* parent = request.header("traceparent");
  if (parent == nullptr || !valid_traceparent(*parent)) return;
  for (const auto& [k, v] : d.headers)
    if (k == "traceparent") return;
  d.headers.emplace_back("traceparent", *parent);
  if (const std::string* state = request.header("tracestate"))
    d.headers.emplace_back("tracestate", *state);
}

/// The draft of one entry of a batch publish; the problem, or nullopt.
std::optional<std::string> draft_from_json(const json& m, const engine::QueueOptions& queue,
                                           PublishDraft& d) {
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
  errc why = errc::ok;
  engine::Queue* queue = engine_.open(name, &why);
  if (queue == nullptr) respond(error_response(why, open_refused(why, name)));
  return queue;
}

void HttpApi::answer_published(const engine::Queue& queue, HttpResponse response,
                               Respond& respond) {
  if (!queue.durable()) {
    respond(std::move(response));
    return;
  }
  // Confirmed once on disk, like a protocol CONFIRM.
  DurableStore& store = *broker_.store();
  store.after_durable(store.last_seq(),
                      [respond = std::move(respond), response = std::move(response)]() mutable {
                        respond(std::move(response));
                      });
}

void HttpApi::publish_one(const QueueCall& call, Respond& respond) {
  const HttpRequest& request = call.request;
  const cloudevents::Mode mode = cloudevents::mode_of(request);
  if (mode == cloudevents::Mode::structured || mode == cloudevents::Mode::batch) {
    publish_events(call, mode == cloudevents::Mode::batch, respond);
    return;
  }
  std::vector<PublishDraft> drafts(1);
  PublishDraft& d = drafts.front();
  draft_from_http(request, engine_.options_for(call.queue), d);
  d.payload = request.body;
  if (mode == cloudevents::Mode::binary)
    if (auto problem = cloudevents::from_binary(request, d)) {
      respond(error_response(errc::invalid_argument, *problem));
      return;
    }
  publish_drafts(call.queue, drafts, false, respond);
}

void HttpApi::publish_events(const QueueCall& call, bool batch, Respond& respond) {
  const HttpRequest& request = call.request;
  std::vector<PublishDraft> drafts;
  if (auto problem = cloudevents::from_json(request.body, batch, options_.max_batch, drafts)) {
    respond(error_response(errc::invalid_argument, *problem));
    return;
  }
  if (drafts.empty()) {  // an empty batch is a valid one
    respond(json_response(202, {{"messages", json::array()}}));
    return;
  }
  if (!batch) {
    // A structured event takes the request's Sluice-* headers as a binary one
    // does (a key, a delay, a schema version); a Sluice-Dedup-Id wins over the
    // event's source and id.
    PublishDraft from_http;
    draft_from_http(request, engine_.options_for(call.queue), from_http);
    PublishDraft& d = drafts.front();
    for (auto& [k, v] : from_http.headers) {
      if (k == "content-type") continue;
      if (k == protocol::kDedupHeader)
        std::erase_if(d.headers, [](const auto& h) { return h.first == protocol::kDedupHeader; });
      d.headers.emplace_back(std::move(k), std::move(v));
    }
    d.correlation_id = std::move(from_http.correlation_id);
  }
  for (PublishDraft& d : drafts) inherit_trace_context(request, d);
  publish_drafts(call.queue, drafts, batch, respond);
}

bool HttpApi::publish_drafts(std::string_view queue_name, std::vector<PublishDraft>& drafts,
                             bool batch, Respond& respond) {
  std::vector<std::string> encoded(drafts.size());
  const auto where = [&](std::size_t i) {
    return batch ? "batch: message " + std::to_string(i) + ": " : std::string();
  };
  for (std::size_t i = 0; i < drafts.size(); ++i) {
    PublishDraft& d = drafts[i];
    if (d.payload.size() > options_.max_payload_bytes) {
      respond(error_response(errc::payload_too_large,
                             where(i) + "payload over limits.max_payload_bytes (" +
                                 std::to_string(options_.max_payload_bytes) + " bytes)"));
      return false;
    }
    if (d.correlation_id.empty()) d.correlation_id = new_correlation_id();
    d.headers.emplace_back(protocol::kCorrelationHeader, d.correlation_id);
    if (auto problem = encode_draft(d, encoded[i])) {
      respond(error_response(errc::invalid_argument, where(i) + *problem));
      return false;
    }
  }
  const std::vector<std::string_view> views(encoded.begin(), encoded.end());
  intake_.offer(queue_name, views, mono_us(), wall_us(), taken_);
  if (!taken_) {
    const std::string at = taken_.in_message ? where(taken_.message) : std::string();
    HttpResponse r = error_response(taken_.code, at + taken_.detail, taken_.retry_after);
    if (!taken_.schema.keyword.empty()) {
      // Refused by the queue's schema: where, and which rule, as fields too.
      json body = json::parse(r.body);
      json& e = body["error"];
      e["schema_version"] = taken_.schema.version;
      e["pointer"] = taken_.schema.pointer;
      e["keyword"] = taken_.schema.keyword;
      if (batch) e["message_index"] = taken_.message;
      r.body = json_text(body);
    }
    respond(std::move(r));
    return false;
  }
  const engine::Queue& queue = *taken_.queue;
  json results = json::array();
  std::size_t next_duplicate = 0;
  for (std::size_t i = 0; i < taken_.ids.size(); ++i) {
    const bool duplicate =
        next_duplicate < taken_.duplicates.size() && taken_.duplicates[next_duplicate] == i;
    if (duplicate) ++next_duplicate;
    if (batch)
      results.push_back({{"id", taken_.ids[i]},
                         {"duplicate", duplicate},
                         {"correlation_id", drafts[i].correlation_id}});
    if (log::enabled(log::Level::debug)) {
      auto line = log::debug("published");
      line.str("queue", queue.name())
          .unum("message_id", taken_.ids[i])
          .str("correlation_id", drafts[i].correlation_id)
          .str("via", "http");
      if (const auto trace = trace_id_of(encoded[i]); !trace.empty()) line.str("trace_id", trace);
    }
  }
  HttpResponse r = batch ? json_response(202, {{"messages", std::move(results)},
                                               {"pressure", queue.pressure() / 100.0}})
                         : json_response(202, {{"id", taken_.ids[0]},
                                               {"duplicate", !taken_.duplicates.empty()},
                                               {"correlation_id", drafts[0].correlation_id},
                                               {"pressure", queue.pressure() / 100.0}});
  answer_published(queue, std::move(r), respond);
  return true;
}

void HttpApi::publish_batch(const QueueCall& call, Respond& respond) {
  const HttpRequest& request = call.request;
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
  const engine::QueueOptions& queue_options = engine_.options_for(call.queue);
  std::vector<PublishDraft> drafts(messages->size());
  for (std::size_t i = 0; i < messages->size(); ++i) {
    if (auto p = draft_from_json((*messages)[i], queue_options, drafts[i])) {
      respond(error_response(errc::invalid_argument,
                             "batch: message " + std::to_string(i) + ": " + *p));
      return;
    }
    inherit_trace_context(request, drafts[i]);
  }
  publish_drafts(call.queue, drafts, true, respond);
}

}  // namespace sluice::net
