// The pattern engine (regex.hpp): a recursive-descent parser of the ECMA-262
// subset into a small syntax tree, a compiler of the tree into a Thompson NFA
// program, and a Pike VM that runs every thread of the program in lock step,
// one code point of the subject at a time.
#include "regex.hpp"

#include <algorithm>
#include <limits>

namespace sluice::schema::detail {

namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr char32_t kReplacement = 0xFFFD;

}  // namespace

char32_t decode_utf8(std::string_view s, std::size_t& i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  // The sequence's length, and the least code point it may carry (anything
  // less is an overlong form).
  std::size_t length = 0;
  char32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    length = 2;
    min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    length = 3;
    min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    length = 4;
    min = 0x10000;
  } else {
    ++i;
    return kNotUtf8;
  }
  char32_t c = b0 & (0x7F >> length);  // the lead byte's payload bits
  if (s.size() - i < length) {
    ++i;
    return kNotUtf8;
  }
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) {
      ++i;
      return kNotUtf8;
    }
    c = (c << 6) | (byte(i + k) & 0x3F);
  }
  if (c < min || c > kMaxCodePoint || (c >= 0xD800 && c <= 0xDFFF)) {
    ++i;
    return kNotUtf8;
  }
  i += length;
  return c;
}

namespace {

bool is_word(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool is_line_terminator(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x2028 || c == 0x2029;
}

bool is_ascii_alnum(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

using Ranges = std::vector<std::pair<char32_t, char32_t>>;

// Sorts and merges overlapping or adjacent ranges.
void normalize(Ranges& r) {
  std::sort(r.begin(), r.end());
  Ranges merged;
  for (const auto& range : r) {
    if (!merged.empty() && range.first <= merged.back().second + 1)
      merged.back().second = std::max(merged.back().second, range.second);
    else
      merged.push_back(range);
  }
  r = std::move(merged);
}

// The complement of normalized ranges within [0, U+10FFFF].
Ranges complement(const Ranges& r) {
  Ranges out;
  char32_t next = 0;
  for (const auto& [lo, hi] : r) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

// \d \w \s; the upper-case escapes are their complements.
Ranges class_escape_set(char letter) {
  Ranges r;
  switch (letter) {
    case 'd':
    case 'D':
      r = {{'0', '9'}};
      break;
    case 'w':
    case 'W':
      r = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
      break;
    default:  // s, S: ECMA-262 WhiteSpace and LineTerminator
      r = {{0x09, 0x0D},     {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680},
           {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
           {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
      break;
  }
  if (letter >= 'A' && letter <= 'Z') r = complement(r);
  return r;
}

// The syntax tree of a pattern.
struct Node {
  enum class Kind {
    kEmpty,
    kChar,
    kAny,
    kClass,
    kBegin,
    kEnd,
    kWordEdge,
    kNotWordEdge,
    kConcat,
    kAlternate,
    kRepeat
  };
  static constexpr std::uint32_t kUnbounded = std::numeric_limits<std::uint32_t>::max();
  Kind kind = Kind::kEmpty;
  char32_t c = 0;           // kChar
  std::uint32_t index = 0;  // kClass: into the classes
  std::uint32_t min = 0;    // kRepeat
  std::uint32_t max = 0;    // kRepeat, or kUnbounded
  std::vector<Node> kids;   // kConcat, kAlternate; kRepeat's one operand
};

// One element of a character class, or the result of an escape: a single code
// point, or a set (\d, \w, \s and their complements).
struct ClassAtom {
  bool is_set = false;
  char32_t c = 0;
  Ranges set;
};

class Parser {
 public:
  // Groups nested deeper than this are refused: the parser recurses per group.
  static constexpr int kMaxNesting = 100;
  // Counts of {n,m} above this are clamped: they could not compile anyway.
  static constexpr std::uint32_t kMaxCount = 1000000;

  Parser(std::string_view pattern, std::vector<Ranges>& classes) : p_(pattern), classes_(classes) {}

  bool parse(Node& root, std::string& error) {
    bool ok = alternation(root, 0);
    if (ok && i_ < p_.size()) ok = fail("unmatched )");  // alternation stops only at ')'
    if (!ok) error = error_;
    return ok;
  }

 private:
  bool fail(std::string reason) {
    error_ = std::move(reason);
    return false;
  }
  bool at(char c) const { return i_ < p_.size() && p_[i_] == c; }

  bool alternation(Node& out, int depth) {
    Node first;
    if (!sequence(first, depth)) return false;
    if (!at('|')) {
      out = std::move(first);
      return true;
    }
    out.kind = Node::Kind::kAlternate;
    out.kids.push_back(std::move(first));
    while (at('|')) {
      ++i_;
      Node next;
      if (!sequence(next, depth)) return false;
      out.kids.push_back(std::move(next));
    }
    return true;
  }

  bool sequence(Node& out, int depth) {
    out.kind = Node::Kind::kConcat;
    while (i_ < p_.size() && p_[i_] != '|' && p_[i_] != ')') {
      Node term;
      if (!this->term(term, depth)) return false;
      out.kids.push_back(std::move(term));
    }
    return true;
  }

  // An assertion, or an atom with any quantifier.
  bool term(Node& out, int depth) {
    const char c = p_[i_];
    if (c == '^' || c == '$') {
      ++i_;
      out.kind = c == '^' ? Node::Kind::kBegin : Node::Kind::kEnd;
      return no_quantifier();
    }
    if (c == '\\' && i_ + 1 < p_.size() && (p_[i_ + 1] == 'b' || p_[i_ + 1] == 'B')) {
      out.kind = p_[i_ + 1] == 'b' ? Node::Kind::kWordEdge : Node::Kind::kNotWordEdge;
      i_ += 2;
      return no_quantifier();
    }
    if (!atom(out, depth)) return false;
    std::uint32_t min = 0;
    std::uint32_t max = 0;
    if (!quantifier(min, max)) return error_.empty();  // "{3,1}" is an error
    if (at('?')) ++i_;                                 // lazy: the same yes/no answer as greedy
    if (!no_quantifier()) return false;
    Node repeat;
    repeat.kind = Node::Kind::kRepeat;
    repeat.min = min;
    repeat.max = max;
    repeat.kids.push_back(std::move(out));
    out = std::move(repeat);
    return true;
  }

  // Reads a quantifier at the cursor, if there is one.
  bool quantifier(std::uint32_t& min, std::uint32_t& max) {
    if (i_ >= p_.size()) return false;
    const char c = p_[i_];
    if (c == '{') return counted(i_, min, max);
    if (c != '*' && c != '+' && c != '?') return false;
    ++i_;
    min = c == '+' ? 1 : 0;
    max = c == '?' ? 1 : Node::kUnbounded;
    return true;
  }

  // {n}, {n,} or {n,m} at `pos`; anything else is not a quantifier, and the
  // '{' is then a literal (as ECMA-262 Annex B reads it).
  bool counted(std::size_t& pos, std::uint32_t& min, std::uint32_t& max) {
    std::size_t k = pos + 1;
    const auto number = [&](std::uint32_t& value) {
      const std::size_t start = k;
      std::uint64_t v = 0;
      while (k < p_.size() && p_[k] >= '0' && p_[k] <= '9') {
        v = std::min<std::uint64_t>(v * 10 + static_cast<unsigned>(p_[k] - '0'), kMaxCount);
        ++k;
      }
      value = static_cast<std::uint32_t>(v);
      return k > start;
    };
    if (!number(min)) return false;
    max = min;
    if (k < p_.size() && p_[k] == ',') {
      ++k;
      if (!number(max)) max = Node::kUnbounded;
    }
    if (k >= p_.size() || p_[k] != '}') return false;
    if (max < min) return fail("numbers out of order in {} quantifier");
    pos = k + 1;
    return true;
  }

  // After an assertion or a quantifier: a quantifier is a syntax error.
  bool no_quantifier() {
    if (i_ >= p_.size()) return true;
    const char c = p_[i_];
    std::size_t pos = i_;
    std::uint32_t min = 0;
    std::uint32_t max = 0;
    if (c == '*' || c == '+' || c == '?' || (c == '{' && counted(pos, min, max)))
      return fail(std::string("nothing to repeat before \"") + c + "\"");
    return error_.empty();  // counted() may have failed on "{3,1}"
  }

  bool atom(Node& out, int depth) {
    const char c = p_[i_];
    switch (c) {
      case '(':
        return group(out, depth);
      case '[':
        return char_class(out);
      case '.':
        ++i_;
        out.kind = Node::Kind::kAny;
        return true;
      case '*':
      case '+':
      case '?':
        return fail(std::string("nothing to repeat before \"") + c + "\"");
      case '{': {
        std::size_t pos = i_;
        std::uint32_t min = 0;
        std::uint32_t max = 0;
        if (counted(pos, min, max)) return fail("nothing to repeat before \"{\"");
        if (!error_.empty()) return false;
        ++i_;
        out.kind = Node::Kind::kChar;
        out.c = '{';
        return true;
      }
      case '\\': {
        ClassAtom a;
        if (!escape(a, false)) return false;
        set_atom(out, std::move(a));
        return true;
      }
      default: {
        const char32_t cp = decode_utf8(p_, i_);
        if (cp == kNotUtf8) return fail("the pattern is not valid UTF-8");
        out.kind = Node::Kind::kChar;
        out.c = cp;
        return true;
      }
    }
  }

  bool group(Node& out, int depth) {
    ++i_;  // '('
    if (at('?')) {
      const char kind = i_ + 1 < p_.size() ? p_[i_ + 1] : '\0';
      const char after = i_ + 2 < p_.size() ? p_[i_ + 2] : '\0';
      if (kind == ':') {
        i_ += 2;
      } else if (kind == '=' || kind == '!') {
        return fail("lookahead assertions are not supported");
      } else if (kind == '<' && (after == '=' || after == '!')) {
        return fail("lookbehind assertions are not supported");
      } else if (kind == '<') {
        // A named group matches as a plain group; its name serves only \k<name>,
        // which is refused as a backreference.
        std::size_t end = i_ + 2;
        while (end < p_.size() &&
               (is_ascii_alnum(static_cast<unsigned char>(p_[end])) || p_[end] == '_' ||
                p_[end] == '$' || static_cast<unsigned char>(p_[end]) >= 0x80))
          ++end;
        if (end == i_ + 2 || end >= p_.size() || p_[end] != '>') return fail("invalid group name");
        i_ = end + 1;
      } else {
        return fail("invalid group \"(?\"");
      }
    }
    if (depth + 1 > kMaxNesting) return fail("groups nested too deeply");
    if (!alternation(out, depth + 1)) return false;
    if (!at(')')) return fail("missing )");
    ++i_;
    return true;
  }

  void set_atom(Node& out, ClassAtom&& a) {
    if (a.is_set) {
      out.kind = Node::Kind::kClass;
      out.index = static_cast<std::uint32_t>(classes_.size());
      classes_.push_back(std::move(a.set));
    } else {
      out.kind = Node::Kind::kChar;
      out.c = a.c;
    }
  }

  // An escape at the cursor ('\\'), outside or inside a character class.
  bool escape(ClassAtom& out, bool in_class) {
    ++i_;
    if (i_ >= p_.size()) return fail("the pattern ends with a lone backslash");
    const char c = p_[i_++];
    switch (c) {
      case 'd':
      case 'D':
      case 'w':
      case 'W':
      case 's':
      case 'S':
        out.is_set = true;
        out.set = class_escape_set(c);
        return true;
      case 't':
        out.c = '\t';
        return true;
      case 'n':
        out.c = '\n';
        return true;
      case 'r':
        out.c = '\r';
        return true;
      case 'f':
        out.c = '\f';
        return true;
      case 'v':
        out.c = '\v';
        return true;
      case 'b':  // only reached in a class, where it is a backspace
        out.c = '\b';
        return true;
      case '0':
        if (i_ < p_.size() && p_[i_] >= '0' && p_[i_] <= '9')
          return fail("octal escapes are not supported");
        out.c = 0;
        return true;
      case 'c':
        if (i_ < p_.size() &&
            ((p_[i_] >= 'a' && p_[i_] <= 'z') || (p_[i_] >= 'A' && p_[i_] <= 'Z'))) {
          out.c = static_cast<char32_t>(p_[i_++] % 32);
          return true;
        }
        return fail("invalid \\c escape");
      case 'x':
        return hex(2, out.c) || fail("invalid \\x escape (\\xHH)");
      case 'u':
        if (at('{')) return fail("\\u{...} escapes are not supported (use \\uXXXX)");
        if (!hex(4, out.c)) return fail("invalid \\u escape (\\uXXXX)");
        // A UTF-16 surrogate pair written as two escapes is one code point.
        if (out.c >= 0xD800 && out.c <= 0xDBFF && i_ + 1 < p_.size() && p_[i_] == '\\' &&
            p_[i_ + 1] == 'u') {
          const std::size_t saved = i_;
          i_ += 2;
          char32_t low = 0;
          if (hex(4, low) && low >= 0xDC00 && low <= 0xDFFF)
            out.c = 0x10000 + ((out.c - 0xD800) << 10) + (low - 0xDC00);
          else
            i_ = saved;
        }
        return true;
      case 'k':
        return fail("backreferences are not supported");
      case 'p':
      case 'P':
        return fail("Unicode property escapes (\\p{...}) are not supported");
      default:
        break;
    }
    if (c >= '1' && c <= '9')
      return fail(in_class ? "octal escapes are not supported"
                           : "backreferences are not supported");
    if (is_ascii_alnum(static_cast<unsigned char>(c)))
      return fail(std::string("unknown escape \\") + c);
    // An escaped syntax character, or any other non-alphanumeric: itself.
    --i_;
    out.c = decode_utf8(p_, i_);
    if (out.c == kNotUtf8) return fail("the pattern is not valid UTF-8");
    return true;
  }

  bool hex(int digits, char32_t& out) {
    if (p_.size() - i_ < static_cast<std::size_t>(digits)) return false;
    char32_t value = 0;
    for (int k = 0; k < digits; ++k) {
      const int d = hex_value(p_[i_ + static_cast<std::size_t>(k)]);
      if (d < 0) return false;
      value = value * 16 + static_cast<char32_t>(d);
    }
    i_ += static_cast<std::size_t>(digits);
    out = value;
    return true;
  }

  bool class_atom(ClassAtom& out) {
    if (at('\\')) {
      if (i_ + 1 < p_.size() && p_[i_ + 1] == 'B')
        return fail("\\B is not allowed in a character class");
      return escape(out, true);
    }
    out.c = decode_utf8(p_, i_);
    if (out.c == kNotUtf8) return fail("the pattern is not valid UTF-8");
    return true;
  }

  bool char_class(Node& out) {
    ++i_;  // '['
    const bool negated = at('^');
    if (negated) ++i_;
    Ranges ranges;
    const auto add = [&ranges](const ClassAtom& a) {
      if (a.is_set)
        ranges.insert(ranges.end(), a.set.begin(), a.set.end());
      else
        ranges.emplace_back(a.c, a.c);
    };
    for (;;) {
      if (i_ >= p_.size()) return fail("unterminated character class");
      if (at(']')) {
        ++i_;
        break;
      }
      ClassAtom first;
      if (!class_atom(first)) return false;
      if (!(at('-') && i_ + 1 < p_.size() && p_[i_ + 1] != ']')) {
        add(first);
        continue;
      }
      ++i_;  // '-'
      ClassAtom last;
      if (!class_atom(last)) return false;
      if (first.is_set || last.is_set) {  // "[\w-z]": the '-' is a literal (Annex B)
        add(first);
        ranges.emplace_back('-', '-');
        add(last);
      } else if (first.c > last.c) {
        return fail("character class range out of order");
      } else {
        ranges.emplace_back(first.c, last.c);
      }
    }
    normalize(ranges);
    ClassAtom a;
    a.is_set = true;
    a.set = negated ? complement(ranges) : std::move(ranges);
    set_atom(out, std::move(a));
    return true;
  }

  std::string_view p_;
  std::size_t i_ = 0;
  std::vector<Ranges>& classes_;
  std::string error_;
};

}  // namespace

// Turns the syntax tree into the program. Stops (and says so) as soon as the
// program would pass Regex::kMaxProgram, so a huge counted repetition costs no
// more than the cap to refuse.
class RegexCompiler {
 public:
  explicit RegexCompiler(Regex& re) : re_(re) {}

  bool compile(const Node& root) {
    generate(root);
    emit(Regex::Op::kMatch);
    return !overflow_;
  }

 private:
  using Op = Regex::Op;

  std::uint32_t here() const { return static_cast<std::uint32_t>(re_.program_.size()); }

  std::uint32_t emit(Op op, std::uint32_t x = 0, std::uint32_t y = 0) {
    if (re_.program_.size() >= Regex::kMaxProgram) {
      overflow_ = true;
      return 0;
    }
    re_.program_.push_back({op, x, y});
    return here() - 1;
  }

  // Points the `y` (or, for a jump, the `x`) of instruction `at` to `target`.
  void patch(std::uint32_t at, std::uint32_t target) {
    if (overflow_) return;
    Regex::Inst& inst = re_.program_[at];
    (inst.op == Op::kJump ? inst.x : inst.y) = target;
  }

  void generate(const Node& n) {
    if (overflow_) return;
    switch (n.kind) {
      case Node::Kind::kEmpty:
        return;
      case Node::Kind::kChar:
        emit(Op::kChar, n.c);
        return;
      case Node::Kind::kAny:
        emit(Op::kAny);
        return;
      case Node::Kind::kClass:
        emit(Op::kClass, n.index);
        return;
      case Node::Kind::kBegin:
        emit(Op::kBegin);
        return;
      case Node::Kind::kEnd:
        emit(Op::kEnd);
        return;
      case Node::Kind::kWordEdge:
        emit(Op::kWordEdge);
        return;
      case Node::Kind::kNotWordEdge:
        emit(Op::kNotWordEdge);
        return;
      case Node::Kind::kConcat:
        for (const Node& kid : n.kids) generate(kid);
        return;
      case Node::Kind::kAlternate: {
        // split L1, next; L1: kid0; jump end; next: split L2, next2; ...; last kid; end:
        std::vector<std::uint32_t> jumps;
        for (std::size_t k = 0; k + 1 < n.kids.size() && !overflow_; ++k) {
          const std::uint32_t split = emit(Op::kSplit, here() + 1);
          generate(n.kids[k]);
          jumps.push_back(emit(Op::kJump));
          patch(split, here());
        }
        generate(n.kids.back());
        for (std::uint32_t jump : jumps) patch(jump, here());
        return;
      }
      case Node::Kind::kRepeat:
        repeat(n);
        return;
    }
  }

  void repeat(const Node& n) {
    const Node& kid = n.kids.front();
    for (std::uint32_t k = 0; k < n.min && !overflow_; ++k) generate(kid);
    if (n.max == Node::kUnbounded) {
      // loop: split body, out; body: kid; jump loop; out:
      const std::uint32_t loop = emit(Op::kSplit, here() + 1);
      generate(kid);
      emit(Op::kJump, loop);
      patch(loop, here());
      return;
    }
    // Each optional copy may be skipped to the end: split c1, end; c1: kid; split ...
    std::vector<std::uint32_t> splits;
    for (std::uint32_t k = n.min; k < n.max && !overflow_; ++k) {
      splits.push_back(emit(Op::kSplit, here() + 1));
      generate(kid);
    }
    for (std::uint32_t split : splits) patch(split, here());
  }

  Regex& re_;
  bool overflow_ = false;
};

std::optional<Regex> Regex::compile(std::string_view pattern, std::string& error) {
  if (pattern.size() > kMaxPatternBytes) {
    error = "patterns longer than " + std::to_string(kMaxPatternBytes) + " bytes are not supported";
    return std::nullopt;
  }
  Regex re;
  Node root;
  if (!Parser(pattern, re.classes_).parse(root, error)) return std::nullopt;
  if (!RegexCompiler(re).compile(root)) {
    error = "the pattern compiles to more than " + std::to_string(kMaxProgram) +
            " instructions (a large counted repetition?)";
    return std::nullopt;
  }
  re.anchored_ = re.program_.front().op == Op::kBegin;
  return re;
}

bool Regex::in_class(std::uint32_t index, char32_t c) const {
  const Ranges& r = classes_[index];
  // The first range whose end is not below c.
  const auto it = std::lower_bound(r.begin(), r.end(), c,
                                   [](const auto& range, char32_t v) { return range.second < v; });
  return it != r.end() && it->first <= c;
}

namespace {

// A search's working memory, kept per thread and grown to the largest program
// seen, so a search allocates nothing once warm.
struct Scratch {
  std::vector<std::uint32_t> mark;  // the generation in which each pc was last added
  std::vector<std::uint32_t> current, next, stack;
  std::uint32_t generation = 0;

  void reserve(std::size_t n) {
    if (mark.size() < n) {
      mark.assign(n, 0);
      generation = 0;
      current.resize(n);
      next.resize(n);
      stack.resize(2 * n + 1);  // each pc pushes at most two successors, once
    }
  }
  // Starts a new step: every pc is unmarked, in O(1).
  void next_generation() {
    if (++generation == 0) {  // wrapped: clear for real
      std::fill(mark.begin(), mark.end(), 0);
      generation = 1;
    }
  }
};

// Where in the subject a step is: what the assertions look at.
struct Position {
  bool at_begin;
  bool at_end;
  bool word_before;
  bool word_after;
};

}  // namespace

bool Regex::search(std::string_view subject) const {
  static thread_local Scratch scratch;
  Scratch& s = scratch;
  s.reserve(program_.size());

  // Adds `start` and every pc reachable from it without consuming input to
  // `list`, keeping only those that consume. True if the program can match here.
  const auto add = [this, &s](std::uint32_t* list, std::size_t& count, std::uint32_t start,
                              const Position& at) {
    std::size_t top = 0;
    s.stack[top++] = start;
    while (top > 0) {
      const std::uint32_t pc = s.stack[--top];
      if (s.mark[pc] == s.generation) continue;
      s.mark[pc] = s.generation;
      const Inst& inst = program_[pc];
      switch (inst.op) {
        case Op::kMatch:
          return true;
        case Op::kJump:
          s.stack[top++] = inst.x;
          break;
        case Op::kSplit:
          s.stack[top++] = inst.y;
          s.stack[top++] = inst.x;
          break;
        case Op::kBegin:
          if (at.at_begin) s.stack[top++] = pc + 1;
          break;
        case Op::kEnd:
          if (at.at_end) s.stack[top++] = pc + 1;
          break;
        case Op::kWordEdge:
          if (at.word_before != at.word_after) s.stack[top++] = pc + 1;
          break;
        case Op::kNotWordEdge:
          if (at.word_before == at.word_after) s.stack[top++] = pc + 1;
          break;
        default:
          list[count++] = pc;
          break;
      }
    }
    return false;
  };
  const auto read = [&subject](std::size_t& i) {
    const char32_t c = decode_utf8(subject, i);
    return c == kNotUtf8 ? kReplacement : c;
  };

  std::uint32_t* current = s.current.data();
  std::uint32_t* next = s.next.data();
  std::size_t current_count = 0;
  std::size_t pos = 0;
  std::size_t after = 0;
  char32_t c = pos < subject.size() ? read(after) : 0;

  s.next_generation();
  if (add(current, current_count, 0,
          {true, subject.empty(), false, !subject.empty() && is_word(c)}))
    return true;
  while (pos < subject.size()) {
    // Step over c, the code point at [pos, after).
    std::size_t following = after;
    const char32_t d = following < subject.size() ? read(following) : 0;
    const Position at{false, after == subject.size(), is_word(c),
                      after < subject.size() && is_word(d)};
    s.next_generation();
    std::size_t next_count = 0;
    for (std::size_t k = 0; k < current_count; ++k) {
      const Inst& inst = program_[current[k]];
      bool consumes = false;
      switch (inst.op) {
        case Op::kChar:
          consumes = inst.x == c;
          break;
        case Op::kAny:
          consumes = !is_line_terminator(c);
          break;
        case Op::kClass:
          consumes = in_class(inst.x, c);
          break;
        default:
          break;
      }
      if (consumes && add(next, next_count, current[k] + 1, at)) return true;
    }
    // An unanchored search starts a new thread at every position.
    if (!anchored_ && add(next, next_count, 0, at)) return true;
    std::swap(current, next);
    current_count = next_count;
    if (current_count == 0 && anchored_) return false;
    pos = after;
    after = following;
    c = d;
  }
  return false;
}

}  // namespace sluice::schema::detail
