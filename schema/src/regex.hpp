// The regular expressions of "pattern" and "patternProperties": an ECMA-262
// subset compiled to a Thompson NFA and run as a Pike VM over Unicode code
// points. A search never backtracks: it costs O(len(subject) x len(program))
// whatever the pattern, so an operator's "^(a+)+$" cannot stall the broker on a
// producer's string. Internal to sluice::schema.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::schema::detail {

// What decode_utf8() returns for a byte that does not start a well-formed sequence.
inline constexpr char32_t kNotUtf8 = 0xFFFFFFFF;

// Reads the UTF-8 sequence of `s` at `i` (< s.size()) and advances `i` past it.
// A byte that does not start a well-formed sequence (RFC 3629: no overlongs,
// surrogates or values above U+10FFFF) is consumed alone and gives kNotUtf8.
char32_t decode_utf8(std::string_view s, std::size_t& i);

class Regex {
 public:
  // Longest pattern accepted, in bytes, and the most instructions its program
  // may compile to (a counted repetition copies its operand: "(a{100}){100}").
  static constexpr std::size_t kMaxPatternBytes = 4096;
  static constexpr std::size_t kMaxProgram = 10000;

  // Compiles an ECMA-262 pattern (no flags). On failure returns nullopt and sets
  // `error` to the reason, e.g. "backreferences are not supported".
  static std::optional<Regex> compile(std::string_view pattern, std::string& error);

  // Whether the pattern matches somewhere in `subject` (UTF-8; a byte that is not
  // part of a well-formed sequence reads as U+FFFD). Unanchored unless the
  // pattern says ^ or $. Thread-safe: the scratch space is per thread.
  bool search(std::string_view subject) const;

  std::size_t program_size() const noexcept { return program_.size(); }

 private:
  enum class Op : std::uint8_t {
    kChar,         // consume code point `x`
    kAny,          // consume any code point but a line terminator (".")
    kClass,        // consume a code point in classes_[x]
    kSplit,        // continue at both `x` and `y`
    kJump,         // continue at `x`
    kBegin,        // assert: at the start of the subject ("^")
    kEnd,          // assert: at the end of the subject ("$")
    kWordEdge,     // assert: "\b"
    kNotWordEdge,  // assert: "\B"
    kMatch,
  };
  struct Inst {
    Op op;
    std::uint32_t x = 0;
    std::uint32_t y = 0;
  };
  // A set of code points: sorted, disjoint, non-adjacent inclusive ranges.
  using Ranges = std::vector<std::pair<char32_t, char32_t>>;

  friend class RegexCompiler;
  bool in_class(std::uint32_t index, char32_t c) const;

  std::vector<Inst> program_;
  std::vector<Ranges> classes_;
  bool anchored_ = false;  // starts with "^": only a thread started at 0 can match
};

}  // namespace sluice::schema::detail
