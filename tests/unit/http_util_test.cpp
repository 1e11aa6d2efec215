// The HTTP API's text helpers: UTF-8 validation, base64 both ways, query strings.
#include <doctest/doctest.h>

#include "attempt_log.hpp"
#include "http_util.hpp"
#include "sluice/protocol/codec.hpp"
#include "url.hpp"

using namespace sluice::net;

TEST_CASE("http_util: UTF-8 validation rejects what JSON cannot carry") {
  CHECK(valid_utf8(""));
  CHECK(valid_utf8("plain ascii"));
  CHECK(valid_utf8("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));  // été € 😀
  CHECK_FALSE(valid_utf8("\xff"));
  CHECK_FALSE(valid_utf8("\xc3"));              // truncated
  CHECK_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));      // a surrogate
  CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  CHECK_FALSE(valid_utf8("ok\x80"));            // a stray continuation byte
}

TEST_CASE("http_util: base64 round-trips every length and refuses garbage") {
  std::string bytes;
  for (int n = 0; n < 40; ++n) {
    const std::string encoded = base64_encode(bytes);
    CHECK(encoded.size() % 4 == 0);
    const auto decoded = base64_decode(encoded);
    REQUIRE(decoded);
    CHECK(*decoded == bytes);
    bytes += static_cast<char>(n * 37 + 200);
  }
  CHECK(base64_encode(std::string("\x00\xff", 2)) == "AP8=");
  CHECK(base64_decode("AP8") == std::string("\x00\xff", 2));  // padding optional
  CHECK_FALSE(base64_decode("A"));
  CHECK_FALSE(base64_decode("AP8*"));
  CHECK_FALSE(base64_decode("AP 8"));
}

TEST_CASE("http_util: targets split into a path and decoded query pairs") {
  auto [path, query] = split_target("/v1/queues/q/dlq?limit=5&order=newest&x=a%20b+c&flag&bad=%zz");
  CHECK(path == "/v1/queues/q/dlq");
  REQUIRE(query.size() == 5);
  CHECK(query[0] == std::pair<std::string, std::string>{"limit", "5"});
  CHECK(query[1].second == "newest");
  CHECK(query[2].second == "a b c");
  CHECK(query[3] == std::pair<std::string, std::string>{"flag", ""});
  CHECK(query[4].second == "%zz");
  CHECK(split_target("/healthz").first == "/healthz");
  CHECK(split_target("/healthz").second.empty());
}

TEST_CASE("trigger: URLs are parsed for the client as the config checks them") {
  using sluice::net::Url;
  auto u = Url::parse("https://fn.example:8443/invoke?x=1");
  REQUIRE(u);
  CHECK(u->tls);
  CHECK(u->host == "fn.example");
  CHECK(u->port == 8443);
  CHECK(u->target == "/invoke?x=1");
  u = Url::parse("http://[::1]/");
  REQUIRE(u);
  CHECK(u->host == "::1");
  CHECK(u->port == 80);
  CHECK_FALSE(Url::parse("ftp://x/"));
  CHECK_FALSE(Url::parse("http://user@host/"));
  CHECK_FALSE(Url::parse("http://host:0/"));
  CHECK_FALSE(Url::parse("http:///path"));
}

TEST_CASE("http_util: Accept-Encoding takes gzip unless it is refused") {
  const auto takes = [](const char* value) {
    const std::string v = value;
    return accepts_gzip(&v);
  };
  CHECK_FALSE(accepts_gzip(nullptr));
  CHECK(takes("gzip"));
  CHECK(takes("GZIP"));
  CHECK(takes("deflate, gzip;q=0.5"));
  CHECK(takes("br, *"));
  CHECK(takes("gzip, deflate, br"));  // what curl --compressed and Prometheus send
  CHECK_FALSE(takes("identity"));
  CHECK_FALSE(takes("gzip;q=0"));
  CHECK_FALSE(takes("gzip; q=0.000"));
  CHECK_FALSE(takes("deflate"));
  CHECK_FALSE(takes("x-gzip2"));
  CHECK(takes("*;q=0, gzip"));  // an explicit gzip wins over the wildcard
  CHECK_FALSE(takes("*, gzip;q=0"));
  CHECK_FALSE(takes("gzip;Q=0"));
  // What gzip() makes starts as RFC 1952 says and is smaller for repetitive text.
  const std::string text(10000, 'm');
  const std::string packed = gzip(text);
  REQUIRE(packed.size() > 18);
  CHECK(static_cast<unsigned char>(packed[0]) == 0x1f);
  CHECK(static_cast<unsigned char>(packed[1]) == 0x8b);
  CHECK(packed.size() < text.size() / 10);
}

TEST_CASE("W3C traceparent: what is valid, and its trace id") {
  CHECK(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  CHECK(valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later"));
  CHECK_FALSE(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"));
  CHECK_FALSE(valid_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
  CHECK_FALSE(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
  CHECK_FALSE(valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
  CHECK_FALSE(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"));
  CHECK_FALSE(valid_traceparent(""));
  std::string message;
  const sluice::protocol::Header headers[] = {
      {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
  sluice::protocol::encode_message(message, headers, "p");
  CHECK(trace_id_of(message) == "4bf92f3577b34da6a3ce929d0e0e4736");
  message.clear();
  sluice::protocol::encode_message(message, {}, "p");
  CHECK(trace_id_of(message).empty());
}
