#include "http_json.hpp"

#include <algorithm>
#include <charconv>

#include "http_util.hpp"
#include "json_body.hpp"
#include "sluice/protocol/codec.hpp"
#include "utf8.hpp"

namespace sluice::net {

std::string json_text(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

HttpResponse json_response(unsigned status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = json_text(body);
  return r;
}

HttpResponse error_response(errc code, std::string_view message, engine::Micros retry_after) {
  json e = {{"code", to_string(code)}, {"message", message}};
  HttpResponse r;
  if (retry_after > 0) {
    const auto ms = (retry_after + 999) / 1000;
    e["retry_after_ms"] = ms;
    r.headers.emplace_back("Retry-After",
                           std::to_string(std::max<std::int64_t>(1, (ms + 999) / 1000)));
  }
  r.status = http_status(code);
  r.body = json_text(json{{"error", e}});
  return r;
}

HttpResponse unauthenticated(std::string_view message) {
  HttpResponse r = error_response(errc::unauthenticated, message);
  r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"sluice\"");
  return r;
}

HttpResponse method_not_allowed(std::string_view allow) {
  HttpResponse r =
      error_response(errc::unsupported, "method not allowed here; allowed: " + std::string(allow));
  r.status = 405;
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

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

void append_message_json(std::string& out, std::string_view raw, std::uint64_t id,
                         std::uint32_t attempt, std::int64_t publish_us) {
  const auto quoted = [&out](std::string_view text) {
    out += '"';
    append_json_escaped(out, text);
    out += '"';
  };
  out += "{\"id\":\"";
  out += std::to_string(id);
  out += "\",\"attempt\":";
  out += std::to_string(attempt);
  out += ",\"publish_time_us\":";
  out += std::to_string(publish_us);
  protocol::MessageParts parts;
  if (protocol::parse_message(raw, parts)) {
    // Headers as an object: a repeated name keeps its last value, as describe_message.
    std::vector<protocol::Header> headers;
    std::string_view correlation_id;
    bool has_correlation_id = false;
    protocol::for_each_header(parts, [&](const protocol::Header& h) {
      const auto same =
          std::find_if(headers.begin(), headers.end(),
                       [&](const protocol::Header& seen) { return seen.key == h.key; });
      if (same != headers.end())
        same->value = h.value;
      else
        headers.push_back(h);
      if (h.key == protocol::kCorrelationHeader) {
        correlation_id = h.value;
        has_correlation_id = true;
      }
    });
    if (has_correlation_id) {
      out += ",\"correlation_id\":";
      quoted(correlation_id);
    }
    out += ",\"headers\":{";
    for (std::size_t i = 0; i < headers.size(); ++i) {
      if (i != 0) out += ',';
      quoted(headers[i].key);
      out += ':';
      quoted(headers[i].value);
    }
    out += '}';
    if (valid_utf8(parts.payload)) {
      out += ",\"payload\":";
      quoted(parts.payload);
    } else {
      out += ",\"payload_base64\":\"";
      out += base64_encode(parts.payload);
      out += '"';
    }
  }
  out += '}';
}

}  // namespace sluice::net
