// libFuzzer target: bytes as they would arrive on the HTTP port, through the
// listener's parser (http_parse: Beast, the same limits) and into the whole
// HTTP API over a real in-memory engine: routing, JSON bodies, headers,
// receipts, auth, DLQ requests, /metrics. Up to 16 pipelined requests per
// input share one broker, so a receive can be followed by its ack. An input
// starting with "AUTH\n" runs with tokens configured (the seeds hold them).
// Nothing may crash, leak, read out of bounds or hit undefined behaviour, and
// every request must be answered exactly once. Verified sources of every
// scheme (/v1/sources/gh, stripe, std, plain; secret "fuzz-secret-0123456789")
// and a queue with a schema ("orders", version v1) are configured, so the
// signature checks, CloudEvents and the validator see what the fuzzer makes.
#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <string_view>

#include "engine.hpp"
#include "http_api.hpp"
#include "http_parse.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "broker.hpp"
#include "sluice/schema/schema.hpp"
#include "sluice/security/token.hpp"

#include <nlohmann/json.hpp>

using namespace sluice;

namespace {
std::vector<config::TokenSettings> fuzz_tokens() {
  config::TokenSettings admin;
  admin.name = "admin";
  admin.hash = security::hash_token("fuzz-admin-token-0123456789");
  admin.admin = {"*"};
  config::TokenSettings orders;
  orders.name = "orders";
  orders.hash = security::hash_token("fuzz-orders-token-0123456789");
  orders.publish = {"orders.*"};
  orders.consume = {"orders.*"};
  return {admin, orders};
}

std::vector<net::Sources::Source> fuzz_sources() {
  std::vector<net::Sources::Source> sources;
  const std::pair<const char*, config::SourceScheme> schemes[] = {
      {"gh", config::SourceScheme::github},
      {"stripe", config::SourceScheme::stripe},
      {"std", config::SourceScheme::standard_webhooks},
      {"plain", config::SourceScheme::hmac}};
  for (const auto& [name, scheme] : schemes) {
    net::Sources::Source& s = sources.emplace_back();
    s.settings.name = name;
    s.settings.queue = "events";
    s.settings.scheme = scheme;
    // Fixed timestamps in the seeds stay fresh.
    s.settings.tolerance = std::chrono::hours(24 * 365 * 100);
    s.settings.id_header = "x-id";
    s.keys = {"fuzz-secret-0123456789", "fuzz-previous-secret"};
  }
  return sources;
}

std::vector<net::Schemas::Queue> fuzz_schemas() {
  std::string error;
  auto schema =
      schema::Schema::compile(nlohmann::json::parse(R"({"type": "object", "required": ["order"],
        "properties": {"order": {"type": "integer", "minimum": 0},
                       "sku": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
                       "lines": {"type": "array", "items": {"$ref": "#/definitions/line"}}},
        "definitions": {"line": {"oneOf": [{"type": "string"}, {"type": "number"}]}}})"),
                              error);
  if (!schema) std::abort();
  std::vector<net::Schemas::Queue> queues(1);
  queues[0].name = "orders";
  queues[0].versions.push_back({"v1", "fuzz", std::move(schema)});
  return queues;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    log::set_level(log::Level::error);
    return true;
  }();
  static const std::vector<config::TokenSettings> tokens = fuzz_tokens();
  (void)quiet;
  std::string_view input(reinterpret_cast<const char*>(data), size);

  boost::asio::io_context io(1);
  engine::Engine engine;
  engine.set_max_queues(64);
  net::Broker server(io, engine, net::BrokerOptions{});
  server.sources().replace(fuzz_sources());
  server.schemas().replace(fuzz_schemas());
  if (input.starts_with("AUTH\n")) {
    input.remove_prefix(5);
    server.auth().configure(tokens);
  }
  net::Metrics metrics(server);
  net::HttpApiOptions options;
  options.max_batch = 64;
  options.max_receive = 64;
  {
    net::HttpApi api(server, metrics, options);
    api.set_ready(true);
    int asked = 0;
    int answered = 0;
    for (int i = 0; i < 16; ++i) {
      net::HttpRequest request;
      bool keep_alive = false;
      if (net::parse_http_request(input, 64 * 1024, request, keep_alive) != net::HttpParse::request)
        break;
      ++asked;
      api.handle(std::move(request), [&answered](net::HttpResponse response) {
        ++answered;
        if (response.after) response.after(true);
      });
      io.poll();
      io.restart();
    }
    // Long polls still waiting answer now.
    api.stop();
    io.poll();
    io.restart();
    if (answered != asked) std::abort();  // a request went unanswered, or twice
  }
  io.poll();
  return 0;
}
