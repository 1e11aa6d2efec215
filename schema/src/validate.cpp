// The validator (Schema::validate): walks the compiled nodes (program.hpp) over
// an instance, depth first, and stops at the first violation. Below it: JSON
// equality and hashing with draft 7's numbers (1 == 1.0), multipleOf, and the
// text helpers the messages of both the compiler and the validator use.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <type_traits>

#include "program.hpp"
#include "sluice/schema/schema.hpp"

namespace sluice::schema {
namespace detail {

// ---- Text ----

namespace {

// Appends `s` to `out` on one line: control characters (and U+2028, U+2029)
// escaped as in JSON, '"' and '\\' too if `json_escape`, bytes that are not
// UTF-8 as U+FFFD. Stops before adding more than `limit` bytes; false if it did.
bool append_escaped(std::string& out, std::string_view s, std::size_t limit, bool json_escape) {
  const std::size_t stop = out.size() + limit;
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t start = i;
    const char32_t c = decode_utf8(s, i);
    char escape[16] = {};
    std::string_view piece = s.substr(start, i - start);
    if (c == kNotUtf8) {
      piece = "\xEF\xBF\xBD";
    } else if (json_escape && (c == '"' || c == '\\')) {
      escape[0] = '\\';
      escape[1] = static_cast<char>(c);
      piece = std::string_view(escape, 2);
    } else if (c < 0x20 || c == 0x7F || c == 0x2028 || c == 0x2029) {
      const char* named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : nullptr;
      if (named) {
        piece = named;
      } else {
        std::snprintf(escape, sizeof escape, "\\u%04X", static_cast<unsigned>(c));
        piece = std::string_view(escape, 6);
      }
    }
    if (out.size() + piece.size() > stop) return false;
    out += piece;
  }
  return true;
}

std::size_t remaining(const std::string& out, std::size_t stop) {
  return stop > out.size() ? stop - out.size() : 0;
}

// Appends `v` as JSON text until `out` reaches `stop`; false if cut short. Each
// level of nesting adds a byte first, so the recursion ends within `stop`.
bool dump(const json& v, std::string& out, std::size_t stop) {
  if (out.size() >= stop) return false;
  switch (v.type()) {
    case json::value_t::object: {
      out += '{';
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (it != v.begin()) out += ',';
        out += '"';
        if (!append_escaped(out, it.key(), remaining(out, stop), true)) return false;
        out += "\":";
        if (!dump(it.value(), out, stop)) return false;
      }
      out += '}';
      break;
    }
    case json::value_t::array: {
      out += '[';
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (it != v.begin()) out += ',';
        if (!dump(*it, out, stop)) return false;
      }
      out += ']';
      break;
    }
    case json::value_t::string:
      out += '"';
      if (!append_escaped(out, v.get_ref<const std::string&>(), remaining(out, stop), true))
        return false;
      out += '"';
      break;
    case json::value_t::binary:
      out += "<binary>";
      break;
    case json::value_t::discarded:
      out += "<discarded>";
      break;
    default:  // null, boolean, number: short, and dump() cannot throw for them
      out += v.dump();
      break;
  }
  return out.size() <= stop;
}

// The values of an enum, as a JSON array cut like shown().
std::string shown_values(const std::vector<json>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    if (!dump(values[i], out, kShownBytes)) return out + "...";
  }
  return out + "]";
}

}  // namespace

std::string quote(std::string_view s, std::size_t limit) {
  std::string out = "\"";
  const bool whole = append_escaped(out, s, limit, true);
  out += '"';
  if (!whole) out += "...";
  return out;
}

std::string shown_raw(std::string_view s, std::size_t limit) {
  std::string out;
  if (!append_escaped(out, s, limit, false)) out += "...";
  return out;
}

std::string shown(const json& v, std::size_t limit) {
  std::string out;
  if (!dump(v, out, limit)) out += "...";
  return out;
}

std::string pointer_token(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

namespace {

bool is_integral(const json& v) {
  if (v.is_number_integer()) return true;  // signed or unsigned
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::floor(d);
}

// A JSON number as a long double: exact for every int64, uint64 and double on
// x86-64 (64-bit mantissa) and wherever long double is a binary128.
long double numeric(const json& v) {
  if (v.is_number_unsigned()) return static_cast<long double>(v.get<std::uint64_t>());
  if (v.is_number_integer()) return static_cast<long double>(v.get<std::int64_t>());
  return static_cast<long double>(v.get<double>());
}

// |v| as a uint64 if `v` is an integral number below 2^64 in magnitude.
std::optional<std::uint64_t> magnitude(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer()) {
    const std::int64_t i = v.get<std::int64_t>();
    return i < 0 ? 0 - static_cast<std::uint64_t>(i) : static_cast<std::uint64_t>(i);
  }
  if (!is_integral(v)) return std::nullopt;
  const double d = std::fabs(v.get<double>());
  if (d >= 18446744073709551616.0) return std::nullopt;
  return static_cast<std::uint64_t>(d);
}

bool is_multiple(const json& v, const json& divisor) {
  // Integers: exact, whatever their size.
  const auto whole = magnitude(v);
  const auto step = magnitude(divisor);
  if (whole && step && *step != 0) return *whole % *step == 0;
  // Otherwise a quotient within a few units in the last place of an integer:
  // 0.0075 / 0.0001 is 74.99999999999999 in binary floating point. A quotient
  // that overflows (1e308 / 0.123) is not an integer anyone meant.
  const double q = v.get<double>() / divisor.get<double>();
  if (!std::isfinite(q)) return false;
  return std::fabs(q - std::round(q)) <= 4 * DBL_EPSILON * std::fabs(q);
}

const char* type_name_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return is_integral(v) ? "integer" : "number";
    default:
      return "non-JSON value";
  }
}

}  // namespace

const char* type_name(const json& v) {
  return type_name_of(v);
}

namespace {

// ---- Equality and hashing (enum, const, uniqueItems) ----

enum class Same { kYes, kNo, kTooDeep };

// JSON equality, numbers by value. Recurses only as deep as both values nest
// alike; past Schema::kMaxDepth levels it gives up with kTooDeep.
Same same(const json& a, const json& b, int depth) {
  if (a.is_number() && b.is_number()) return numeric(a) == numeric(b) ? Same::kYes : Same::kNo;
  if (a.type() != b.type()) return Same::kNo;
  if (a.is_array() || a.is_object()) {
    if (a.size() != b.size()) return Same::kNo;
    if (a.empty()) return Same::kYes;
    if (depth >= Schema::kMaxDepth) return Same::kTooDeep;
  }
  if (a.is_array()) {
    for (std::size_t i = 0; i < a.size(); ++i)
      if (const Same s = same(a[i], b[i], depth + 1); s != Same::kYes) return s;
    return Same::kYes;
  }
  if (a.is_object()) {  // both iterate in key order
    for (auto x = a.begin(), y = b.begin(); x != a.end(); ++x, ++y) {
      if (x.key() != y.key()) return Same::kNo;
      if (const Same s = same(x.value(), y.value(), depth + 1); s != Same::kYes) return s;
    }
    return Same::kYes;
  }
  return a == b ? Same::kYes : Same::kNo;  // null, boolean, string
}

std::uint64_t mix(std::uint64_t h, std::uint64_t v) {
  return h ^ (v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2));
}

// A hash that agrees with same(): equal numbers hash alike whatever their type.
std::uint64_t hash(const json& v, int depth) {
  switch (v.type()) {
    case json::value_t::null:
      return 1;
    case json::value_t::boolean:
      return v.get<bool>() ? 3 : 2;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: {
      const long double x = numeric(v);
      if (x == std::floor(x) && x >= -9223372036854775808.0L && x < 18446744073709551616.0L)
        return mix(4, x < 0 ? static_cast<std::uint64_t>(static_cast<std::int64_t>(x))
                            : static_cast<std::uint64_t>(x));
      const double d = v.get<double>();  // not integral: only a double can equal it
      std::uint64_t bits = 0;
      std::memcpy(&bits, &d, sizeof bits);
      return mix(5, bits);
    }
    case json::value_t::string:
      return mix(6, std::hash<std::string_view>{}(v.get_ref<const std::string&>()));
    case json::value_t::array:
    case json::value_t::object: {
      std::uint64_t h = mix(v.is_array() ? 7 : 8, v.size());
      if (depth >= Schema::kMaxDepth) return h;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (v.is_object()) h = mix(h, std::hash<std::string_view>{}(it.key()));
        h = mix(h, hash(*it, depth + 1));
      }
      return h;
    }
    default:
      return 9;
  }
}

std::string expected_types(std::uint8_t bits) {
  static constexpr std::pair<std::uint8_t, const char*> kNames[] = {
      {kObject, "object"},   {kArray, "array"},     {kString, "string"}, {kNumber, "number"},
      {kInteger, "integer"}, {kBoolean, "boolean"}, {kNull, "null"}};
  std::vector<const char*> names;
  for (const auto& [bit, name] : kNames)
    if ((bits & bit) != 0) names.push_back(name);
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    out += names[i];
  }
  return out;
}

std::size_t code_points(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// The two kinds of instance: a JSON value, or a property name (propertyNames
// checks it as a string without copying it into a json).
using Name = std::string_view;

std::uint8_t type_bits(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return kNull;
    case json::value_t::boolean:
      return kBoolean;
    case json::value_t::object:
      return kObject;
    case json::value_t::array:
      return kArray;
    case json::value_t::string:
      return kString;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return kNumber | kInteger;
    case json::value_t::number_float:
      return is_integral(v) ? kNumber | kInteger : kNumber;
    default:
      return 0;
  }
}
std::uint8_t type_bits(Name) {
  return kString;
}
const std::string& text_of(const json& v) {
  return v.get_ref<const std::string&>();
}
const char* type_name_of(Name) {
  return "string";
}
bool equals(const json& expected, const json& v) {
  return same(expected, v, 0) == Same::kYes;
}
bool equals(const json& expected, Name v) {
  return expected.is_string() && expected.get_ref<const std::string&>() == v;
}
std::string shown_value(const json& v) {
  return shown(v);
}
std::string shown_value(Name v) {
  return quote(v);
}

// Records a violation in `out`, if there is one to fill: the message is only
// built when it is wanted. Always false.
template <typename Message>
bool fail(Violation* out, const char* keyword, Message&& message) {
  if (out) {
    out->pointer.clear();
    out->keyword = keyword;
    out->message = message();
  }
  return false;
}

// How many values `v` holds (itself, its items, its members and their names),
// as deep as a validation can reach.
std::uint64_t count_values(const json& v, int depth) {
  std::uint64_t count = 1;
  if (!v.is_structured() || depth >= Schema::kMaxDepth) return count;
  for (auto it = v.begin(); it != v.end(); ++it)
    count += (v.is_object() ? 1 : 0) + count_values(*it, depth + 1);
  return count;
}

// One validation. `out` is null where only yes or no matters (anyOf, not,
// contains, ...): then no message is built and nothing is allocated.
//
// It evaluates each subschema once per value it applies to, unless $refs let
// several paths reach the same subschema for the same value: then the work
// can double with each level of the instance ({"properties": {"x": {"$ref":
// "#"}}, "patternProperties": {"^x$": {"$ref": "#"}}} on {"x": {"x": ...}}).
// So a validation stops, with a "$ref" violation, once it has made far more
// evaluations than schema nodes times instance values.
class Checker {
 public:
  // Evaluations always allowed; past them, the budget is sized to the instance.
  static constexpr std::uint64_t kBaseBudget = 100000;
  static constexpr std::uint64_t kEvaluationsPerNodeAndValue = 8;

  Checker(const Program& program, const json& instance)
      : nodes_(program.nodes), instance_(instance), budget_(kBaseBudget) {}

  template <typename V>
  bool valid(Index i, const V& v, int depth, Violation* out) {
    if (stop_ != Stop::kNone) return stopped(out);  // unwinding: no more work, no "yes"
    const Node& n = nodes_[i];
    switch (n.kind) {
      case Node::Kind::kTrue:
        return true;
      case Node::Kind::kFalse:
        return fail(out, "false", [] { return "no value is allowed here (the schema is false)"; });
      case Node::Kind::kRef:  // not reached: compile() replaced every use of a $ref node
        return valid(n.ref, v, depth + 1, out);
      case Node::Kind::kSchema:
        break;
    }
    if (depth > Schema::kMaxDepth) return stop(Stop::kTooDeep, out);
    if (++evaluations_ > budget_ && !within_budget()) return stop(Stop::kTooCostly, out);
    if (n.types != 0 && (n.types & type_bits(v)) == 0)
      return fail(out, "type", [&] {
        return "expected " + expected_types(n.types) + ", got " + type_name_of(v);
      });
    if (n.const_value && !equals(*n.const_value, v))
      return fail(out, "const", [&] { return "the value must be " + shown(*n.const_value); });
    if (n.enum_values && std::none_of(n.enum_values->begin(), n.enum_values->end(),
                                      [&v](const json& e) { return equals(e, v); }))
      return fail(out, "enum", [&] {
        return "the value " + shown_value(v) + " is not one of " + shown_values(*n.enum_values);
      });
    if constexpr (std::is_same_v<V, json>) {
      if (n.number && v.is_number() && !number(*n.number, v, out)) return false;
      if (n.string && v.is_string() && !string(*n.string, text_of(v), out)) return false;
      if (n.array && v.is_array() && !array(*n.array, v, depth, out)) return false;
      if (n.object && v.is_object() && !object(*n.object, v, depth, out)) return false;
    } else {
      if (n.string && !string(*n.string, v, out)) return false;
    }
    return combinators(n, v, depth, out);
  }

 private:
  // Why a validation gave up: then every answer is "no", and that "no" must
  // not count as one (a "not" would turn it into a "yes").
  enum class Stop { kNone, kTooDeep, kTooCostly };

  bool stop(Stop why, Violation* out) {
    stop_ = why;
    return stopped(out);
  }
  bool stopped(Violation* out) const {
    return fail(out, "$ref", [this] {
      return stop_ == Stop::kTooDeep
                 ? "the schema recursion is too deep for this value (more than " +
                       std::to_string(Schema::kMaxDepth) + " levels)"
                 : "the schema's references make this value too costly to validate (more than " +
                       std::to_string(budget_) + " evaluations)";
    });
  }

  // Once past the base budget: the budget for this instance, counted once.
  bool within_budget() {
    if (!budget_sized_) {
      budget_sized_ = true;
      const std::uint64_t values = count_values(instance_, 0);
      const std::uint64_t per_value = kEvaluationsPerNodeAndValue * nodes_.size();
      const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() / per_value;
      budget_ = std::max(budget_, values >= limit ? kNoLimit : values * per_value);
    }
    return evaluations_ <= budget_;
  }

  // A yes-or-no evaluation. A stop inside it is no answer: after one, the
  // caller checks stop_ and reports it.
  template <typename V>
  bool probe(Index i, const V& v, int depth) {
    return valid(i, v, depth + 1, nullptr);
  }

  template <typename V>
  bool combinators(const Node& n, const V& v, int depth, Violation* out) {
    for (Index child : n.all_of)
      if (!valid(child, v, depth + 1, out)) return false;
    if (!n.any_of.empty()) {
      const bool any = std::any_of(n.any_of.begin(), n.any_of.end(),
                                   [&](Index child) { return probe(child, v, depth); });
      if (stop_ != Stop::kNone) return stopped(out);
      if (!any)
        return fail(out, "anyOf", [&] {
          return "the value matches none of the " + std::to_string(n.any_of.size()) +
                 " schemas of anyOf";
        });
    }
    if (!n.one_of.empty()) {
      std::size_t first = 0;
      std::size_t matches = 0;
      for (std::size_t k = 0; k < n.one_of.size() && matches < 2; ++k) {
        const bool match = probe(n.one_of[k], v, depth);
        if (stop_ != Stop::kNone) return stopped(out);
        if (!match) continue;
        if (matches++ == 0)
          first = k;
        else
          return fail(out, "oneOf", [&] {
            return "the value matches schemas " + std::to_string(first) + " and " +
                   std::to_string(k) + " of oneOf, and must match exactly one";
          });
      }
      if (matches == 0)
        return fail(out, "oneOf", [&] {
          return "the value matches none of the " + std::to_string(n.one_of.size()) +
                 " schemas of oneOf";
        });
    }
    if (n.not_) {
      const bool matches = probe(*n.not_, v, depth);
      if (stop_ != Stop::kNone) return stopped(out);
      if (matches)
        return fail(out, "not", [] { return "the value must not match the schema of not"; });
    }
    if (n.if_ && (n.then_ || n.else_)) {  // alone, "if" decides nothing
      const bool condition = probe(*n.if_, v, depth);
      if (stop_ != Stop::kNone) return stopped(out);
      const std::optional<Index>& branch = condition ? n.then_ : n.else_;
      if (branch && !valid(*branch, v, depth + 1, out)) return false;
    }
    return true;
  }

  bool number(const NumberChecks& c, const json& v, Violation* out) {
    const long double x = numeric(v);
    if (c.minimum && x < numeric(*c.minimum))
      return fail(out, "minimum",
                  [&] { return shown(v) + " is less than the minimum " + shown(*c.minimum); });
    if (c.exclusive_minimum && x <= numeric(*c.exclusive_minimum))
      return fail(out, "exclusiveMinimum", [&] {
        return shown(v) + " is not greater than the exclusive minimum " +
               shown(*c.exclusive_minimum);
      });
    if (c.maximum && x > numeric(*c.maximum))
      return fail(out, "maximum",
                  [&] { return shown(v) + " is greater than the maximum " + shown(*c.maximum); });
    if (c.exclusive_maximum && x >= numeric(*c.exclusive_maximum))
      return fail(out, "exclusiveMaximum", [&] {
        return shown(v) + " is not less than the exclusive maximum " + shown(*c.exclusive_maximum);
      });
    if (c.multiple_of && !is_multiple(v, *c.multiple_of))
      return fail(out, "multipleOf",
                  [&] { return shown(v) + " is not a multiple of " + shown(*c.multiple_of); });
    return true;
  }

  bool string(const StringChecks& c, std::string_view s, Violation* out) {
    if (c.min_length > 0 || c.max_length != kNoLimit) {
      const std::size_t length = code_points(s);
      if (length < c.min_length)
        return fail(out, "minLength", [&] {
          return "the string is " + plural(length, "character", "characters") +
                 " long, shorter than minLength " + std::to_string(c.min_length);
        });
      if (length > c.max_length)
        return fail(out, "maxLength", [&] {
          return "the string is " + plural(length, "character", "characters") +
                 " long, longer than maxLength " + std::to_string(c.max_length);
        });
    }
    if (c.pattern && !c.pattern->search(s))
      return fail(out, "pattern", [&] {
        return "the string " + quote(s) + " does not match the pattern \"" +
               shown_raw(c.pattern_source) + "\"";
      });
    return true;
  }

  bool array(const ArrayChecks& c, const json& v, int depth, Violation* out) {
    const json::array_t& items = *v.get_ptr<const json::array_t*>();
    const std::size_t size = items.size();
    if (size < c.min_items)
      return fail(out, "minItems", [&] {
        return "the array has " + plural(size, "item", "items") + ", fewer than minItems " +
               std::to_string(c.min_items);
      });
    if (size > c.max_items)
      return fail(out, "maxItems", [&] {
        return "the array has " + plural(size, "item", "items") + ", more than maxItems " +
               std::to_string(c.max_items);
      });
    if (c.unique_items && !unique(items, out)) return false;
    if (c.items) {
      for (std::size_t i = 0; i < size; ++i)
        if (!item(*c.items, items[i], i, "items", depth, out)) return false;
    } else if (c.tuple) {
      for (std::size_t i = 0; i < size; ++i) {
        if (i < c.tuple->size()) {
          if (!item((*c.tuple)[i], items[i], i, "items", depth, out)) return false;
        } else if (!c.additional_items) {
          break;
        } else if (!item(*c.additional_items, items[i], i, "additionalItems", depth, out)) {
          return false;
        }
      }
    }
    if (c.contains) {
      const bool found = std::any_of(items.begin(), items.end(),
                                     [&](const json& e) { return probe(*c.contains, e, depth); });
      if (stop_ != Stop::kNone) return stopped(out);
      if (!found)
        return fail(out, "contains", [&] {
          return size == 0 ? "the array is empty, and contains needs an item that matches"
                           : "no item of the array matches the schema of contains";
        });
    }
    return true;
  }

  // uniqueItems: pairwise for short arrays; longer ones are hashed, so that a
  // producer's long array costs O(n log n), not O(n^2). (The one allocation a
  // valid instance can cost.)
  bool unique(const json::array_t& items, Violation* out) {
    const auto duplicate = [out](std::size_t i, std::size_t j, Same s) {
      if (i > j) std::swap(i, j);
      return fail(out, "uniqueItems", [&] {
        return "array items " + std::to_string(i) + " and " + std::to_string(j) +
               (s == Same::kYes ? " are equal" : " are nested too deeply to compare");
      });
    };
    const std::size_t n = items.size();
    if (n <= 16) {
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i + 1; j < n; ++j)
          if (const Same s = same(items[i], items[j], 0); s != Same::kNo) return duplicate(i, j, s);
      return true;
    }
    std::vector<std::pair<std::uint64_t, std::size_t>> hashes;
    hashes.reserve(n);
    for (std::size_t i = 0; i < n; ++i) hashes.emplace_back(hash(items[i], 0), i);
    std::sort(hashes.begin(), hashes.end());
    for (std::size_t run = 0; run < n;) {
      std::size_t end = run + 1;
      while (end < n && hashes[end].first == hashes[run].first) ++end;
      for (std::size_t a = run; a < end; ++a)
        for (std::size_t b = a + 1; b < end; ++b)
          if (const Same s = same(items[hashes[a].second], items[hashes[b].second], 0);
              s != Same::kNo)
            return duplicate(hashes[a].second, hashes[b].second, s);
      run = end;
    }
    return true;
  }

  bool item(Index child, const json& v, std::size_t index, const char* keyword, int depth,
            Violation* out) {
    if (valid(child, v, depth + 1, out)) return true;
    if (out) {
      if (nodes_[child].kind == Node::Kind::kFalse && stop_ == Stop::kNone) {
        out->keyword = keyword;
        out->message = "array item " + std::to_string(index) + " is not allowed";
      }
      out->pointer.insert(0, "/" + std::to_string(index));
    }
    return false;
  }

  bool member(Index child, const json& v, const std::string& name, const char* keyword, int depth,
              Violation* out) {
    if (valid(child, v, depth + 1, out)) return true;
    if (out) {
      if (nodes_[child].kind == Node::Kind::kFalse && stop_ == Stop::kNone) {
        out->keyword = keyword;
        out->message = "property " + quote(name) + " is not allowed";
      }
      out->pointer.insert(0, "/" + pointer_token(name));
    }
    return false;
  }

  bool object(const ObjectChecks& c, const json& v, int depth, Violation* out) {
    const json::object_t& members = *v.get_ptr<const json::object_t*>();
    for (const std::string& name : c.required)
      if (members.find(name) == members.end())
        return fail(out, "required", [&] { return "missing required property " + quote(name); });
    if (members.size() < c.min_properties)
      return fail(out, "minProperties", [&] {
        return "the object has " + plural(members.size(), "property", "properties") +
               ", fewer than minProperties " + std::to_string(c.min_properties);
      });
    if (members.size() > c.max_properties)
      return fail(out, "maxProperties", [&] {
        return "the object has " + plural(members.size(), "property", "properties") +
               ", more than maxProperties " + std::to_string(c.max_properties);
      });
    for (const Dependency& dependency : c.dependencies) {
      if (members.find(dependency.property) == members.end()) continue;
      if (dependency.schema && !valid(*dependency.schema, v, depth + 1, out)) {
        if (out && nodes_[*dependency.schema].kind == Node::Kind::kFalse && stop_ == Stop::kNone) {
          out->keyword = "dependencies";
          out->message = "property " + quote(dependency.property) +
                         " is not allowed (its schema in dependencies is false)";
        }
        return false;
      }
      for (const std::string& name : dependency.required)
        if (members.find(name) == members.end())
          return fail(out, "dependencies", [&] {
            return "property " + quote(dependency.property) + " requires property " + quote(name);
          });
    }
    if (c.property_names) {
      for (const auto& member : members) {
        if (valid(*c.property_names, Name(member.first), depth + 1, out)) continue;
        if (out && stop_ == Stop::kNone) {
          out->keyword = "propertyNames";
          out->message = "invalid property name " + quote(member.first) + ": " + out->message;
        }
        return false;
      }
    }
    if (c.properties.empty() && c.pattern_properties.empty() && !c.additional_properties)
      return true;
    for (const auto& [name, value] : members) {
      bool matched = false;
      const auto declared = std::lower_bound(c.properties.begin(), c.properties.end(), name,
                                             [](const std::pair<std::string, Index>& p,
                                                const std::string& key) { return p.first < key; });
      if (declared != c.properties.end() && declared->first == name) {
        matched = true;
        if (!member(declared->second, value, name, "properties", depth, out)) return false;
      }
      for (const PatternProperty& pattern : c.pattern_properties) {
        if (!pattern.regex.search(name)) continue;
        matched = true;
        if (!member(pattern.schema, value, name, "patternProperties", depth, out)) return false;
      }
      if (!matched && c.additional_properties &&
          !member(*c.additional_properties, value, name, "additionalProperties", depth, out))
        return false;
    }
    return true;
  }

  const std::vector<Node>& nodes_;
  const json& instance_;
  std::uint64_t evaluations_ = 0;
  std::uint64_t budget_;
  bool budget_sized_ = false;
  Stop stop_ = Stop::kNone;
};

}  // namespace
}  // namespace detail

std::optional<Violation> Schema::validate(const nlohmann::json& instance) const {
  try {
    detail::Checker checker(*program_, instance);
    Violation violation;
    if (checker.valid(program_->root, instance, 1, &violation)) return std::nullopt;
    return violation;
  } catch (const std::exception& e) {  // std::bad_alloc; nothing else is expected
    return Violation{"", "", std::string("the value could not be validated: ") + e.what()};
  }
}

}  // namespace sluice::schema
