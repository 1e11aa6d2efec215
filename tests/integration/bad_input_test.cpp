// Bad bytes on one connection: each gets the error PROTOCOL.md documents, lost
// framing closes only that connection, and a client connected meanwhile keeps
// publishing and consuming with nothing lost.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>
#include <optional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sluice/protocol/codec.hpp"
#include "http_client.hpp"
#include "test_broker.hpp"

namespace protocol = sluice::protocol;

namespace {

/// A plain TCP socket speaking raw bytes, for sending what no client library would.
class RawClient {
 public:
  explicit RawClient(std::uint16_t port) : fd_(sluice::test::connect_loopback(port)) {}
  ~RawClient() { ::close(fd_); }

  void send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return;  // the broker may already have closed: the test reads why
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void hello() {
    std::string out;
    protocol::encode_hello(out, protocol::Hello{1, 1, "raw", ""});
    send(out);
    auto f = next_frame();
    REQUIRE(f.has_value());
    REQUIRE(f->first == static_cast<std::uint8_t>(protocol::FrameType::hello_ok));
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  /// The next frame (type, body), or nullopt once the broker closed the connection
  /// (or nothing came within `timeout`; `timed_out()` tells which).
  std::optional<std::pair<std::uint8_t, std::string>> next_frame(
      std::chrono::milliseconds timeout = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      protocol::Frame frame;
      errc code{};
      const auto result = decoder_.next(frame, code);
      if (result == protocol::FrameDecoder::Result::frame)
        return std::pair{frame.type, std::string(frame.body)};
      REQUIRE(result == protocol::FrameDecoder::Result::need_more);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        timed_out_ = true;
        return std::nullopt;
      }
      auto space = decoder_.prepare(64 * 1024);
      const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
      if (n <= 0) {
        closed_ = true;
        return std::nullopt;
      }
      decoder_.commit(static_cast<std::size_t>(n));
    }
  }

  /// Reads until an ERROR frame; returns its code (errc::ok if none came).
  errc expect_error(std::string* message = nullptr) {
    while (auto f = next_frame()) {
      if (f->first != static_cast<std::uint8_t>(protocol::FrameType::error)) continue;
      protocol::ErrorFrame e;
      REQUIRE(protocol::decode_error(f->second, e));
      if (message) *message = std::string(e.message);
      return e.code;
    }
    return errc::ok;
  }
  /// True when the broker closes the connection (EOF) within 5 s.
  bool expect_closed() {
    while (next_frame()) {
    }
    return closed_;
  }
  /// A PING answered by OK: the connection still works.
  bool ping_ok() {
    std::string out;
    protocol::encode_ping(out, 4242);
    send(out);
    auto f = next_frame();
    if (!f || f->first != static_cast<std::uint8_t>(protocol::FrameType::ok)) return false;
    std::uint64_t id = 0;
    return protocol::decode_ok(f->second, id) && id == 4242;
  }

 private:
  int fd_ = -1;
  protocol::FrameDecoder decoder_{64u << 20};
  bool closed_ = false;
  bool timed_out_ = false;
};

/// One valid frame of every type a client sends after HELLO, by name.
std::vector<std::pair<std::string, std::string>> valid_requests() {
  std::vector<std::pair<std::string, std::string>> frames;
  auto add = [&](std::string name, auto&& encode) {
    std::string out;
    encode(out);
    frames.emplace_back(std::move(name), std::move(out));
  };
  add("publish", [](std::string& out) {
    auto p = protocol::begin_publish(out, 1, "catalog");
    const protocol::Header headers[] = {{"sluice-key", "k"}, {"h", "v"}};
    protocol::encode_message(out, headers, "payload");
    protocol::end_publish(out, p, 1);
  });
  const protocol::AckEntry ack{1, 2};
  add("ack", [&](std::string& out) { protocol::encode_ack(out, 2, {&ack, 1}); });
  const protocol::NackEntry nack{1, 2, 100, 0, "reason"};
  add("nack", [&](std::string& out) { protocol::encode_nack(out, 3, {&nack, 1}); });
  const protocol::ExtendEntry extend{1, 2, 1000};
  add("extend", [&](std::string& out) { protocol::encode_extend(out, 4, {&extend, 1}); });
  add("subscribe", [](std::string& out) {
    protocol::encode_subscribe(out, protocol::Subscribe{5, 3, "catalog", 10, 1000, 0, 1});
  });
  add("unsubscribe", [](std::string& out) {
    protocol::encode_unsubscribe(out, protocol::Unsubscribe{6, 3});
  });
  add("stats", [](std::string& out) {
    protocol::encode_stats(out, protocol::StatsRequest{7, "catalog"});
  });
  add("configure", [](std::string& out) {
    protocol::encode_configure(out, protocol::Configure{8, "catalog", {{"max_attempts", "3"}}});
  });
  add("ping", [](std::string& out) { protocol::encode_ping(out, 9); });
  add("dead_letters", [](std::string& out) {
    protocol::DeadLetterRequest r;
    r.request_id = 10;
    r.op = protocol::DeadLetterOp::redrive;
    r.queue = "catalog";
    r.reason = "x";
    protocol::encode_dead_letters(out, r);
  });
  return frames;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

bool valid_json(const std::string& line) {
  return nlohmann::json::accept(line);
}

std::string le32(std::uint32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}

/// A producer and a consumer on their own connections, busy before, during and
/// after the bad input; at the end every message must have been acked once.
class Bystander {
 public:
  explicit Bystander(const TestBroker& broker)
      : producer_(broker.connect("bystander-producer")),
        consumer_(broker.connect("bystander-consumer")) {
    auto sub = consumer_->subscribe("bystander", {.max_in_flight = 32},
                                    [this](const sluice::client::Delivery&) {
                                      received_.fetch_add(1);
                                      return sluice::client::Disposition::ack;
                                    });
    REQUIRE(sub.ok());
    publish(500);
  }
  void publish(int n) {
    for (int i = 0; i < n; ++i) producer_->publish_async("bystander", "m", nullptr);
    REQUIRE(producer_->wait_confirms(10s));
    published_ += n;
  }
  void check_undisturbed() {
    publish(500);
    CHECK(eventually([&] { return received_.load() >= published_; }));
    CHECK(received_.load() == published_);
    CHECK(producer_->connected());
    CHECK(consumer_->connected());
    auto stats = producer_->stats("bystander");
    REQUIRE(stats.ok());
    REQUIRE(stats->size() == 1);
    CHECK(stats->front().acked_total == static_cast<std::uint64_t>(published_));
    CHECK(stats->front().published_total == static_cast<std::uint64_t>(published_));
  }

 private:
  std::unique_ptr<sluice::client::Connection> producer_;
  std::unique_ptr<sluice::client::Connection> consumer_;
  std::atomic<int> received_{0};
  int published_ = 0;
};

}  // namespace

TEST_CASE("bad input gets the documented error and leaves other clients alone") {
  // Debug logging: the client names of HELLO reach the log, bad UTF-8 included.
  TestBroker broker({"--set", "limits.frame_timeout=500ms", "--set",
                     "limits.handshake_timeout=500ms", "--log-level", "debug"});
  Bystander bystander(broker);
  RawClient raw(broker.port());

  SUBCASE("garbage instead of a handshake: frame_too_large, closed") {
    raw.send("GET / HTTP/1.1\r\nHost: sluice\r\n\r\n");  // "GET " read as a length is 542 MB
    CHECK(raw.expect_error() == errc::frame_too_large);
    CHECK(raw.expect_closed());
  }
  SUBCASE("a random byte stream after the handshake: an error, then closed") {
    raw.hello();
    std::mt19937 rng(20261123);
    std::string garbage(16 * 1024, '\0');
    for (auto& c : garbage) c = static_cast<char>(rng());
    raw.send(garbage);
    // Whatever frames the noise happens to form get answers; framing is lost at
    // the latest when a length is over the limit or a frame never completes.
    errc last = errc::ok;
    for (errc code = raw.expect_error(); code != errc::ok; code = raw.expect_error()) last = code;
    CHECK((last == errc::frame_too_large || last == errc::timed_out ||
           last == errc::malformed_frame));
    CHECK(raw.expect_closed());
  }
  SUBCASE("a frame truncated by the end of the stream: malformed_frame, closed") {
    raw.hello();
    raw.send(le32(100) + "\x10" + std::string(20, 'x'));
    raw.shutdown_write();
    std::string message;
    CHECK(raw.expect_error(&message) == errc::malformed_frame);
    CHECK(message == "stream ended inside a frame");
    CHECK(raw.expect_closed());
  }
  SUBCASE("a frame that stops arriving: timed_out after limits.frame_timeout, closed") {
    raw.hello();
    raw.send(le32(100) + "\x10" + std::string(20, 'x'));
    CHECK(raw.expect_error() == errc::timed_out);
    CHECK(raw.expect_closed());
  }
  SUBCASE("an oversized length: frame_too_large, closed") {
    raw.hello();
    raw.send(le32(0x7FFFFFFF) + "\x10");
    CHECK(raw.expect_error() == errc::frame_too_large);
    CHECK(raw.expect_closed());
  }
  SUBCASE("a zero length: malformed_frame, closed") {
    raw.hello();
    raw.send(le32(0));
    CHECK(raw.expect_error() == errc::malformed_frame);
    CHECK(raw.expect_closed());
  }
  SUBCASE("an unknown frame type: unknown_frame_type, and the connection lives") {
    raw.hello();
    raw.send(le32(4) + "\x77" + "abc");
    std::string message;
    CHECK(raw.expect_error(&message) == errc::unknown_frame_type);
    CHECK(message == "unknown frame type 0x77");
    CHECK(raw.ping_ok());
  }
  SUBCASE("a malformed body inside intact framing: malformed_frame, and the connection lives") {
    raw.hello();
    std::string out;
    protocol::encode_subscribe(out, protocol::Subscribe{7, 1, "q", 10, 0, 0, 1});
    out.resize(out.size() - 3);  // cut the body short
    const std::uint32_t length = static_cast<std::uint32_t>(out.size() - 4);
    std::memcpy(out.data(), &length, 4);
    raw.send(out);
    CHECK(raw.expect_error() == errc::malformed_frame);
    CHECK(raw.ping_ok());
  }
  SUBCASE("a request before HELLO: handshake_required, closed") {
    std::string out;
    protocol::encode_ping(out, 1);
    raw.send(out);
    CHECK(raw.expect_error() == errc::handshake_required);
    CHECK(raw.expect_closed());
  }
  SUBCASE("a connection that says nothing: timed_out after limits.handshake_timeout, closed") {
    CHECK(raw.expect_error() == errc::timed_out);
    CHECK(raw.expect_closed());
  }
  SUBCASE("no common protocol version: unsupported_version, closed") {
    std::string out;
    protocol::encode_hello(out, protocol::Hello{2, 3, "future", ""});
    raw.send(out);
    CHECK(raw.expect_error() == errc::unsupported_version);
    CHECK(raw.expect_closed());
  }
  SUBCASE("every request frame truncated at every length: malformed_frame, and it lives") {
    raw.hello();
    for (const auto& [name, frame] : valid_requests()) {
      const std::string_view body = std::string_view(frame).substr(5);
      for (std::size_t keep = 0; keep < body.size(); ++keep) {
        CAPTURE(name);
        CAPTURE(keep);
        raw.send(le32(static_cast<std::uint32_t>(1 + keep)) + frame[4] +
                 std::string(body.substr(0, keep)));
        CHECK(raw.expect_error() == errc::malformed_frame);
      }
    }
    CHECK(raw.ping_ok());
  }
  SUBCASE("every request frame with bytes left over: malformed_frame, and it lives") {
    raw.hello();
    for (const auto& [name, frame] : valid_requests()) {
      CAPTURE(name);
      std::string longer = frame + "xyz";
      const std::uint32_t length = static_cast<std::uint32_t>(longer.size() - 4);
      std::memcpy(longer.data(), &length, 4);
      raw.send(longer);
      CHECK(raw.expect_error() == errc::malformed_frame);
    }
    CHECK(raw.ping_ok());
  }
  SUBCASE("oversized fields and values of the wrong kind get their own codes, and it lives") {
    raw.hello();
    std::string out;
    auto expect = [&](errc code) {
      raw.send(out);
      out.clear();
      CHECK(raw.expect_error() == code);
    };
    const std::string long_name(201, 'q');
    protocol::encode_subscribe(out, protocol::Subscribe{1, 1, long_name, 10, 0, 0, 1});
    expect(errc::invalid_queue_name);
    // "." and "..": a URL normaliser would change them, so no port takes them.
    for (const char* dots : {".", ".."}) {
      auto p = protocol::begin_publish(out, 9, dots);
      protocol::encode_message(out, {}, "x");
      protocol::end_publish(out, p, 1);
      expect(errc::invalid_queue_name);
      protocol::encode_subscribe(out, protocol::Subscribe{9, 9, dots, 10, 0, 0, 1});
      expect(errc::invalid_queue_name);
    }
    auto publish = protocol::begin_publish(out, 2, "q");
    protocol::encode_message(out, {}, std::string((1u << 20) + 1, 'p'));  // over max_payload_bytes
    protocol::end_publish(out, publish, 1);
    expect(errc::payload_too_large);
    // A string length running past the end of the body.
    out = le32(1 + 8 + 2) + "\x10" + std::string(8, '\0') + "\xff\xff";
    expect(errc::malformed_frame);
    protocol::encode_subscribe(out, protocol::Subscribe{3, 1, "q", 0, 0, 0, 1});  // credit 0
    expect(errc::invalid_argument);
    protocol::Configure configure{4, "q", {{"max_attempts", "many"}}};
    protocol::encode_configure(out, configure);
    expect(errc::invalid_argument);
    protocol::DeadLetterRequest dlq;
    dlq.request_id = 5;
    dlq.op = static_cast<protocol::DeadLetterOp>(99);
    dlq.queue = "q";
    protocol::encode_dead_letters(out, dlq);
    raw.send(out);
    out.clear();
    const errc code = raw.expect_error();
    CHECK((code == errc::malformed_frame || code == errc::invalid_argument));
    CHECK(raw.ping_ok());
  }
  SUBCASE("bad UTF-8 in names: invalid_queue_name, the log stays valid, and it lives") {
    std::string out;
    protocol::encode_hello(out, protocol::Hello{1, 1, "bad\xc3\x28name\xff", ""});
    raw.send(out);
    auto ok = raw.next_frame();
    REQUIRE(ok.has_value());
    CHECK(ok->first == static_cast<std::uint8_t>(protocol::FrameType::hello_ok));
    out.clear();
    for (const char* name : {"\xc3\x28", "q\xff", "\xed\xa0\x80", "caf\xc3\xa9"}) {
      CAPTURE(name);
      protocol::encode_subscribe(out, protocol::Subscribe{1, 9, name, 10, 0, 0, 1});
      raw.send(out);
      out.clear();
      CHECK(raw.expect_error() == errc::invalid_queue_name);
      auto publish = protocol::begin_publish(out, 2, name);
      protocol::encode_message(out, {}, "m");
      protocol::end_publish(out, publish, 1);
      raw.send(out);
      out.clear();
      CHECK(raw.expect_error() == errc::invalid_queue_name);
    }
    CHECK(raw.ping_ok());
    const std::string log = broker.log();
    CHECK(log.find("bad\\ufffd(name\\ufffd") != std::string::npos);
    for (const auto& line : lines_of(log)) CHECK_MESSAGE(valid_json(line), line);
  }
  SUBCASE("garbage pipelined after a valid frame: the frame is answered, then closed") {
    raw.hello();
    std::string out;
    protocol::encode_ping(out, 77);
    out += "\xff\xff\xff\xff garbage after a good frame";
    raw.send(out);
    auto f = raw.next_frame();
    REQUIRE(f.has_value());
    CHECK(f->first == static_cast<std::uint8_t>(protocol::FrameType::ok));
    CHECK(raw.expect_error() == errc::frame_too_large);
    CHECK(raw.expect_closed());
  }
  SUBCASE("a flood of HELLOs on one connection: one HELLO_OK, then handshake_required, closed") {
    std::string out;
    for (int i = 0; i < 200; ++i) protocol::encode_hello(out, protocol::Hello{1, 1, "flood", ""});
    raw.send(out);
    auto f = raw.next_frame();
    REQUIRE(f.has_value());
    CHECK(f->first == static_cast<std::uint8_t>(protocol::FrameType::hello_ok));
    CHECK(raw.expect_error() == errc::handshake_required);
    CHECK(raw.expect_closed());
  }
  bystander.check_undisturbed();
}

// Its own broker with the default handshake timeout: 100 connections at once
// on a starved machine may wait longer than the 500 ms the test above uses.
TEST_CASE("a flood of connections, each with a HELLO and gone: the broker carries on") {
  TestBroker broker;
  Bystander bystander(broker);
  RawClient raw(broker.port());
  for (int round = 0; round < 5; ++round) {
    std::vector<std::unique_ptr<RawClient>> burst;
    for (int i = 0; i < 100; ++i) burst.push_back(std::make_unique<RawClient>(broker.port()));
    std::string out;
    protocol::encode_hello(out, protocol::Hello{1, 1, "burst", ""});
    for (auto& c : burst) c->send(out);
    // Half leave without reading the answer, half read it.
    for (std::size_t i = 0; i < burst.size(); i += 2) {
      auto f = burst[i]->next_frame();
      REQUIRE(f.has_value());
      CHECK(f->first == static_cast<std::uint8_t>(protocol::FrameType::hello_ok));
    }
  }
  raw.hello();
  CHECK(raw.ping_ok());

  bystander.check_undisturbed();
}

TEST_CASE("a client that does not read its answers is paused, not buffered without bound") {
  TestBroker broker({"--set", "limits.connection_outbound_bytes=64KiB"});
  auto admin = broker.connect("admin");
  for (int q = 0; q < 400; ++q)
    REQUIRE(admin->publish("queue-" + std::to_string(q), {"x", {}}).ok());
  const std::uint64_t before = sluice::test::proc_status_kib(broker.pid(), "VmRSS:");

  // 3,000 STATS requests of every queue (45 KB sent) ask for ~120 MB of answers.
  RawClient greedy(broker.port());
  greedy.hello();
  std::string requests;
  for (std::uint64_t i = 1; i <= 3000; ++i) protocol::encode_stats(requests, {i, ""});
  greedy.send(requests);
  std::this_thread::sleep_for(500ms);  // the broker does what it will with them
  const std::uint64_t during = sluice::test::proc_status_kib(broker.pid(), "VmRSS:");
  CAPTURE(before);
  CAPTURE(during);
  CHECK(during < before + 16 * 1024);  // bounded by the outbound limit, not by the requests

  // Others are served meanwhile, and the greedy client gets every answer once it reads.
  CHECK_FALSE(admin->ping());
  std::uint64_t answered = 0;
  while (auto f = greedy.next_frame()) {
    REQUIRE(f->first == static_cast<std::uint8_t>(protocol::FrameType::stats_result));
    if (++answered == 3000) break;
  }
  CHECK(answered == 3000);
}

TEST_CASE("limits.max_headers and limits.max_header_bytes hold on both ports") {
  TestBroker broker({"--set", "limits.max_headers=2", "--set", "limits.max_header_bytes=100"});
  auto conn = broker.connect("headers");
  sluice::client::Message m;
  m.payload = "p";
  m.headers = {{"a", "1"}, {"b", "2"}};
  CHECK(conn->publish("h", m).ok());
  m.headers.emplace_back("c", "3");
  auto refused = conn->publish("h", m);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == errc::invalid_argument);
  CHECK(refused.error().detail.find("max_headers") != std::string::npos);
  m.headers = {{"big", std::string(98, 'v')}};  // 3 + 98 bytes
  refused = conn->publish("h", m);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().detail.find("max_header_bytes") != std::string::npos);
  CHECK(conn->connected());
  const auto r = sluice::test::http_request(
      broker.http_port(), "POST", "/v1/queues/h/messages", "p",
      {{"Sluice-Header-A", "1"}, {"Sluice-Header-B", "2"}, {"Sluice-Header-C", "3"}});
  CHECK(r.status == 400);
  CHECK(r.body.find("max_headers") != std::string::npos);
  auto stats = conn->stats("h");
  REQUIRE(stats.ok());
  CHECK(stats->front().published_total == 1);
}
