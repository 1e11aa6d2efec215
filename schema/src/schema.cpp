// The schema compiler (Schema::compile): checks every keyword of a draft 7
// document, builds one Node per subschema (program.hpp), resolves $id and $ref
// within the document, refuses reference cycles that never move into the
// instance, and replaces every $ref by its target. Validation is validate.cpp.
#include "sluice/schema/schema.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <unordered_map>

#include "program.hpp"

namespace sluice::schema {
namespace detail {
namespace {

// ---- URI references (RFC 3986 section 5), as far as $id and $ref need them ----

struct Uri {
  std::optional<std::string> scheme, authority, query, fragment;
  std::string path;
};

bool is_scheme(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  });
}

Uri parse_uri(std::string_view s) {
  Uri u;
  const std::size_t colon = s.find_first_of(":/?#");
  if (colon != std::string_view::npos && s[colon] == ':' && is_scheme(s.substr(0, colon))) {
    u.scheme = std::string(s.substr(0, colon));
    s.remove_prefix(colon + 1);
  }
  if (const std::size_t hash = s.find('#'); hash != std::string_view::npos) {
    u.fragment = std::string(s.substr(hash + 1));
    s = s.substr(0, hash);
  }
  if (const std::size_t question = s.find('?'); question != std::string_view::npos) {
    u.query = std::string(s.substr(question + 1));
    s = s.substr(0, question);
  }
  if (s.starts_with("//")) {
    s.remove_prefix(2);
    const std::size_t slash = s.find('/');
    u.authority = std::string(s.substr(0, slash));
    s = slash == std::string_view::npos ? std::string_view() : s.substr(slash);
  }
  u.path = std::string(s);
  return u;
}

// RFC 3986 5.2.4, in one pass.
std::string remove_dot_segments(std::string_view in) {
  std::string out;
  const auto drop_last_segment = [&out] {
    const std::size_t slash = out.rfind('/');
    out.erase(slash == std::string::npos ? 0 : slash);
  };
  std::size_t i = 0;
  while (i < in.size()) {
    const std::string_view rest = in.substr(i);
    if (rest.starts_with("../")) {
      i += 3;
    } else if (rest.starts_with("./") || rest.starts_with("/./")) {
      i += 2;
    } else if (rest == "/.") {
      out += '/';
      i = in.size();
    } else if (rest.starts_with("/../")) {
      i += 3;
      drop_last_segment();
    } else if (rest == "/..") {
      drop_last_segment();
      out += '/';
      i = in.size();
    } else if (rest == "." || rest == "..") {
      i = in.size();
    } else {
      std::size_t end = in.find('/', rest[0] == '/' ? i + 1 : i);
      if (end == std::string_view::npos) end = in.size();
      out.append(in.substr(i, end - i));
      i = end;
    }
  }
  return out;
}

// `reference` resolved against `base` (RFC 3986 5.2.2). A relative base (a
// document without an absolute $id) resolves relative references to relative
// results, which is all same-document lookups need.
std::string resolve_uri(std::string_view base_text, std::string_view reference) {
  const Uri r = parse_uri(reference);
  const Uri base = parse_uri(base_text);
  Uri t;
  if (r.scheme) {
    t = r;
    t.path = remove_dot_segments(r.path);
  } else {
    if (r.authority) {
      t.authority = r.authority;
      t.path = remove_dot_segments(r.path);
      t.query = r.query;
    } else {
      if (r.path.empty()) {
        t.path = base.path;
        t.query = r.query ? r.query : base.query;
      } else if (r.path[0] == '/') {
        t.path = remove_dot_segments(r.path);
        t.query = r.query;
      } else {
        std::string merged;
        if (base.authority && base.path.empty()) {
          merged = "/" + r.path;
        } else {
          const std::size_t slash = base.path.rfind('/');
          merged = (slash == std::string::npos ? std::string() : base.path.substr(0, slash + 1)) +
                   r.path;
        }
        t.path = remove_dot_segments(merged);
        t.query = r.query;
      }
      t.authority = base.authority;
    }
    t.scheme = base.scheme;
  }
  t.fragment = r.fragment;
  std::string out;
  if (t.scheme) out += *t.scheme + ":";
  if (t.authority) out += "//" + *t.authority;
  out += t.path;
  if (t.query) out += "?" + *t.query;
  if (t.fragment) out += "#" + *t.fragment;
  return out;
}

// A URI fragment's %XX escapes decoded ("#/percent%25field"); a '%' that does
// not start one stays as it is.
std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The value a JSON Pointer ("/a/0/b~1c") leads to from `at`, or nullptr.
const json* follow_pointer(const json* at, std::string_view pointer) {
  std::size_t i = 0;
  while (i < pointer.size()) {
    if (pointer[i] != '/') return nullptr;
    std::size_t end = pointer.find('/', i + 1);
    if (end == std::string_view::npos) end = pointer.size();
    std::string token;
    for (std::size_t k = i + 1; k < end; ++k) {
      if (pointer[k] != '~') {
        token += pointer[k];
      } else if (k + 1 < end && (pointer[k + 1] == '0' || pointer[k + 1] == '1')) {
        token += pointer[++k] == '0' ? '~' : '/';
      } else {
        return nullptr;
      }
    }
    if (at->is_object()) {
      const auto found = at->find(token);
      if (found == at->end()) return nullptr;
      at = &*found;
    } else if (at->is_array()) {
      if (token.empty() || token.size() > 18 || (token.size() > 1 && token[0] == '0') ||
          !std::all_of(token.begin(), token.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return nullptr;
      const std::size_t index = std::stoull(token);
      if (index >= at->size()) return nullptr;
      at = &(*at)[index];
    } else {
      return nullptr;
    }
    i = end;
  }
  return at;
}

// Where a schema pointer is, for an error: the pointer, on one line.
std::string where(const std::string& pointer) {
  return pointer.empty() ? std::string("the root") : shown_raw(pointer, 2 * kShownBytes);
}

// True if `v` has no arrays or objects nested more than `levels` deep.
bool nested_within(const json& v, int levels) {
  if (!v.is_structured()) return true;
  if (levels == 0) return false;
  return std::all_of(v.begin(), v.end(),
                     [levels](const json& e) { return nested_within(e, levels - 1); });
}

bool non_negative_integer(const json& v, std::uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<std::uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const std::int64_t i = v.get<std::int64_t>();
    out = static_cast<std::uint64_t>(i);
    return i >= 0;
  }
  if (v.is_number_float()) {  // draft 7 counts 2.0 as an integer
    const double d = v.get<double>();
    if (!(d >= 0) || !std::isfinite(d) || d != std::floor(d)) return false;
    out = d >= 18446744073709551616.0 ? kNoLimit : static_cast<std::uint64_t>(d);
    return true;
  }
  return false;
}

std::uint8_t type_bit(std::string_view name) {
  if (name == "null") return kNull;
  if (name == "boolean") return kBoolean;
  if (name == "object") return kObject;
  if (name == "array") return kArray;
  if (name == "number") return kNumber;
  if (name == "integer") return kInteger;
  if (name == "string") return kString;
  return 0;
}

bool is_annotation(std::string_view key) {
  static constexpr std::string_view kStrings[] = {
      "$comment", "title", "description", "contentMediaType", "contentEncoding", "format"};
  return key == "default" || key == "examples" || key == "readOnly" || key == "writeOnly" ||
         std::find(std::begin(kStrings), std::end(kStrings), key) != std::end(kStrings);
}

class Compiler {
 public:
  explicit Compiler(const json& document) : document_(document) {}

  std::unique_ptr<Program> run(std::string& error) {
    resources_[""] = &document_;
    const std::optional<Index> root = schema(document_, "", "", 0);
    if (!root || !resolve_refs() || !check_cycles()) {
      error = error_;
      return nullptr;
    }
    program_->root = *root;
    replace_refs();
    return std::move(program_);
  }

 private:
  // A $ref waiting for the whole document to be read.
  struct PendingRef {
    Index node;
    std::string reference;
    std::string base;
  };

  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }
  bool wrong_value(const std::string& key, const std::string& at, const char* expected,
                   const json& v) {
    return fail("keyword " + quote(key) + " at " + where(at) + ": must be " + expected + ", got " +
                shown(v, 40));
  }
  static std::string child_pointer(const std::string& at, std::string_view token) {
    return at + "/" + pointer_token(token);
  }

  // Compiles the schema `s` at `at` (a pointer into the document) and
  // everything below it; `base` is the URI its relative references resolve
  // against. Returns its node, or nullopt (and error_).
  std::optional<Index> schema(const json& s, const std::string& at, std::string base, int nesting) {
    if (nesting > kMaxSchemaNesting) {
      fail("the schema is nested more than " + std::to_string(kMaxSchemaNesting) +
           " levels deep at " + where(at));
      return std::nullopt;
    }
    const auto index = static_cast<Index>(program_->nodes.size());
    program_->nodes.emplace_back();
    pointers_.push_back(at);
    node_at_[&s] = index;
    Node node;
    if (s.is_boolean()) {
      node.kind = s.get<bool>() ? Node::Kind::kTrue : Node::Kind::kFalse;
      program_->nodes[index] = std::move(node);
      return index;
    }
    if (!s.is_object()) {
      fail("the schema at " + where(at) + " must be an object or a boolean, got " + shown(s, 40));
      return std::nullopt;
    }
    // In draft 7 a $ref makes its siblings ignored, "$id" too. They are still
    // checked, and compiled: a $ref elsewhere may point into them.
    const auto ref = s.find("$ref");
    if (ref == s.end() && !identify(s, at, base)) return std::nullopt;
    for (auto it = s.begin(); it != s.end(); ++it)
      if (!keyword(it.key(), it.value(), node, at, base, nesting)) return std::nullopt;
    if (ref != s.end()) {
      node.kind = Node::Kind::kRef;
      refs_.push_back({index, ref->get<std::string>(), base});
    }
    program_->nodes[index] = std::move(node);
    return index;
  }

  // Registers the "$id" of `s`, if any, and moves `base` to it.
  bool identify(const json& s, const std::string& at, std::string& base) {
    const auto id = s.find("$id");
    if (id == s.end()) return true;
    if (!id->is_string()) return wrong_value("$id", at, "a URI reference string", *id);
    const std::string& text = id->get_ref<const std::string&>();
    const std::string resolved = resolve_uri(base, text);
    const std::size_t hash = resolved.find('#');
    const std::string uri = resolved.substr(0, hash);
    const std::string name = hash == std::string::npos ? "" : resolved.substr(hash + 1);
    if (!name.empty()) {
      if (name[0] == '/')
        return fail("$id " + quote(text) + " at " + where(at) +
                    ": a JSON Pointer fragment is not allowed in $id");
      if (!anchors_.emplace(uri + "#" + name, &s).second)
        return fail("$id " + quote(text) + " at " + where(at) + ": the name is used twice");
    }
    if (text.empty() || text[0] == '#' || uri == base) return true;
    if (!resources_.emplace(uri, &s).second)
      return fail("$id " + quote(text) + " at " + where(at) + ": the URI is used twice");
    base = uri;
    return true;
  }

  std::optional<Index> subschema(const json& v, const std::string& at, const std::string& base,
                                 int nesting) {
    return schema(v, at, base, nesting + 1);
  }
  // A keyword whose value is one schema.
  bool one(const json& v, const std::string& at, const std::string& key, const std::string& base,
           int nesting, std::optional<Index>& out) {
    out = subschema(v, child_pointer(at, key), base, nesting);
    return out.has_value();
  }
  // allOf, anyOf, oneOf: a non-empty array of schemas.
  bool list(const json& v, const std::string& at, const std::string& key, const std::string& base,
            int nesting, std::vector<Index>& out) {
    if (!v.is_array() || v.empty()) return wrong_value(key, at, "a non-empty array of schemas", v);
    const std::string here = child_pointer(at, key);
    for (std::size_t i = 0; i < v.size(); ++i) {
      const auto child = subschema(v[i], here + "/" + std::to_string(i), base, nesting);
      if (!child) return false;
      out.push_back(*child);
    }
    return true;
  }
  // definitions, properties, patternProperties: an object of schemas.
  bool schema_map(const json& v, const std::string& at, const std::string& key,
                  const std::string& base, int nesting,
                  std::vector<std::pair<std::string, Index>>& out) {
    if (!v.is_object()) return wrong_value(key, at, "an object of schemas", v);
    const std::string here = child_pointer(at, key);
    for (auto it = v.begin(); it != v.end(); ++it) {
      const auto child = subschema(it.value(), child_pointer(here, it.key()), base, nesting);
      if (!child) return false;
      out.emplace_back(it.key(), *child);
    }
    return true;
  }
  // required, and the array form of a dependency: unique strings.
  bool names(const json& v, const std::string& key, const std::string& at,
             std::vector<std::string>& out) {
    if (!v.is_array()) return wrong_value(key, at, "an array of unique strings", v);
    for (const json& name : v) {
      if (!name.is_string()) return wrong_value(key, at, "an array of unique strings", v);
      out.push_back(name.get<std::string>());
    }
    std::vector<std::string_view> sorted(out.begin(), out.end());
    std::sort(sorted.begin(), sorted.end());
    const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
    if (twice != sorted.end())
      return fail("keyword " + quote(key) + " at " + where(at) + ": " + quote(*twice, 40) +
                  " is listed twice");
    return true;
  }
  bool count(const json& v, const std::string& key, const std::string& at, std::uint64_t& out) {
    return non_negative_integer(v, out) || wrong_value(key, at, "a non-negative integer", v);
  }
  bool number(const json& v, const std::string& key, const std::string& at,
              std::optional<json>& out) {
    if (!v.is_number() || (v.is_number_float() && !std::isfinite(v.get<double>())))
      return wrong_value(key, at, "a number", v);
    out = v;
    return true;
  }
  // Patterns show as written (unescaped): "(a)\1", not "(a)\\1".
  bool regex(std::string_view source, const std::string& what, const std::string& at,
             std::optional<Regex>& out) {
    std::string reason;
    out = Regex::compile(source, reason);
    return out.has_value() ||
           fail(what + " \"" + shown_raw(source) + "\" at " + where(at) + ": " + reason);
  }

  template <typename T>
  static T& group(std::unique_ptr<T>& checks) {
    if (!checks) checks = std::make_unique<T>();
    return *checks;
  }

  // One keyword of the schema object at `at`, into `node`.
  bool keyword(const std::string& key, const json& v, Node& node, const std::string& at,
               const std::string& base, int nesting) {
    if (is_annotation(key)) {
      if (key == "default") return true;
      if (key == "examples") return v.is_array() || wrong_value(key, at, "an array", v);
      if (key == "readOnly" || key == "writeOnly")
        return v.is_boolean() || wrong_value(key, at, "a boolean", v);
      return v.is_string() || wrong_value(key, at, "a string", v);
    }
    if (key == "$schema") {
      static constexpr std::string_view kDraft7[] = {
          "http://json-schema.org/draft-07/schema#", "http://json-schema.org/draft-07/schema",
          "https://json-schema.org/draft-07/schema#", "https://json-schema.org/draft-07/schema"};
      if (!v.is_string()) return wrong_value(key, at, "a URI string", v);
      if (std::find(std::begin(kDraft7), std::end(kDraft7), v.get_ref<const std::string&>()) ==
          std::end(kDraft7))
        return fail("$schema " + quote(v.get_ref<const std::string&>()) + " at " + where(at) +
                    ": only draft 7 (\"http://json-schema.org/draft-07/schema#\") is supported");
      return true;
    }
    if (key == "$id")  // registered by identify(), unless beside a $ref
      return v.is_string() || wrong_value(key, at, "a URI reference string", v);
    if (key == "$ref") return v.is_string() || wrong_value(key, at, "a URI reference string", v);
    if (key == "definitions") {
      std::vector<std::pair<std::string, Index>> unused;  // reached by $ref only
      return schema_map(v, at, key, base, nesting, unused);
    }

    // Any type.
    if (key == "type") return type(v, at, node);
    if (key == "enum") {
      if (!v.is_array()) return wrong_value(key, at, "an array", v);
      if (!nested_within(v, kMaxSchemaNesting))
        return fail("keyword \"enum\" at " + where(at) + ": the values are nested too deeply");
      node.enum_values.emplace(v.begin(), v.end());
      return true;
    }
    if (key == "const") {
      if (!nested_within(v, kMaxSchemaNesting))
        return fail("keyword \"const\" at " + where(at) + ": the value is nested too deeply");
      node.const_value = v;
      return true;
    }
    if (key == "allOf") return list(v, at, key, base, nesting, node.all_of);
    if (key == "anyOf") return list(v, at, key, base, nesting, node.any_of);
    if (key == "oneOf") return list(v, at, key, base, nesting, node.one_of);
    if (key == "not") return one(v, at, key, base, nesting, node.not_);
    if (key == "if") return one(v, at, key, base, nesting, node.if_);
    if (key == "then") return one(v, at, key, base, nesting, node.then_);
    if (key == "else") return one(v, at, key, base, nesting, node.else_);

    // Numbers.
    if (key == "minimum") return number(v, key, at, group(node.number).minimum);
    if (key == "maximum") return number(v, key, at, group(node.number).maximum);
    if (key == "exclusiveMinimum") return number(v, key, at, group(node.number).exclusive_minimum);
    if (key == "exclusiveMaximum") return number(v, key, at, group(node.number).exclusive_maximum);
    if (key == "multipleOf") {
      std::optional<json>& out = group(node.number).multiple_of;
      if (!number(v, key, at, out)) return false;
      if (!(out->get<double>() > 0)) return wrong_value(key, at, "a number above 0", v);
      return true;
    }

    // Strings.
    if (key == "minLength") return count(v, key, at, group(node.string).min_length);
    if (key == "maxLength") return count(v, key, at, group(node.string).max_length);
    if (key == "pattern") {
      if (!v.is_string()) return wrong_value(key, at, "a regular expression string", v);
      StringChecks& checks = group(node.string);
      checks.pattern_source = v.get<std::string>();
      return regex(checks.pattern_source, "pattern", at, checks.pattern);
    }

    // Arrays.
    if (key == "items") {
      ArrayChecks& checks = group(node.array);
      if (!v.is_array()) return one(v, at, key, base, nesting, checks.items);
      checks.tuple.emplace();
      const std::string here = child_pointer(at, key);
      for (std::size_t i = 0; i < v.size(); ++i) {
        const auto child = subschema(v[i], here + "/" + std::to_string(i), base, nesting);
        if (!child) return false;
        checks.tuple->push_back(*child);
      }
      return true;
    }
    if (key == "additionalItems")
      return one(v, at, key, base, nesting, group(node.array).additional_items);
    if (key == "contains") return one(v, at, key, base, nesting, group(node.array).contains);
    if (key == "minItems") return count(v, key, at, group(node.array).min_items);
    if (key == "maxItems") return count(v, key, at, group(node.array).max_items);
    if (key == "uniqueItems") {
      if (!v.is_boolean()) return wrong_value(key, at, "a boolean", v);
      group(node.array).unique_items = v.get<bool>();
      return true;
    }

    // Objects.
    if (key == "required") return names(v, key, at, group(node.object).required);
    if (key == "minProperties") return count(v, key, at, group(node.object).min_properties);
    if (key == "maxProperties") return count(v, key, at, group(node.object).max_properties);
    if (key == "properties") {
      auto& properties = group(node.object).properties;
      if (!schema_map(v, at, key, base, nesting, properties)) return false;
      std::sort(properties.begin(), properties.end());  // for the binary search
      return true;
    }
    if (key == "patternProperties") {
      std::vector<std::pair<std::string, Index>> schemas;
      if (!schema_map(v, at, key, base, nesting, schemas)) return false;
      for (auto& [source, index] : schemas) {
        std::optional<Regex> compiled;
        if (!regex(source, "patternProperties key", child_pointer(at, key), compiled)) return false;
        group(node.object)
            .pattern_properties.push_back({std::move(*compiled), std::move(source), index});
      }
      return true;
    }
    if (key == "additionalProperties")
      return one(v, at, key, base, nesting, group(node.object).additional_properties);
    if (key == "propertyNames")
      return one(v, at, key, base, nesting, group(node.object).property_names);
    if (key == "dependencies") return dependencies(v, at, base, nesting, group(node.object));

    return fail("unsupported keyword " + quote(key) + " at " + where(at));
  }

  bool type(const json& v, const std::string& at, Node& node) {
    const char* expected = "a type name or a non-empty array of unique type names";
    if (v.is_string()) {
      node.types = type_bit(v.get_ref<const std::string&>());
      return node.types != 0 || fail("keyword \"type\" at " + where(at) + ": unknown type " +
                                     quote(v.get_ref<const std::string&>()));
    }
    if (!v.is_array() || v.empty()) return wrong_value("type", at, expected, v);
    for (const json& name : v) {
      const std::uint8_t bit = name.is_string() ? type_bit(name.get_ref<const std::string&>()) : 0;
      if (bit == 0 || (node.types & bit) != 0) return wrong_value("type", at, expected, v);
      node.types |= bit;
    }
    return true;
  }

  bool dependencies(const json& v, const std::string& at, const std::string& base, int nesting,
                    ObjectChecks& checks) {
    if (!v.is_object())
      return wrong_value("dependencies", at, "an object of schemas or arrays of names", v);
    const std::string here = child_pointer(at, "dependencies");
    for (auto it = v.begin(); it != v.end(); ++it) {
      Dependency dependency{it.key(), std::nullopt, {}};
      const std::string name_at = child_pointer(here, it.key());
      if (it.value().is_array()) {
        if (!names(it.value(), "dependencies", name_at, dependency.required)) return false;
      } else {
        dependency.schema = subschema(it.value(), name_at, base, nesting);
        if (!dependency.schema) return false;
      }
      checks.dependencies.push_back(std::move(dependency));
    }
    return true;
  }

  // Points every $ref node at its target node.
  bool resolve_refs() {
    for (const PendingRef& ref : refs_) {
      const std::string target = resolve_uri(ref.base, ref.reference);
      const std::size_t hash = target.find('#');
      const std::string uri = target.substr(0, hash);
      const std::string fragment = hash == std::string::npos
                                       ? ""
                                       : percent_decode(std::string_view(target).substr(hash + 1));
      const std::string problem =
          "$ref " + quote(ref.reference) + " at " + where(pointers_[ref.node]) + ": ";
      const auto resource = resources_.find(uri);
      if (resource == resources_.end())
        return fail(problem + "only references within the document (\"#...\") are supported");
      const json* value = resource->second;
      if (!fragment.empty() && fragment[0] == '/') {
        value = follow_pointer(value, fragment);
        if (!value) return fail(problem + "no such location in the document");
      } else if (!fragment.empty()) {
        const auto anchor = anchors_.find(uri + "#" + fragment);
        if (anchor == anchors_.end()) return fail(problem + "no subschema has that \"$id\"");
        value = anchor->second;
      }
      const auto node = node_at_.find(value);
      if (node == node_at_.end()) return fail(problem + "it does not point to a schema");
      program_->nodes[ref.node].ref = node->second;
    }
    return true;
  }

  // Refuses a cycle of subschemas that apply to the same value (through $ref,
  // allOf, not, ...): validating would recurse without ever moving into the
  // instance. Cycles that move (items, properties) are recursive schemas.
  bool check_cycles() {
    std::vector<Node>& nodes = program_->nodes;
    std::vector<std::vector<Index>> same(nodes.size());
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].kind == Node::Kind::kRef) {
        same[i].push_back(nodes[i].ref);
      } else {
        for_each_child(nodes[i], [&same, i](Index& child, bool same_value) {
          if (same_value) same[i].push_back(child);
        });
      }
    }
    enum : std::uint8_t { kUnseen, kOnPath, kDone };
    std::vector<std::uint8_t> state(nodes.size(), kUnseen);
    std::vector<std::pair<Index, std::size_t>> path;  // node, next edge to take
    for (Index start = 0; start < nodes.size(); ++start) {
      if (state[start] != kUnseen) continue;
      state[start] = kOnPath;
      path.emplace_back(start, 0);
      while (!path.empty()) {
        const Index at = path.back().first;
        if (path.back().second == same[at].size()) {
          state[at] = kDone;
          path.pop_back();
          continue;
        }
        const Index next = same[at][path.back().second++];
        if (state[next] == kOnPath) return refuse_cycle(path, next);
        if (state[next] == kUnseen) {
          state[next] = kOnPath;
          path.emplace_back(next, 0);
        }
      }
    }
    return true;
  }

  bool refuse_cycle(const std::vector<std::pair<Index, std::size_t>>& path, Index back_to) {
    auto it = std::find_if(path.begin(), path.end(),
                           [back_to](const auto& step) { return step.first == back_to; });
    for (; it != path.end(); ++it) {
      if (program_->nodes[it->first].kind != Node::Kind::kRef) continue;
      const auto ref = std::find_if(refs_.begin(), refs_.end(),
                                    [&it](const PendingRef& r) { return r.node == it->first; });
      return fail("$ref " + quote(ref->reference) + " at " + where(pointers_[ref->node]) +
                  ": a reference cycle that never moves into the instance (endless recursion)");
    }
    return fail("a reference cycle that never moves into the instance");  // not reached
  }

  // Makes every use of a $ref node a use of its final target, so validating
  // follows no reference. check_cycles() guarantees chains of $ref end.
  void replace_refs() {
    std::vector<Node>& nodes = program_->nodes;
    constexpr Index kUnknown = std::numeric_limits<Index>::max();
    std::vector<Index> target(nodes.size(), kUnknown);
    std::vector<Index> chain;
    for (Index i = 0; i < nodes.size(); ++i) {
      Index at = i;
      chain.clear();
      while (nodes[at].kind == Node::Kind::kRef && target[at] == kUnknown) {
        chain.push_back(at);
        at = nodes[at].ref;
      }
      const Index end = nodes[at].kind == Node::Kind::kRef ? target[at] : at;
      for (Index link : chain) target[link] = end;
      if (nodes[i].kind != Node::Kind::kRef) target[i] = i;
    }
    for (Node& node : nodes)
      for_each_child(node, [&target](Index& child, bool) { child = target[child]; });
    program_->root = target[program_->root];
  }

  const json& document_;
  std::unique_ptr<Program> program_ = std::make_unique<Program>();
  std::vector<std::string> pointers_;  // of each node, in the document
  std::unordered_map<const json*, Index> node_at_;
  std::map<std::string, const json*> resources_;  // by absolute URI: "$id" with a path
  std::map<std::string, const json*> anchors_;    // by URI#name: "$id": "#name"
  std::vector<PendingRef> refs_;
  std::string error_;
};

}  // namespace
}  // namespace detail

std::unique_ptr<const Schema> Schema::compile(const nlohmann::json& document, std::string& error) {
  try {
    auto program = detail::Compiler(document).run(error);
    if (!program) return nullptr;
    return std::unique_ptr<const Schema>(new Schema(std::move(program)));
  } catch (const std::exception& e) {  // std::bad_alloc; nothing else is expected
    error = std::string("the schema could not be compiled: ") + e.what();
    return nullptr;
  }
}

Schema::Schema(std::unique_ptr<detail::Program> program) : program_(std::move(program)) {}
Schema::~Schema() = default;

}  // namespace sluice::schema
