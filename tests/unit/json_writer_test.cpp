// The hand-written JSON of a trigger's batch (append_message_json) says exactly
// what the json-built description (describe_message) says, for any message.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "http_json.hpp"
#include "sluice/protocol/codec.hpp"
#include "utf8.hpp"

using namespace sluice;
using nlohmann::json;

namespace {

std::string message(std::string_view payload,
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
  std::vector<protocol::Header> views;
  for (const auto& [k, v] : headers) views.push_back({k, v});
  std::string out;
  protocol::encode_message(out, views, payload);
  return out;
}

json expected(const std::string& raw, std::uint64_t id, std::uint32_t attempt, std::int64_t at) {
  json j;
  net::describe_message(raw, j);
  j["id"] = std::to_string(id);
  j["attempt"] = attempt;
  j["publish_time_us"] = at;
  return j;
}

}  // namespace

TEST_CASE("append_message_json: the same object describe_message builds") {
  const std::vector<std::string> messages = {
      message(""),
      message("{\"w\":640}"),
      message("quotes \" backslash \\ newline \n tab \t bell \x07 del \x7f"),
      message("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
      message(std::string("\x00\xff\x80 binary", 10)),  // not UTF-8: payload_base64
      message("h", {{"sluice-key", "tenant-a"}, {"content-type", "text/plain"}}),
      message("c", {{"sluice-correlation-id", "checkout-7781"}, {"x", "\"quoted\""}}),
      message("d", {{"dup", "first"}, {"other", "o"}, {"dup", "last"}}),
  };
  std::uint64_t id = 1;
  for (const auto& raw : messages) {
    CAPTURE(raw);
    std::string out;
    net::append_message_json(out, raw, id, 3, 1764950000000000 + static_cast<std::int64_t>(id));
    const json parsed = json::parse(out);
    CHECK(parsed == expected(raw, id, 3, 1764950000000000 + static_cast<std::int64_t>(id)));
    ++id;
  }
  // A batch is entries joined by commas inside brackets.
  std::string batch = "[";
  for (const auto& raw : messages) {
    if (batch.size() > 1) batch += ',';
    net::append_message_json(batch, raw, 9, 1, 0);
  }
  batch += "]";
  CHECK(json::parse(batch).size() == messages.size());
}

TEST_CASE("append_json_escaped: bytes that are not UTF-8 become U+FFFD, and the text stays JSON") {
  std::string out = "\"";
  net::append_json_escaped(out, "ok \xff \xc3 \xed\xa0\x80 \xe2\x82\xac");
  out += "\"";
  const std::string text = json::parse(out).get<std::string>();
  CHECK(text == "ok \xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xe2\x82\xac");
  out.clear();
  net::append_json_escaped(out, std::string("\x00\x1f", 2));
  CHECK(out == "\\u0000\\u001f");
}
