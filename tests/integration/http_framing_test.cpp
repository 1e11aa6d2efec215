// Request smuggling: every framing RFC 9112 §6.1 and §6.3 refuses gets one
// 4xx or 501 and a closed connection, the bytes after it are never read as a
// second request, and the queue that second request names is never made.
#include <doctest/doctest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "http_client.hpp"
#include "test_broker.hpp"

using sluice::test::http_raw;
using sluice::test::http_request;

namespace {

/// A whole second request, hidden where a parser that got the framing wrong
/// would read it as the next request on the connection.
const std::string kSmuggled =
    "POST /v1/queues/smuggled/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
    "Content-Length: 5\r\n\r\nhello";

std::string front(const std::string& header_lines) {
  return "POST /v1/queues/orders/messages HTTP/1.1\r\nHost: x\r\n" + header_lines + "\r\n";
}

}  // namespace

TEST_CASE("http framing: no smuggling variant is answered twice or makes the smuggled queue") {
  TestBroker broker;
  struct Variant {
    std::string name;
    std::string bytes;
    int status;
  };
  std::vector<Variant> variants;
  for (const char* coding : {"gzip", "identity", "xchunked", "chunked, gzip", "gzip, chunked"})
    variants.push_back({std::string("Transfer-Encoding: ") + coding,
                        front(std::string("Transfer-Encoding: ") + coding + "\r\n") + kSmuggled,
                        501});
  variants.push_back(
      {"Transfer-Encoding twice",
       front("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n" + kSmuggled,
       501});
  variants.push_back({"Transfer-Encoding: chunked, chunked",
                      front("Transfer-Encoding: chunked, chunked\r\n") + "0\r\n\r\n" + kSmuggled,
                      400});
  variants.push_back({"Transfer-Encoding then Content-Length",
                      front("Transfer-Encoding: chunked\r\nContent-Length: " +
                            std::to_string(5 + kSmuggled.size()) + "\r\n") +
                          "0\r\n\r\n" + kSmuggled,
                      400});
  variants.push_back(
      {"Content-Length then Transfer-Encoding",
       front("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n" + kSmuggled,
       400});
  variants.push_back({"unimplemented coding with Content-Length",
                      front("Transfer-Encoding: gzip\r\nContent-Length: 0\r\n") + kSmuggled, 400});
  variants.push_back(
      {"conflicting Content-Length",
       front("Content-Length: 0\r\nContent-Length: " + std::to_string(kSmuggled.size()) + "\r\n") +
           kSmuggled,
       400});
  variants.push_back({"repeated equal Content-Length",
                      front("Content-Length: 0\r\nContent-Length: 0\r\n") + kSmuggled, 400});
  variants.push_back({"a Content-Length list", front("Content-Length: 0, 0\r\n") + kSmuggled, 400});
  variants.push_back({"Transfer-Encoding on HTTP/1.0",
                      "POST /v1/queues/orders/messages HTTP/1.0\r\nHost: x\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
                          kSmuggled,
                      400});
  variants.push_back(
      {"obs-fold hiding a Transfer-Encoding",
       front("X-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n") + kSmuggled, 400});
  variants.push_back(
      {"obs-fold in a value", front("X-Pad: a\r\n\tb\r\nContent-Length: 0\r\n") + kSmuggled, 400});
  variants.push_back(
      {"bare LF ending a field line",
       "POST /v1/queues/orders/messages HTTP/1.1\r\nHost: x\nContent-Length: 0\r\n\r\n" + kSmuggled,
       400});
  variants.push_back(
      {"bare LF line endings throughout",
       "POST /v1/queues/orders/messages HTTP/1.1\nHost: x\nContent-Length: 0\n\n" + kSmuggled,
       400});
  variants.push_back(
      {"bare CR inside the header block",
       "POST /v1/queues/orders/messages HTTP/1.1\r\nHost: x\rContent-Length: 0\r\n\r\n" + kSmuggled,
       400});

  for (const auto& v : variants) {
    CAPTURE(v.name);
    const auto got = http_raw(broker.http_port(), v.bytes);
    INFO("received: " << got.received);
    CHECK(got.responses() == 1);
    CHECK(got.first_status() == v.status);
    CHECK(got.closed);
    // The answer is the documented error shape.
    const auto body_at = got.received.find("\r\n\r\n");
    REQUIRE(body_at != std::string::npos);
    const auto body = nlohmann::json::parse(got.received.substr(body_at + 4), nullptr, false);
    REQUIRE_FALSE(body.is_discarded());
    CHECK(body["error"]["code"].is_string());
  }
  // Neither queue was made: nothing was published on any of those connections.
  CHECK(http_request(broker.http_port(), "GET", "/v1/queues/smuggled").status == 404);
  CHECK(http_request(broker.http_port(), "GET", "/v1/queues/orders").status == 404);
  // The listener is fine: a well-framed request still works, chunked too.
  const auto ok =
      http_raw(broker.http_port(), front("Transfer-Encoding: chunked\r\nConnection: close\r\n") +
                                       "5\r\nhello\r\n0\r\n\r\n");
  CHECK(ok.first_status() == 202);
  CHECK(ok.responses() == 1);
  CHECK(http_request(broker.http_port(), "GET", "/v1/queues/smuggled").status == 404);
}

TEST_CASE("http: the queue names . and .. are refused with invalid_queue_name, never made") {
  TestBroker broker;
  for (const char* target : {"/v1/queues/../messages", "/v1/queues/./messages",
                             "/v1/queues/../receive", "/v1/queues/.."}) {
    CAPTURE(target);
    const std::string method = std::string(target).ends_with("..") ? "GET" : "POST";
    const auto got = http_raw(broker.http_port(), method + " " + target +
                                                      " HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                                      "1\r\nConnection: close\r\n\r\nx");
    INFO("received: " << got.received);
    CHECK(got.first_status() == 400);
    CHECK(got.received.find("invalid_queue_name") != std::string::npos);
  }
  const auto list = http_request(broker.http_port(), "GET", "/v1/queues");
  CHECK(list.status == 200);
  CHECK(nlohmann::json::parse(list.body)["queues"].empty());
}

TEST_CASE("http framing: pipelined well-framed requests are each answered, in order") {
  TestBroker broker;
  const std::string one = front("Content-Type: text/plain\r\nContent-Length: 3\r\n") + "one";
  const std::string two = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const auto got = http_raw(broker.http_port(), one + two);
  INFO("received: " << got.received);
  CHECK(got.responses() == 2);
  CHECK(got.first_status() == 202);
  CHECK(got.closed);
}

TEST_CASE("http framing: a header block that arrives a byte at a time is checked the same") {
  TestBroker broker;
  // Well framed: answered.
  const auto drip = [&](const std::string& bytes) {
    return http_raw(broker.http_port(), bytes, std::chrono::milliseconds(5000), true);
  };
  const auto ok =
      drip(front("Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n") + "hi");
  CHECK(ok.first_status() == 202);
  // An obs-fold, a bare CR and a bare LF split across reads are still refused.
  for (const std::string& bad :
       {front("X-Pad: a\r\n b\r\nContent-Length: 0\r\n"),
        std::string("POST /v1/queues/orders/messages HTTP/1.1\r\nHost: x\rY: z\r\n\r\n"),
        std::string("POST /v1/queues/orders/messages HTTP/1.1\r\nHost: x\nY: z\r\n\r\n")}) {
    CAPTURE(bad);
    CHECK(drip(bad).first_status() == 400);
  }
  // Only the well-framed one was published.
  const auto orders = http_request(broker.http_port(), "GET", "/v1/queues/orders");
  REQUIRE(orders.status == 200);
  CHECK(nlohmann::json::parse(orders.body)["totals"]["published"] == 1);
}
