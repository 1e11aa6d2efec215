// JSON answers and bodies of the HTTP API, shared by its handlers
// (http_api.cpp routes; http_publish, http_receive and http_admin answer).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "engine.hpp"
#include "http_types.hpp"
#include "sluice/protocol/errc.hpp"

namespace sluice::net {

using json = nlohmann::json;

/// `j` as one line of JSON and a newline; text from clients (reasons, header
/// values) may be any bytes: what is not UTF-8 is replaced, not refused.
std::string json_text(const json& j);
/// `body` as the answer's JSON (text that is not UTF-8 replaced, not refused).
HttpResponse json_response(unsigned status, const json& body);
/// The error shape of docs/http-api.md, with Retry-After when `retry_after` > 0.
HttpResponse error_response(errc code, std::string_view message, engine::Micros retry_after = 0);
/// 401 with WWW-Authenticate.
HttpResponse unauthenticated(std::string_view message);
/// 405 with Allow.
HttpResponse method_not_allowed(std::string_view allow);
/// A JSON request body: an object with only `allowed` fields, or (when empty
/// and allowed) {}. Strict: see parse_strict.
std::optional<json> parse_body(const HttpRequest& request, bool empty_ok,
                               std::initializer_list<std::string_view> allowed,
                               std::string& problem);
/// A non-negative integer field: absent → `fallback`; wrong type or over `max` → problem.
bool read_uint(const json& body, const char* name, std::uint64_t max, std::uint64_t fallback,
               std::uint64_t& out, std::string& problem);
/// A whole decimal string as an unsigned integer.
bool parse_uint(std::string_view text, std::uint64_t& out);
/// The message's headers as a JSON object, its correlation id, and its payload
/// as "payload" (UTF-8) or "payload_base64".
void describe_message(std::string_view raw, json& out);
/// Appends a trigger's JSON entry for one message, without building a json:
/// describe_message's object plus "id" (a string), "attempt" and
/// "publish_time_us", as one JSON object (a batch is hundreds of these).
void append_message_json(std::string& out, std::string_view raw, std::uint64_t id,
                         std::uint32_t attempt, std::int64_t publish_us);

}  // namespace sluice::net
