#include "schemas.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "cloudevents.hpp"
#include "json_depth.hpp"
#include "sluice/protocol/codec.hpp"
#include "sluice/schema/schema.hpp"

namespace sluice::net {

namespace {

using json = nlohmann::json;

/// The version a CloudEvent's dataschema URI names: the whole URI, or its last
/// segment (after the last '/' or '#') without a ".json" ending.
Schemas::Version* version_of_dataschema(Schemas::Queue& queue, std::string_view uri) {
  std::string_view last =
      uri.substr(uri.find_last_of("/#") == std::string_view::npos ? 0 : uri.find_last_of("/#") + 1);
  if (last.ends_with(".json")) last.remove_suffix(5);
  for (auto& v : queue.versions)
    if (v.name == uri || v.name == last) return &v;
  return nullptr;
}

/// A JSON Pointer as it may go in a one-line detail: control characters (a
/// property name may hold a newline) escaped, cut at 200 bytes.
std::string one_line(std::string_view pointer) {
  std::string out;
  for (const char c : pointer.substr(0, 200)) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out;
}

std::string version_list(const Schemas::Queue& queue) {
  std::string names;
  for (const auto& v : queue.versions) names += (names.empty() ? "" : ", ") + v.name;
  return names;
}

}  // namespace

Error Schemas::load(const config::Settings& settings, std::vector<Queue>& out) {
  out.clear();
  for (const auto& declared : settings.queues) {
    if (declared.schemas.empty()) continue;
    Queue queue;
    queue.name = declared.name;
    queue.required = declared.require_schema;
    for (const auto& [version, file] : declared.schemas) {
      const std::string where =
          "queues." + declared.name + ".schemas." + version + " (" + file + ")";
      std::error_code ec;
      std::ifstream in(file, std::ios::binary);
      if (!in || std::filesystem::is_directory(file, ec))
        return {errc::invalid_argument, where + ": cannot read the file"};
      const std::string text((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
      const json document = json::parse(text, nullptr, false);
      if (document.is_discarded()) return {errc::invalid_argument, where + ": not valid JSON"};
      std::string problem;
      auto compiled = schema::Schema::compile(document, problem);
      if (!compiled) return {errc::invalid_argument, where + ": " + problem};
      queue.versions.push_back({version, file, std::move(compiled)});
    }
    out.push_back(std::move(queue));
  }
  return {};
}

void Schemas::replace(std::vector<Queue> next) {
  for (Queue& q : next) {
    const Queue* old = find(q.name);
    if (old == nullptr) continue;
    q.missing = old->missing;
    q.unknown = old->unknown;
    for (Version& v : q.versions)
      for (const Version& was : old->versions)
        if (was.name == v.name) {
          v.valid = was.valid;
          v.invalid = was.invalid;
        }
  }
  queues_ = std::move(next);
}

Schemas::Queue* Schemas::find(std::string_view queue) noexcept {
  for (Queue& q : queues_)
    if (q.name == queue) return &q;
  return nullptr;
}

Error Schemas::check(Queue& queue, const protocol::MessageParts& parts, SchemaRefusal& why) {
  // Each of these once: a consumer reading the first of two would see another
  // message than the one checked.
  std::string_view named, dataschema, content_type;
  std::string_view repeated;
  protocol::for_each_header(parts, [&](const protocol::Header& h) {
    std::string_view* slot = h.key == kSchemaVersionHeader ? &named
                             : h.key == "ce-dataschema"    ? &dataschema
                             : h.key == "content-type"     ? &content_type
                                                           : nullptr;
    if (slot == nullptr) return;
    if (slot->data() != nullptr) repeated = h.key;
    *slot = h.value;
  });
  why = {};
  if (!repeated.empty()) {
    why.keyword = "schema_version";
    return {errc::invalid_argument, "header " + std::string(repeated) +
                                        " is given twice; a queue with schemas takes it once"};
  }
  Version* version = nullptr;
  if (!named.empty()) {
    for (Version& v : queue.versions)
      if (v.name == named) version = &v;
  } else if (!dataschema.empty()) {
    version = version_of_dataschema(queue, dataschema);
  }
  if (version == nullptr) {
    if (named.empty() && dataschema.empty()) {
      if (!queue.required) return {};
      ++queue.missing;
      why.keyword = "schema_version";
      return {errc::invalid_argument, "queue " + queue.name +
                                          " requires a schema version (sluice-schema-version "
                                          "header, or a CloudEvent's dataschema); it has " +
                                          version_list(queue)};
    }
    ++queue.unknown;
    why.keyword = "schema_version";
    const std::string_view given = named.empty() ? dataschema : named;
    return {errc::invalid_argument, "unknown schema version \"" +
                                        std::string(given.substr(0, 100)) + "\" for queue " +
                                        queue.name + " (it has " + version_list(queue) + ")"};
  }
  why.version = version->name;
  json document = json_depth_within(parts.payload) ? json::parse(parts.payload, nullptr, false)
                                                   : json(json::value_t::discarded);
  if (cloudevents::is_media_type(content_type, cloudevents::kStructuredType) &&
      document.is_object() && document.value("specversion", json()) == "1.0") {
    // A structured CloudEvent: its data is what the schema describes (an
    // event without data, or with data_base64, has no JSON to check).
    auto data = document.find("data");
    if (data == document.end()) {
      document = json(json::value_t::discarded);
    } else {
      json inner = std::move(*data);
      document = std::move(inner);
    }
  }
  if (document.is_discarded()) {
    ++version->invalid;
    why.keyword = "json";
    return {errc::invalid_argument, "schema " + version->name +
                                        ": the message is not JSON (or a structured CloudEvent "
                                        "without \"data\"), so it cannot be valid"};
  }
  const auto violation = version->schema->validate(document);
  if (!violation) {
    ++version->valid;
    return {};
  }
  ++version->invalid;
  why.pointer = violation->pointer;
  why.keyword = violation->keyword;
  return {errc::invalid_argument, "schema " + version->name + ": at \"" +
                                      one_line(violation->pointer) + "\": " + violation->keyword +
                                      ": " + violation->message};
}

}  // namespace sluice::net
