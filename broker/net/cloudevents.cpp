#include "cloudevents.hpp"

#include <nlohmann/json.hpp>

#include "json_depth.hpp"
#include "sluice/protocol/frames.hpp"
#include "sluice/security/hmac.hpp"

namespace sluice::net::cloudevents {

namespace {

using json = nlohmann::json;

/// Attribute names are lower-case letters and digits (the spec's rule).
bool valid_attribute_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

/// The required attributes, as every mode needs them.
std::optional<std::string> check_required(std::string_view specversion, std::string_view id,
                                          std::string_view source, std::string_view type,
                                          std::string_view prefix) {
  if (specversion != "1.0")
    return std::string(prefix) + "specversion must be \"1.0\" (CloudEvents 1.0)";
  if (id.empty()) return std::string(prefix) + "id is required (a non-empty string)";
  if (source.empty()) return std::string(prefix) + "source is required (a non-empty URI-reference)";
  if (type.empty()) return std::string(prefix) + "type is required (a non-empty string)";
  return std::nullopt;
}

std::optional<std::string> from_event(const json& event, PublishDraft& d, std::string_view where) {
  const std::string prefix = "cloudevents: " + std::string(where);
  if (!event.is_object()) return prefix + "an event must be a JSON object";
  std::string specversion, id, source, type;
  for (const auto& [name, value] : event.items()) {
    if (name == "data" || name == "data_base64") continue;
    if (!valid_attribute_name(name))
      return prefix + "attribute \"" + name.substr(0, 64) +
             "\" is not a CloudEvents attribute name (lower-case letters and digits)";
    std::string text;
    if (value.is_string())
      text = value.get<std::string>();
    else if (value.is_number() || value.is_boolean())
      text = value.dump();
    else if (value.is_null())
      continue;
    else
      return prefix + "attribute " + name + " must be a string, number or boolean";
    if (name == "specversion") specversion = text;
    if (name == "id") id = text;
    if (name == "source") source = text;
    if (name == "type") type = text;
    if (text.size() > protocol::kMaxHeaderValueBytes)
      return prefix + "attribute " + name + " is over 16384 bytes";
    d.headers.emplace_back("ce-" + name, std::move(text));
  }
  if (event.contains("data") && event.contains("data_base64"))
    return prefix + "give data or data_base64, not both";
  if (auto problem = check_required(specversion, id, source, type, prefix)) return problem;
  d.headers.emplace_back("content-type", std::string(kStructuredType));
  d.headers.emplace_back(std::string(protocol::kDedupHeader), dedup_id(source, id));
  return std::nullopt;
}

}  // namespace

Mode mode_of(const HttpRequest& request) {
  const std::string* type = request.header("content-type");
  if (type != nullptr && is_media_type(*type, kStructuredType)) return Mode::structured;
  if (type != nullptr && is_media_type(*type, kBatchType)) return Mode::batch;
  if (request.header("ce-specversion") != nullptr) return Mode::binary;
  return Mode::none;
}

std::optional<std::string> from_binary(const HttpRequest& request, PublishDraft& d) {
  std::string_view specversion, id, source, type;
  for (const auto& [name, value] : request.headers) {
    if (!name.starts_with("ce-")) continue;
    const std::string_view attribute = std::string_view(name).substr(3);
    if (!valid_attribute_name(attribute))
      return "cloudevents: header " + name.substr(0, 70) +
             " is not a CloudEvents attribute (ce- and lower-case letters and digits)";
    if (attribute == "specversion") specversion = value;
    if (attribute == "id") id = value;
    if (attribute == "source") source = value;
    if (attribute == "type") type = value;
    if (attribute == "data" || attribute == "data_base64")
      return "cloudevents: ce-" + std::string(attribute) +
             " is not an attribute (the body is the data)";
    d.headers.emplace_back(name, value);
  }
  if (auto problem = check_required(specversion, id, source, type, "cloudevents: ce-"))
    return problem;
  if (!d.has_header(protocol::kDedupHeader))
    d.headers.emplace_back(std::string(protocol::kDedupHeader), dedup_id(source, id));
  return std::nullopt;
}

std::optional<std::string> from_json(std::string_view body, bool batch, std::size_t max_events,
                                     std::vector<PublishDraft>& drafts) {
  if (!json_depth_within(body))
    return "cloudevents: the body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
  const json parsed = json::parse(body, nullptr, false);
  if (parsed.is_discarded()) return "cloudevents: the body is not valid JSON";
  drafts.clear();
  if (!batch) {
    PublishDraft& d = drafts.emplace_back();
    if (auto problem = from_event(parsed, d, "")) return problem;
    d.payload = std::string(body);  // the event exactly as it came
    return std::nullopt;
  }
  if (!parsed.is_array()) return "cloudevents: a batch is a JSON array of events";
  if (parsed.size() > max_events)
    return "cloudevents: a batch holds at most " + std::to_string(max_events) + " events";
  drafts.resize(parsed.size());
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    if (auto problem = from_event(parsed[i], drafts[i], "event " + std::to_string(i) + ": "))
      return problem;
    drafts[i].payload = parsed[i].dump();
  }
  return std::nullopt;
}

std::string dedup_id(std::string_view source, std::string_view id) {
  return pair_dedup_id("ce", source, id);
}

std::string pair_dedup_id(std::string_view tag, std::string_view first, std::string_view second) {
  std::string key = std::to_string(first.size()) + ":" + std::string(first) + std::string(second);
  if (tag.size() + 1 + key.size() <= protocol::kMaxDedupIdBytes)
    return std::string(tag) + ":" + key;
  return std::string(tag) + ":sha256:" + security::to_hex(security::hmac_sha256(tag, key));
}

}  // namespace sluice::net::cloudevents
