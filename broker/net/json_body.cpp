#include "json_body.hpp"

#include "json_depth.hpp"

#include <algorithm>
#include <set>
#include <vector>

namespace sluice::net {

using json = nlohmann::json;

std::optional<json> parse_strict(std::string_view text, std::string& problem) {
  if (text.starts_with("\xEF\xBB\xBF")) {
    problem = "the body starts with a byte order mark; send plain UTF-8 JSON";
    return std::nullopt;
  }
  if (!json_depth_within(text)) {
    problem = "the body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
    return std::nullopt;
  }
  std::vector<std::set<std::string>> keys;  // of each object being read, innermost last
  std::string duplicate;
  const json::parser_callback_t seen = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty() && duplicate.empty()) {
      const auto& name = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(name).second) duplicate = name;
    }
    return true;
  };
  json j = json::parse(text, seen, false);
  if (j.is_discarded()) {
    problem = "the body is not valid JSON";
    return std::nullopt;
  }
  if (!duplicate.empty()) {
    problem = "the field \"" + duplicate.substr(0, 64) + "\" appears twice";
    return std::nullopt;
  }
  return j;
}

std::optional<std::string> unknown_field(const json& object,
                                         std::initializer_list<std::string_view> allowed) {
  for (const auto& [name, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), name) != allowed.end()) continue;
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return "unknown field \"" + name.substr(0, 64) + "\" (allowed: " + list + ")";
  }
  return std::nullopt;
}

}  // namespace sluice::net
