// PROTOCOL.md's byte-by-byte sessions, sent to the real sluiced exactly as
// written: every "C:" line is parsed into bytes (its length field checked
// against what follows), sent; every run of "S:" lines must match the frames
// that come back, field for field. A change to the codec or the page that
// makes them disagree fails here.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "test_broker.hpp"

namespace {

/// One piece of a line: literal bytes, or a placeholder.
struct Piece {
  enum Kind { bytes, len, capture, any8, str16 } kind = bytes;
  std::string value;  // bytes: the bytes; capture: its name ("token")
};

struct Line {
  bool client = false;
  bool closed = false;  // "S: closed"
  std::vector<Piece> pieces;
  std::string text;
};

std::vector<Piece> parse_pieces(std::string_view s) {
  std::vector<Piece> out;
  while (true) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    if (s.empty() || s.starts_with("//")) break;
    if (s.front() == '"') {
      const auto end = s.find('"', 1);
      REQUIRE(end != std::string_view::npos);
      out.push_back({Piece::bytes, std::string(s.substr(1, end - 1))});
      s.remove_prefix(end + 1);
      continue;
    }
    const auto end = std::min(s.find(' '), s.size());
    const std::string_view word = s.substr(0, end);
    s.remove_prefix(end);
    if (word == "<len>") {
      out.push_back({Piece::len, ""});
    } else if (word == "<token>") {
      out.push_back({Piece::capture, "token"});
    } else if (word == "<time>") {
      out.push_back({Piece::any8, ""});
    } else if (word == "<str16>") {
      out.push_back({Piece::str16, ""});
    } else {
      INFO("not a hex group: " << word);
      REQUIRE(word.size() % 2 == 0);
      std::string bytes;
      for (std::size_t i = 0; i < word.size(); i += 2) {
        REQUIRE((std::isxdigit(static_cast<unsigned char>(word[i])) &&
                 std::isxdigit(static_cast<unsigned char>(word[i + 1]))));
        bytes.push_back(static_cast<char>(std::stoi(std::string(word.substr(i, 2)), nullptr, 16)));
      }
      out.push_back({Piece::bytes, bytes});
    }
  }
  return out;
}

/// The ```-blocks of `section` in PROTOCOL.md, each a list of C:/S: lines.
std::vector<std::vector<Line>> sessions(const std::string& section) {
  std::ifstream in(std::string(SLUICE_SOURCE_DIR) + "/protocol/PROTOCOL.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const auto at = doc.find("\n" + section + "\n");
  REQUIRE(at != std::string::npos);
  const auto next_section = doc.find("\n## ", at + 1);
  std::istringstream body(doc.substr(at, next_section - at));
  std::vector<std::vector<Line>> out;
  bool inside = false;
  for (std::string text; std::getline(body, text);) {
    if (text.starts_with("```")) {
      inside = !inside;
      if (inside) out.emplace_back();
      continue;
    }
    if (!inside) continue;
    Line line;
    line.text = text;
    REQUIRE((text.starts_with("C: ") || text.starts_with("S: ")));
    line.client = text[0] == 'C';
    if (text.substr(3).starts_with("closed"))
      line.closed = true;
    else
      line.pieces = parse_pieces(std::string_view(text).substr(3));
    out.back().push_back(std::move(line));
  }
  return out;
}

std::uint32_t le32(std::string_view b) {
  std::uint32_t v = 0;
  std::memcpy(&v, b.data(), 4);
  return v;
}

class Wire {
 public:
  explicit Wire(std::uint16_t port) : fd_(sluice::test::connect_loopback(port)) {}
  ~Wire() { ::close(fd_); }
  void send(const std::string& bytes) {
    REQUIRE(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }
  /// The next whole frame (length prefix included), or nullopt once closed.
  std::optional<std::string> frame() {
    while (true) {
      if (buffer_.size() >= 4 && buffer_.size() >= 4 + le32(buffer_)) {
        std::string f = buffer_.substr(0, 4 + le32(buffer_));
        buffer_.erase(0, f.size());
        return f;
      }
      pollfd p{fd_, POLLIN, 0};
      REQUIRE(::poll(&p, 1, 10000) == 1);
      char chunk[65536];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_;
  std::string buffer_;
};

/// Does `frame` match `line`? Captures go into `vars` (bound on first use).
bool matches(const std::string& frame, const Line& line, std::map<std::string, std::string>& vars) {
  std::map<std::string, std::string> bound = vars;
  std::size_t at = 0;
  for (const auto& p : line.pieces) {
    switch (p.kind) {
      case Piece::bytes:
        if (frame.compare(at, p.value.size(), p.value) != 0) return false;
        at += p.value.size();
        break;
      case Piece::len:
        if (at != 0 || frame.size() < 4 || le32(frame) != frame.size() - 4) return false;
        at += 4;
        break;
      case Piece::capture: {
        if (frame.size() < at + 8) return false;
        const std::string value = frame.substr(at, 8);
        auto [it, fresh] = bound.emplace(p.value, value);
        if (!fresh && it->second != value) return false;
        at += 8;
        break;
      }
      case Piece::any8:
        if (frame.size() < at + 8) return false;
        at += 8;
        break;
      case Piece::str16: {
        if (frame.size() < at + 2) return false;
        const std::size_t n = static_cast<unsigned char>(frame[at]) |
                              static_cast<std::size_t>(static_cast<unsigned char>(frame[at + 1]))
                                  << 8;
        if (frame.size() < at + 2 + n) return false;
        at += 2 + n;
        break;
      }
    }
  }
  if (at != frame.size()) return false;
  vars = std::move(bound);
  return true;
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

void run(const std::vector<Line>& session) {
  TestBroker broker;
  Wire wire(broker.port());
  std::map<std::string, std::string> vars;
  for (std::size_t i = 0; i < session.size();) {
    if (session[i].client) {
      const Line& line = session[i];
      CAPTURE(line.text);
      std::string bytes;
      for (const auto& p : line.pieces) {
        if (p.kind == Piece::bytes) {
          bytes += p.value;
        } else {
          REQUIRE(p.kind == Piece::capture);
          REQUIRE(vars.count(p.value));
          bytes += vars[p.value];
        }
      }
      // The page's length field says what follows it.
      REQUIRE(bytes.size() >= 5);
      CHECK(le32(bytes) == bytes.size() - 4);
      wire.send(bytes);
      ++i;
      continue;
    }
    // A run of broker lines, in any order.
    std::vector<const Line*> expected;
    for (; i < session.size() && !session[i].client; ++i) expected.push_back(&session[i]);
    while (!expected.empty()) {
      const auto frame = wire.frame();
      if (!frame) {
        const bool closed_expected =
            std::any_of(expected.begin(), expected.end(), [](const Line* l) { return l->closed; });
        CHECK_MESSAGE(closed_expected, "the broker closed the connection early");
        std::erase_if(expected, [](const Line* l) { return l->closed; });
        REQUIRE(expected.empty());
        break;
      }
      const auto hit = std::find_if(expected.begin(), expected.end(), [&](const Line* l) {
        return !l->closed && matches(*frame, *l, vars);
      });
      INFO("frame from the broker: " << hex(*frame));
      for (const Line* l : expected) INFO("expected one of: " << l->text);
      REQUIRE(hit != expected.end());
      expected.erase(hit);
      // "closed" waits for the end of the stream once the frames before it came.
      if (expected.size() == 1 && expected[0]->closed) {
        CHECK_FALSE(wire.frame().has_value());
        expected.clear();
      }
    }
  }
}

}  // namespace

TEST_CASE(
    "protocol: PROTOCOL.md's byte-by-byte sessions, sent to sluiced, get the answers it shows") {
  const auto all = sessions("## A session, byte by byte");
  REQUIRE(all.size() == 3);
  for (const auto& session : all) {
    CAPTURE(session.front().text);
    run(session);
  }
}
