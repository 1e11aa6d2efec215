// The compiled form of a schema, which the compiler (schema.cpp) builds and the
// validator (validate.cpp) walks: one Node per subschema of the document, each
// with its keywords already checked and grouped by the instance type they
// apply to, subschemas as indices, every $ref already replaced by its target.
// Also the text helpers both sides use for their one-line messages.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "regex.hpp"

namespace sluice::schema::detail {

using nlohmann::json;
using Index = std::uint32_t;  // of a node in Program::nodes

// Subschemas nested deeper than this in a document are refused, so that only a
// $ref can take a validation to Schema::kMaxDepth.
constexpr int kMaxSchemaNesting = 128;
constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();

// "type": one bit per type name. An integral number has kNumber and kInteger.
enum TypeBits : std::uint8_t {
  kNull = 1,
  kBoolean = 2,
  kObject = 4,
  kArray = 8,
  kNumber = 16,
  kInteger = 32,
  kString = 64,
};

struct NumberChecks {
  std::optional<json> minimum, maximum, exclusive_minimum, exclusive_maximum, multiple_of;
};

struct StringChecks {
  std::uint64_t min_length = 0;  // in code points
  std::uint64_t max_length = kNoLimit;
  std::optional<Regex> pattern;
  std::string pattern_source;
};

struct ArrayChecks {
  std::uint64_t min_items = 0;
  std::uint64_t max_items = kNoLimit;
  bool unique_items = false;
  std::optional<Index> items;               // "items": one schema for every item
  std::optional<std::vector<Index>> tuple;  // "items": [schemas], item i against tuple[i]
  std::optional<Index> additional_items;    // after the tuple's items (ignored without one)
  std::optional<Index> contains;
};

struct PatternProperty {
  Regex regex;
  std::string source;
  Index schema;
};

struct Dependency {
  std::string property;
  std::optional<Index> schema;        // schema form: the whole object against it
  std::vector<std::string> required;  // array form
};

struct ObjectChecks {
  std::vector<std::string> required;
  std::uint64_t min_properties = 0;
  std::uint64_t max_properties = kNoLimit;
  std::vector<std::pair<std::string, Index>> properties;  // sorted by name
  std::vector<PatternProperty> pattern_properties;
  std::optional<Index> additional_properties;
  std::optional<Index> property_names;
  std::vector<Dependency> dependencies;
};

struct Node {
  enum class Kind : std::uint8_t {
    kSchema,  // an object schema: its keywords below
    kTrue,
    kFalse,
    kRef,  // {"$ref": ...}: its siblings are ignored; no node refers to it once compiled
  };
  Kind kind = Kind::kSchema;
  std::uint8_t types = 0;  // TypeBits; 0 without "type"
  std::optional<json> const_value;
  std::optional<std::vector<json>> enum_values;
  std::unique_ptr<NumberChecks> number;
  std::unique_ptr<StringChecks> string;
  std::unique_ptr<ArrayChecks> array;
  std::unique_ptr<ObjectChecks> object;
  std::vector<Index> all_of, any_of, one_of;
  std::optional<Index> not_, if_, then_, else_;
  Index ref = 0;  // kRef: the target
};

struct Program {
  std::vector<Node> nodes;
  Index root = 0;
};

// Calls f(Index& child, bool same_value) for every subschema slot of `node`.
// same_value: the child applies to the very value the node applies to (allOf,
// not, if, a dependency's schema, ...), rather than to a part of it.
template <typename F>
void for_each_child(Node& node, F&& f) {
  const auto each = [&f](std::vector<Index>& list, bool same) {
    for (Index& child : list) f(child, same);
  };
  const auto maybe = [&f](std::optional<Index>& child, bool same) {
    if (child) f(*child, same);
  };
  each(node.all_of, true);
  each(node.any_of, true);
  each(node.one_of, true);
  maybe(node.not_, true);
  maybe(node.if_, true);
  maybe(node.then_, true);
  maybe(node.else_, true);
  if (node.array) {
    maybe(node.array->items, false);
    if (node.array->tuple) each(*node.array->tuple, false);
    maybe(node.array->additional_items, false);
    maybe(node.array->contains, false);
  }
  if (node.object) {
    for (auto& property : node.object->properties) f(property.second, false);
    for (auto& property : node.object->pattern_properties) f(property.schema, false);
    maybe(node.object->additional_properties, false);
    maybe(node.object->property_names, false);
    for (auto& dependency : node.object->dependencies) maybe(dependency.schema, true);
  }
}

// ---- Text for messages (validate.cpp) ----

// Values and names in messages are cut to about this many bytes.
constexpr std::size_t kShownBytes = 100;

// `s` as a JSON string literal, on one line, cut at `limit` bytes (then
// followed by "..."); bytes that are not UTF-8 show as U+FFFD.
std::string quote(std::string_view s, std::size_t limit = kShownBytes);
// `s` itself (a pattern, a pointer) on one line: control characters escaped as
// in JSON, cut like quote().
std::string shown_raw(std::string_view s, std::size_t limit = kShownBytes);
// `v` as JSON text, cut the same way; never recurses deeper than `limit`.
std::string shown(const json& v, std::size_t limit = kShownBytes);
// "object", "integer" (an integral number), "number", ...
const char* type_name(const json& v);
// A JSON Pointer token: "~" and "/" escaped as "~0" and "~1".
std::string pointer_token(std::string_view name);

}  // namespace sluice::schema::detail
