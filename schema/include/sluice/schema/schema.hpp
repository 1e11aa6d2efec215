// sluice::schema — JSON Schema draft 7 validation of message bodies. An
// operator's schema is compiled once (every keyword checked, every pattern and
// $ref resolved up front); validating a producer's document against it is then
// a walk that stops at the first violation, never throws, and cannot be driven
// into unbounded recursion or backtracking by either the schema or the document.
//
// Supported keywords (draft 7 semantics): type, enum, const, multipleOf,
// maximum, exclusiveMaximum, minimum, exclusiveMinimum, maxLength, minLength,
// pattern, items, additionalItems, maxItems, minItems, uniqueItems, contains,
// maxProperties, minProperties, required, properties, patternProperties,
// additionalProperties, dependencies, propertyNames, if, then, else, allOf,
// anyOf, oneOf, not, $ref (within the document: JSON Pointers and $id names),
// definitions, and the boolean schemas true and false.
//
// Annotations, accepted and not checked: $schema (must name draft 7), $id,
// $comment, title, description, default, examples, readOnly, writeOnly,
// contentMediaType, contentEncoding, and format: as draft 7 allows, "format" is
// an annotation only, so {"format": "email"} accepts any string.
//
// Refused at compile time: any other keyword (e.g. "dependentRequired", a typo
// such as "requried"), keyword values of the wrong type, a $ref that would need
// fetching another document, $ref cycles that never consume any of the
// instance, and patterns outside the supported ECMA-262 subset (backreferences,
// lookaround, \p{...}) or too large to compile.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace sluice::schema {

namespace detail {
struct Program;
}

/// Why an instance is not valid: the first violation found.
struct Violation {
  /// JSON Pointer (RFC 6901) of the failing value in the instance ("" is the
  /// root), e.g. "/items/2/price". For "required", "dependencies",
  /// "propertyNames" and the counts of an object or array, the object or array.
  std::string pointer;
  /// The keyword that failed, e.g. "required", "type", "maximum". "false" for a
  /// false schema where no keyword says more; "$ref" when the schema's
  /// recursion is too deep for the instance (kMaxDepth), or its references
  /// reach the same subschemas by so many paths that validating would take
  /// exponential time (far more evaluations than schema nodes times values).
  std::string keyword;
  /// One short line for a client, e.g. `missing required property "id"`; any
  /// instance text in it is quoted and cut to about 100 bytes.
  std::string message;
};

/// A compiled schema: immutable, so validate() may run on many threads at once.
class Schema {
 public:
  /// Nested evaluations (a subschema applied to a value, a $ref followed) a
  /// validation may go through before it reports a "$ref" violation.
  static constexpr int kMaxDepth = 256;

  /// Compiles a parsed schema document. On failure returns nullptr and sets
  /// `error` to one line naming the problem and where it is (a JSON Pointer into
  /// the schema), e.g. `unsupported keyword "dependentRequired" at /properties/a`.
  static std::unique_ptr<const Schema> compile(const nlohmann::json& document, std::string& error);

  /// The first violation found, or nullopt if `instance` is valid.
  std::optional<Violation> validate(const nlohmann::json& instance) const;

  ~Schema();
  Schema(const Schema&) = delete;
  Schema& operator=(const Schema&) = delete;

 private:
  explicit Schema(std::unique_ptr<detail::Program> program);
  std::unique_ptr<detail::Program> program_;
};

}  // namespace sluice::schema
