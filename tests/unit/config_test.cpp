// Tests for sluice::config: TOML file and command-line settings, defaults, and the error
// messages an operator sees (file, line, setting, what is allowed).
#include "sluice/config/settings.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#ifndef SLUICE_SOURCE_DIR
#error "SLUICE_SOURCE_DIR must name the repository root (a string literal)"
#endif

namespace {

namespace cfg = sluice::config;
using namespace std::chrono_literals;

/// A TOML file under the temp directory, removed when the test is done with it.
class TempToml {
 public:
  explicit TempToml(std::string_view content) {
    static int next_id = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("sluice_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(next_id++) +
             ".toml");
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempToml() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempToml(const TempToml&) = delete;
  TempToml& operator=(const TempToml&) = delete;

  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

/// Loads `content` on top of defaults; the test fails if it does not load.
cfg::Settings load_ok(std::string_view content) {
  TempToml file(content);
  cfg::Settings settings;
  const auto error = cfg::load_file(file.path(), settings);
  INFO((error ? error->to_string() : ""));
  CHECK_FALSE(error.has_value());
  return settings;
}

/// The error that loading `content` gives, with `path` set to the temp file's path.
cfg::ConfigError load_error(std::string_view content, std::string* path = nullptr) {
  TempToml file(content);
  if (path) *path = file.path();
  cfg::Settings settings;
  auto error = cfg::load_file(file.path(), settings);
  REQUIRE(error.has_value());
  return *error;
}

cfg::ConfigError flag_error(std::string_view name, std::string_view value) {
  cfg::Settings settings;
  auto error = cfg::apply_setting(settings, name, value);
  REQUIRE(error.has_value());
  return *error;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

void check_defaults(const cfg::Settings& s) {
  CHECK(s.listen_host == "127.0.0.1");
  CHECK(s.listen_port == 7450);
  CHECK(s.port_file.empty());
  CHECK(s.max_connections == 10000);
  CHECK(s.queues_auto_create);
  CHECK(s.max_connections_per_source == 1000);
  CHECK(s.shutdown_grace == 5s);
  CHECK(s.max_frame_bytes == 4u << 20);
  CHECK(s.max_payload_bytes == 1u << 20);
  CHECK(s.connection_outbound_bytes == 8u << 20);
  CHECK(s.frame_timeout == 30s);
  CHECK(s.memory == 512ull << 20);
  CHECK(s.max_queues == 10000);
  CHECK(s.handshake_timeout == 10s);
  CHECK(s.queue_defaults.max_messages == 1'000'000);
  CHECK(s.queue_defaults.max_bytes == 256ull << 20);
  CHECK(s.queue_defaults.high_watermark == 100);
  CHECK(s.queue_defaults.low_watermark == 80);
  CHECK(s.queue_defaults.overflow == cfg::Overflow::block);
  CHECK(s.queue_defaults.dispatch_rate == 0);
  CHECK(s.queue_defaults.max_in_flight == 0);
  CHECK(s.log_level == cfg::LogLevel::info);
  CHECK(s.queue_defaults.lease_timeout == 30s);
  CHECK(s.queue_defaults.max_consumer_in_flight == 10000);
  CHECK(s.queues.empty());
  CHECK(s.storage_path.empty());
  CHECK(s.storage_sync);
  CHECK(s.storage_max_size == 4ull << 30);
  CHECK_FALSE(s.storage_settle_commit);
  CHECK(s.queue_defaults.durability == cfg::Durability::memory);
}

}  // namespace

TEST_SUITE("config") {
  TEST_CASE("defaults are the documented ones and valid") {
    const cfg::Settings settings;
    check_defaults(settings);
    CHECK_FALSE(cfg::validate(settings).has_value());
    CHECK(cfg::to_string(cfg::LogLevel::trace) == "trace");
    CHECK(cfg::to_string(cfg::LogLevel::debug) == "debug");
    CHECK(cfg::to_string(cfg::LogLevel::info) == "info");
    CHECK(cfg::to_string(cfg::LogLevel::warn) == "warn");
    CHECK(cfg::to_string(cfg::LogLevel::error) == "error");
  }

  TEST_CASE("an empty file changes nothing") {
    check_defaults(load_ok(""));
  }

  TEST_CASE("every setting is read from the file") {
    const auto s = load_ok(R"(
[server]
listen = "[::1]:0"
port_file = "/tmp/sluiced.port"
max_connections = 250
shutdown_grace = "2m"

[limits]
max_frame_bytes = "8MiB"
max_payload_bytes = 2_000_000
connection_outbound_bytes = "1GiB"

[log]
level = "debug"

[queue_defaults]
lease_timeout = "1h"
max_consumer_in_flight = 64

[queues.orders]
lease_timeout = 2500
max_consumer_in_flight = 7

[queues."billing.v2"]
lease_timeout = "250ms"

[queues.audit]
)");
    CHECK(s.listen_host == "::1");
    CHECK(s.listen_port == 0);
    CHECK(s.port_file == "/tmp/sluiced.port");
    CHECK(s.max_connections == 250);
    CHECK(s.shutdown_grace == 2min);
    CHECK(s.max_frame_bytes == 8u << 20);
    CHECK(s.max_payload_bytes == 2'000'000);
    CHECK(s.connection_outbound_bytes == 1ull << 30);
    CHECK(s.log_level == cfg::LogLevel::debug);
    CHECK(s.queue_defaults.lease_timeout == 1h);
    CHECK(s.queue_defaults.max_consumer_in_flight == 64);
    // Declared in file order; keys left out come from [queue_defaults].
    REQUIRE(s.queues.size() == 3);
    CHECK(s.queues[0].name == "orders");
    CHECK(s.queues[0].settings.lease_timeout == 2500ms);
    CHECK(s.queues[0].settings.max_consumer_in_flight == 7);
    CHECK(s.queues[1].name == "billing.v2");
    CHECK(s.queues[1].settings.lease_timeout == 250ms);
    CHECK(s.queues[1].settings.max_consumer_in_flight == 64);
    CHECK(s.queues[2].name == "audit");
    CHECK(s.queues[2].settings.lease_timeout == 1h);
    CHECK_FALSE(cfg::validate(s).has_value());
  }

  TEST_CASE("queue_defaults apply to declared queues even when written after them") {
    const auto s = load_ok(R"(
[queues.late]
max_consumer_in_flight = 3
[queue_defaults]
lease_timeout = "45s"
)");
    REQUIRE(s.queues.size() == 1);
    CHECK(s.queues[0].settings.lease_timeout == 45s);
    CHECK(s.queues[0].settings.max_consumer_in_flight == 3);
  }

  TEST_CASE("duration and size forms") {
    CHECK(load_ok("[queue_defaults]\nlease_timeout = \"100ms\"").queue_defaults.lease_timeout ==
          100ms);
    CHECK(load_ok("[queue_defaults]\nlease_timeout = \"30s\"").queue_defaults.lease_timeout == 30s);
    CHECK(load_ok("[queue_defaults]\nlease_timeout = \"5m\"").queue_defaults.lease_timeout == 5min);
    CHECK(load_ok("[queue_defaults]\nlease_timeout = \"12h\"").queue_defaults.lease_timeout == 12h);
    CHECK(load_ok("[queue_defaults]\nlease_timeout = 1500").queue_defaults.lease_timeout == 1500ms);
    CHECK(load_ok("[server]\nshutdown_grace = 0").shutdown_grace == 0ms);
    CHECK(load_ok("[limits]\nmax_frame_bytes = \"64KiB\"").max_frame_bytes == 64 * 1024);
    CHECK(load_ok("[limits]\nmax_frame_bytes = \"64MiB\"").max_frame_bytes == 64u << 20);
    CHECK(load_ok("[limits]\nmax_frame_bytes = 5000").max_frame_bytes == 5000);
    CHECK(load_ok("[limits]\nmax_frame_bytes = \"5000\"").max_frame_bytes == 5000);
    CHECK(load_ok("[limits]\nconnection_outbound_bytes = \"1GiB\"").connection_outbound_bytes ==
          1ull << 30);
  }

  TEST_CASE("the example file loads and documents every setting with its default") {
    const std::string path = SLUICE_SOURCE_DIR "/config/sluiced.example.toml";
    cfg::Settings settings;
    const auto error = cfg::load_file(path, settings);
    INFO((error ? error->to_string() : ""));
    REQUIRE_FALSE(error.has_value());
    check_defaults(settings);

    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    for (const char* key : {"listen =",
                            "port_file =",
                            "max_connections =",
                            "max_connections_per_source =",
                            "cert_file =",
                            "key_file =",
                            "[tokens.",
                            "shutdown_grace =",
                            "max_frame_bytes =",
                            "max_payload_bytes =",
                            "connection_outbound_bytes =",
                            "max_pending_publishes =",
                            "max_headers =",
                            "max_header_bytes =",
                            "frame_timeout =",
                            "handshake_timeout =",
                            "max_queues =",
                            "auto_create =",
                            "memory =",
                            "level =",
                            "lease_timeout =",
                            "max_consumer_in_flight =",
                            "max_messages =",
                            "max_bytes =",
                            "high_watermark =",
                            "low_watermark =",
                            "overflow =",
                            "dispatch_rate =",
                            "dispatch_burst =",
                            "max_consumer_rate =",
                            "ingress_rate =",
                            "ingress_burst =",
                            "max_in_flight =",
                            "key_header =",
                            "key_rate =",
                            "key_burst =",
                            "[queues.",
                            "[triggers.",
                            "# queue =",
                            "# url =",
                            "# method =",
                            "# headers =",
                            "# timeout =",
                            "# max_concurrency =",
                            "# concurrency =",
                            "# min_concurrency =",
                            "# batch_size =",
                            "# batch_window =",
                            "# batch_max_bytes =",
                            "# body =",
                            "# signing_secret_file =",
                            "# ca_file =",
                            "# verify =",
                            "# dead_letter_on =",
                            "# breaker_window =",
                            "# breaker_failure_ratio =",
                            "# breaker_min_calls =",
                            "# breaker_consecutive =",
                            "# breaker_open_for =",
                            "# breaker_open_max =",
                            "# breaker_probes ="}) {
      INFO(key);
      CHECK(contains(text.str(), key));
    }
  }

  TEST_CASE("an unknown key names file, line, setting and the known keys") {
    std::string path;
    const auto error = load_error("[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n", &path);
    CHECK(error.file == path);
    CHECK(error.line == 3);
    CHECK(error.setting == "server.listn");
    CHECK(contains(error.problem, "unknown setting"));
    CHECK(contains(error.problem, "did you mean listen?"));
    CHECK(
        contains(error.allowed,
                 "listen, port_file, max_connections, max_connections_per_source, shutdown_grace"));
    const std::string line = error.to_string();
    CHECK(line.starts_with(path + ":3: server.listn: unknown setting"));
    CHECK(contains(line, "(allowed: keys in [server]: listen,"));
  }

  TEST_CASE("unknown tables and keys outside any table are rejected") {
    auto error = load_error("\n[servr]\nlisten = \"127.0.0.1:1\"\n");
    CHECK(error.line == 2);
    CHECK(error.setting == "servr");
    CHECK(contains(error.problem, "unknown table; did you mean server?"));
    CHECK(contains(error.allowed, "[queue_defaults]"));

    error = load_error("level = \"debug\"\n[log]\n");
    CHECK(error.line == 1);
    CHECK(error.setting == "level");
    CHECK(contains(error.problem, "under [log]"));

    error = load_error("[queues.orders]\nlease_timeot = \"1s\"\n");
    CHECK(error.line == 2);
    CHECK(error.setting == "queues.orders.lease_timeot");
    CHECK(contains(error.allowed, "lease_timeout, max_consumer_in_flight"));
  }

  TEST_CASE("a wrong TOML type names the expected type") {
    auto error = load_error("[server]\nmax_connections = \"100\"\n");
    CHECK(error.line == 2);
    CHECK(error.setting == "server.max_connections");
    CHECK(error.problem == "expected an integer, got a string (\"100\")");
    CHECK(error.allowed == "an integer from 1 to 1000000");

    error = load_error("[queue_defaults]\nlease_timeout = 1.5\n");
    CHECK(error.problem == "expected a duration, got a float (1.5)");
    CHECK(contains(error.allowed, "from 100ms to 12h"));

    error = load_error("[server]\nlisten = 7450\n");
    CHECK(contains(error.problem, "expected a string \"host:port\", got an integer (7450)"));

    error = load_error("[log]\nlevel = true\n");
    CHECK(error.problem == "expected a string, got a boolean (true)");

    error = load_error("[limits]\nmax_frame_bytes = [1, 2]\n");
    CHECK(error.problem == "expected a size, got an array");

    error = load_error("server = 5\n");
    CHECK(error.setting == "server");
    CHECK(contains(error.problem, "expected a table, got an integer (5)"));

    error = load_error("[queues]\norders = \"x\"\n");
    CHECK(error.setting == "queues.orders");
    CHECK(contains(error.problem, "expected a table"));
  }

  TEST_CASE("out-of-range values name the bound and the allowed range") {
    auto error = load_error("[queue_defaults]\n\nlease_timeout = \"50ms\"\n");
    CHECK(error.line == 3);
    CHECK(error.setting == "queue_defaults.lease_timeout");
    CHECK(error.problem == "50ms is below the minimum of 100ms");
    CHECK(contains(error.allowed, "\"30s\""));
    CHECK(contains(error.allowed, "from 100ms to 12h"));

    error = load_error("[queues.orders]\nlease_timeout = \"13h\"\n");
    CHECK(error.setting == "queues.orders.lease_timeout");
    CHECK(error.problem == "13h is above the maximum of 12h");

    error = load_error("[server]\nmax_connections = 0\n");
    CHECK(error.problem == "0 is below the minimum of 1");

    error = load_error("[server]\nmax_connections = -3\n");
    CHECK(error.problem == "-3 is below the minimum of 1");

    error = load_error("[server]\nshutdown_grace = \"11m\"\n");
    CHECK(error.problem == "11m is above the maximum of 10m");

    error = load_error("[limits]\nmax_frame_bytes = 1024\n");
    CHECK(error.problem == "1KiB is below the minimum of 4KiB");
    CHECK(contains(error.allowed, "from 4KiB to 64MiB"));
    CHECK(contains(error.allowed, "KiB, MiB and GiB only"));

    error = load_error("[limits]\nconnection_outbound_bytes = \"2GiB\"\n");
    CHECK(error.problem == "2GiB is above the maximum of 1GiB");

    error = load_error("[limits]\nmax_payload_bytes = \"64MiB\"\n");
    CHECK(contains(error.problem, "above the maximum of limits.max_frame_bytes minus 64KiB"));

    error = load_error("[queues.a]\nmax_consumer_in_flight = 1000001\n");
    CHECK(error.problem == "1000001 is above the maximum of 1000000");

    // Too large to hold in 64 bits is still "above the maximum", not malformed.
    error = load_error("[queue_defaults]\nlease_timeout = \"99999999999999999999999h\"\n");
    CHECK(contains(error.problem, "is above the maximum of 12h"));
  }

  TEST_CASE("malformed durations, sizes, endpoints and levels") {
    auto error = load_error("[queue_defaults]\nlease_timeout = \"30 parsecs\"\n");
    CHECK(error.problem == "expected a duration, got \"30 parsecs\"");
    CHECK(contains(error.allowed, "\"500ms\", \"30s\", \"5m\" or \"1h\""));

    for (const char* bad :
         {"\"\"", "\"s\"", "\"1.5s\"", "\"-5s\"", "\"5 s\"", "\"5S\"", "\"5min\"", "\"1__0s\""}) {
      INFO(bad);
      error = load_error(std::string("[queue_defaults]\nlease_timeout = ") + bad + "\n");
      CHECK(error.problem.starts_with("expected a duration, got "));
    }

    error = load_error("[limits]\nmax_frame_bytes = \"4MB\"\n");
    CHECK(contains(error.problem, "expected a size, got \"4MB\""));
    CHECK(contains(error.problem, "use KiB, MiB or GiB"));
    error = load_error("[limits]\nmax_frame_bytes = \"4 MiB\"\n");
    CHECK(error.problem == "expected a size, got \"4 MiB\"");
    error = load_error("[limits]\nmax_frame_bytes = \"4mib\"\n");
    CHECK(error.problem == "expected a size, got \"4mib\"");

    error = load_error("[server]\nlisten = \"example.com:80\"\n");
    CHECK(error.setting == "server.listen");
    CHECK(error.problem == "expected \"host:port\", got \"example.com:80\"");
    CHECK(contains(error.allowed, "[IPv6 address]"));

    error = load_error("[log]\nlevel = \"verbose\"\n");
    CHECK(error.problem == "unknown log level \"verbose\"");
    CHECK(error.allowed == "one of \"trace\", \"debug\", \"info\", \"warn\", \"error\"");

    error = load_error("[queues.\"bad name\"]\n");
    CHECK(error.setting == "queues.bad name");
    CHECK(error.problem == "invalid queue name \"bad name\"");
    CHECK(contains(error.allowed, "1 to 200 characters"));

    // A URL path normaliser would change these: HTTP could never reach them.
    for (const char* name : {".", ".."}) {
      CAPTURE(name);
      error = load_error(std::string("[queues.\"") + name + "\"]\n");
      CHECK(error.problem == std::string("invalid queue name \"") + name + "\"");
      CHECK(contains(error.allowed, "not \".\" or \"..\""));
    }
  }

  TEST_CASE("the first problem in file order is reported and nothing is applied") {
    TempToml file(R"(
[server]
max_connections = 5
[limits]
max_frame_bytes = "1x"
[log]
level = "loud"
)");
    cfg::Settings settings;
    const auto error = cfg::load_file(file.path(), settings);
    REQUIRE(error.has_value());
    CHECK(error->setting == "limits.max_frame_bytes");
    CHECK(error->line == 5);
    check_defaults(settings);
  }

  TEST_CASE("a TOML syntax error names the file and line") {
    std::string path;
    const auto error =
        load_error("[server]\nmax_connections = 10\nlisten = \"127.0.0.1:1\n", &path);
    CHECK(error.file == path);
    CHECK(error.line == 3);
    CHECK(contains(error.problem, "TOML syntax error"));
    CHECK(contains(error.allowed, "TOML"));
    CHECK(error.to_string().starts_with(path + ":3: TOML syntax error at column "));

    CHECK(load_error("[server]\nmax_connections = 1\nmax_connections = 2\n").line == 3);
  }

  TEST_CASE("a missing or unreadable file") {
    const std::string missing =
        (std::filesystem::temp_directory_path() / "sluice_config_test_does_not_exist.toml")
            .string();
    cfg::Settings settings;
    auto error = cfg::load_file(missing, settings);
    REQUIRE(error.has_value());
    CHECK(error->file == missing);
    CHECK(error->line == 0);
    CHECK(contains(error->problem, "No such file or directory"));
    CHECK(error->to_string().starts_with(missing + ": cannot read the config file"));

    const std::string directory = std::filesystem::temp_directory_path().string();
    error = cfg::load_file(directory, settings);
    REQUIRE(error.has_value());
    CHECK(contains(error->problem, "directory"));
    check_defaults(settings);
  }

  TEST_CASE("command-line settings use the file's rules") {
    cfg::Settings s;
    CHECK_FALSE(cfg::apply_setting(s, "server.listen", "0.0.0.0:9000"));
    CHECK_FALSE(cfg::apply_setting(s, "server.port_file", "/run/sluiced.port"));
    CHECK_FALSE(cfg::apply_setting(s, "server.max_connections", "12_000"));
    CHECK_FALSE(cfg::apply_setting(s, "server.shutdown_grace", "1500"));
    CHECK_FALSE(cfg::apply_setting(s, "limits.max_frame_bytes", "16MiB"));
    CHECK_FALSE(cfg::apply_setting(s, "limits.max_payload_bytes", "65536"));
    CHECK_FALSE(cfg::apply_setting(s, "limits.connection_outbound_bytes", "512KiB"));
    CHECK_FALSE(cfg::apply_setting(s, "log.level", "warn"));
    CHECK_FALSE(cfg::apply_setting(s, "queue_defaults.lease_timeout", "10s"));
    CHECK_FALSE(cfg::apply_setting(s, "queue_defaults.max_consumer_in_flight", "99"));
    CHECK_FALSE(cfg::apply_setting(s, "queues.orders.lease_timeout", "2m"));
    CHECK_FALSE(cfg::apply_setting(s, "queues.billing.v2.max_consumer_in_flight", "5"));
    CHECK_FALSE(cfg::apply_setting(s, "queues.orders.max_consumer_in_flight", "8"));
    CHECK(s.listen_host == "0.0.0.0");
    CHECK(s.listen_port == 9000);
    CHECK(s.port_file == "/run/sluiced.port");
    CHECK(s.max_connections == 12000);
    CHECK(s.shutdown_grace == 1500ms);
    CHECK(s.max_frame_bytes == 16u << 20);
    CHECK(s.max_payload_bytes == 65536);
    CHECK(s.connection_outbound_bytes == 512 * 1024);
    CHECK(s.log_level == cfg::LogLevel::warn);
    CHECK(s.queue_defaults.lease_timeout == 10s);
    CHECK(s.queue_defaults.max_consumer_in_flight == 99);
    REQUIRE(s.queues.size() == 2);
    CHECK(s.queues[0].name == "orders");
    CHECK(s.queues[0].settings.lease_timeout == 2min);
    CHECK(s.queues[0].settings.max_consumer_in_flight == 8);
    CHECK(s.queues[1].name == "billing.v2");
    CHECK(s.queues[1].settings.lease_timeout == 10s);
    CHECK(s.queues[1].settings.max_consumer_in_flight == 5);
    CHECK_FALSE(cfg::validate(s).has_value());
  }

  TEST_CASE("command-line settings override the file") {
    auto s =
        load_ok("[server]\nlisten = \"127.0.0.1:1\"\n[queues.orders]\nlease_timeout = \"1s\"\n");
    CHECK_FALSE(cfg::apply_setting(s, "server.listen", "[::]:0"));
    CHECK_FALSE(cfg::apply_setting(s, "queues.orders.lease_timeout", "3s"));
    CHECK(s.listen_host == "::");
    CHECK(s.listen_port == 0);
    REQUIRE(s.queues.size() == 1);
    CHECK(s.queues[0].settings.lease_timeout == 3s);
  }

  TEST_CASE("command-line errors name the flag and what is allowed") {
    auto error = flag_error("server.max_connections", "lots");
    CHECK(error.file == "command line");
    CHECK(error.line == 0);
    CHECK(error.setting == "server.max_connections");
    CHECK(error.problem == "expected an integer, got \"lots\"");
    CHECK(error.to_string() ==
          "command line: server.max_connections: expected an integer, got \"lots\" (allowed: an "
          "integer from 1 to 1000000)");

    error = flag_error("server.max_connections", "-1");
    CHECK(error.problem == "-1 is below the minimum of 1");

    error = flag_error("queue_defaults.lease_timeout", "30 parsecs");
    CHECK(error.problem == "expected a duration, got \"30 parsecs\"");

    error = flag_error("limits.max_frame_bytes", "4GB");
    CHECK(contains(error.problem, "decimal units"));

    error = flag_error("server.lisen", "127.0.0.1:1");
    CHECK(contains(error.problem, "did you mean server.listen?"));
    CHECK(contains(error.allowed, "server.listen"));
    CHECK(contains(error.allowed, "queues.NAME.lease_timeout"));

    error = flag_error("verbose", "1");
    CHECK(contains(error.problem, "unknown setting"));

    error = flag_error("queues.lease_timeout", "1s");
    CHECK(error.problem == "expected queues.NAME.SETTING");
    CHECK(contains(error.allowed, "queues.NAME.lease_timeout"));

    error = flag_error("queues.orders.lease_timout", "1s");
    CHECK(contains(error.problem, "did you mean queues.orders.lease_timeout?"));

    error = flag_error("queues.bad/name.lease_timeout", "1s");
    CHECK(error.problem == "invalid queue name \"bad/name\"");

    error = flag_error("queue_defaults.x.lease_timeout", "1s");
    CHECK(contains(error.problem, "unknown setting"));

    error = flag_error("server.listen", "::1:7450");
    CHECK(contains(error.problem, "an IPv6 address needs brackets"));

    error = flag_error("server.listen", "127.0.0.1:70000");
    CHECK(error.problem == "expected \"host:port\", got \"127.0.0.1:70000\"");

    // A rejected value must not declare the queue.
    cfg::Settings s;
    CHECK(cfg::apply_setting(s, "queues.orders.lease_timeout", "1ms"));
    CHECK(s.queues.empty());
  }

  TEST_CASE("validate checks what single settings cannot") {
    cfg::Settings s;
    s.max_payload_bytes = s.max_frame_bytes - 65536;
    CHECK_FALSE(cfg::validate(s).has_value());

    s.max_payload_bytes = s.max_frame_bytes - 65535;
    auto error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(error->file.empty());
    CHECK(error->line == 0);
    CHECK(error->setting == "limits.max_payload_bytes");
    CHECK(contains(error->problem, "does not fit in a frame of 4MiB"));
    CHECK(contains(error->allowed, "at most limits.max_frame_bytes minus 64KiB, here 4032KiB"));
    CHECK(error->to_string().starts_with("limits.max_payload_bytes: "));

    // A frame limit at or below the header room leaves no payload size valid.
    s = {};
    CHECK_FALSE(cfg::apply_setting(s, "limits.max_frame_bytes", "64KiB"));
    CHECK_FALSE(cfg::apply_setting(s, "limits.max_payload_bytes", "1"));
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(contains(error->allowed, "here 0 bytes"));

    s = {};
    s.queues.push_back({"orders", {}});
    s.queues.push_back({"orders", {}});
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(error->setting == "queues.orders");
    CHECK(contains(error->problem, "declared twice"));

    s = {};
    s.queues.push_back({"", {}});
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(contains(error->problem, "invalid queue name"));

    s = {};
    s.queues.push_back({std::string(201, 'q'), {}});
    CHECK(cfg::validate(s).has_value());
    s.queues.back().name = std::string(200, 'q');
    CHECK_FALSE(cfg::validate(s).has_value());

    // Values set in code get the same range checks as the file.
    s = {};
    s.queues.push_back({"orders", {}});
    s.queues.back().settings.lease_timeout = -5ms;
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(error->setting == "queues.orders.lease_timeout");
    CHECK(error->problem == "-5ms is below the minimum of 100ms");

    s = {};
    s.max_connections = 0;
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(error->setting == "server.max_connections");

    s = {};
    s.queue_defaults.max_consumer_in_flight = 2'000'000;
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(error->setting == "queue_defaults.max_consumer_in_flight");

    s = {};
    s.listen_host = "not a host";
    error = cfg::validate(s);
    REQUIRE(error.has_value());
    CHECK(error->setting == "server.listen");
  }

  TEST_CASE("parse_endpoint") {
    std::string host;
    uint16_t port = 0;
    CHECK(cfg::parse_endpoint("127.0.0.1:7450", host, port));
    CHECK(host == "127.0.0.1");
    CHECK(port == 7450);
    CHECK(cfg::parse_endpoint("[::1]:65535", host, port));
    CHECK(host == "::1");
    CHECK(port == 65535);
    CHECK(cfg::parse_endpoint("localhost:0", host, port));
    CHECK(host == "localhost");
    CHECK(port == 0);
    CHECK(cfg::parse_endpoint("[::ffff:10.0.0.1]:1", host, port));
    CHECK(host == "::ffff:10.0.0.1");

    host = "unchanged";
    port = 1;
    for (const char* bad :
         {"", "127.0.0.1", "127.0.0.1:", ":7450", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+1",
          "127.0.0.1:99999999999", "::1:7450", "[::1]7450", "[::1:7450", "[]:1", "[127.0.0.1]:1",
          "256.0.0.1:1", "1.2.3:1", "example.com:1", "127.0.0.1:74 50"}) {
      INFO(bad);
      CHECK_FALSE(cfg::parse_endpoint(bad, host, port));
    }
    CHECK(host == "unchanged");
    CHECK(port == 1);
    CHECK_FALSE(cfg::parse_endpoint(std::string_view("127.0.0.1\0:1", 12), host, port));
  }

  TEST_CASE("ConfigError::to_string is one line and leaves out empty parts") {
    cfg::ConfigError error{"a.toml", 7, "server.listen", "bad", "good"};
    CHECK(error.to_string() == "a.toml:7: server.listen: bad (allowed: good)");
    error.line = 0;
    CHECK(error.to_string() == "a.toml: server.listen: bad (allowed: good)");
    error.allowed.clear();
    error.setting.clear();
    CHECK(error.to_string() == "a.toml: bad");

    const auto from_file = load_error("[queues.\"a\\nb\"]\n");
    CHECK(from_file.to_string().find('\n') == std::string::npos);
    CHECK(contains(from_file.to_string(), "queues.a\\x0ab"));
  }

  TEST_CASE("flow control settings: rates, overflow, watermarks, memory") {
    const auto s = load_ok(R"(
[limits]
memory = "64MiB"
[queue_defaults]
dispatch_rate = 50
ingress_rate = 0.5
max_consumer_rate = "1000/s"
overflow = "reject"
max_in_flight = 8
key_header = "tenant"
key_rate = 50
[queues.slow]
dispatch_rate = "0.1"
high_watermark = 90
low_watermark = 10
)");
    CHECK(s.memory == 64u << 20);
    CHECK(s.queue_defaults.dispatch_rate == 50'000);
    CHECK(s.queue_defaults.ingress_rate == 500);
    CHECK(s.queue_defaults.max_consumer_rate == 1'000'000);
    CHECK(s.queue_defaults.overflow == cfg::Overflow::reject);
    CHECK(s.queue_defaults.max_in_flight == 8);
    CHECK(s.queue_defaults.key_header == "tenant");
    CHECK(s.queue_defaults.key_rate == 50'000);
    REQUIRE(s.queues.size() == 1);
    CHECK(s.queues[0].settings.dispatch_rate == 100);
    CHECK(s.queues[0].settings.overflow == cfg::Overflow::reject);  // from the defaults
    CHECK(s.queues[0].settings.high_watermark == 90);

    cfg::Settings flags;
    CHECK_FALSE(cfg::apply_setting(flags, "queues.q.dispatch_rate", "12.5"));
    CHECK_FALSE(cfg::apply_setting(flags, "queues.q.overflow", "reject"));
    REQUIRE(flags.queues.size() == 1);
    CHECK(flags.queues[0].settings.dispatch_rate == 12'500);

    auto error = load_error("[queue_defaults]\ndispatch_rate = 0.05\n");
    CHECK(error.line == 2);
    CHECK(contains(error.problem, "below the minimum of 0.1/s"));
    error = load_error("[queue_defaults]\ndispatch_rate = \"1.2345\"\n");
    CHECK(contains(error.problem, "expected a rate"));
    CHECK(contains(error.allowed, "from 0.1/s to 1000000/s"));
    error = load_error("[queue_defaults]\ningress_rate = 2000000\n");
    CHECK(contains(error.problem, "above the maximum of 1000000/s"));
    error = load_error("[queue_defaults]\noverflow = \"drop\"\n");
    CHECK(contains(error.problem, "unknown overflow policy"));
    CHECK(contains(error.allowed, "\"block\""));

    error = load_error("[queue_defaults]\nlow_watermark = 0\n");
    CHECK(contains(error.problem, "below the minimum of 1"));

    cfg::Settings bad;
    bad.queue_defaults.low_watermark = 90;
    bad.queue_defaults.high_watermark = 90;
    auto invalid = cfg::validate(bad);
    REQUIRE(invalid.has_value());
    CHECK(invalid->setting == "queue_defaults.low_watermark");
  }

  TEST_CASE("storage settings and durable queues") {
    const auto s = load_ok(R"(
[storage]
path = "/var/lib/sluice"
sync = "nosync"
max_size = "64GiB"
settle = "commit"
[queues.orders]
durability = "durable"
)");
    CHECK(s.storage_path == "/var/lib/sluice");
    CHECK(s.storage_settle_commit);
    CHECK_FALSE(s.storage_sync);
    CHECK(s.storage_max_size == 64ull << 30);
    REQUIRE(s.queues.size() == 1);
    CHECK(s.queues[0].settings.durability == cfg::Durability::durable);
    CHECK_FALSE(cfg::validate(s).has_value());

    auto settle = load_error("[storage]\nsettle = \"later\"\n");
    CHECK(settle.setting == "storage.settle");
    CHECK(contains(settle.allowed, "commit"));
    auto error = load_error("[storage]\nsync = \"sometimes\"\n");
    CHECK(error.setting == "storage.sync");
    CHECK(contains(error.problem, "unknown value \"sometimes\""));
    CHECK(contains(error.allowed, "one of \"fsync\", \"nosync\""));
    error = flag_error("queues.q.durability", "disk");
    CHECK(contains(error.allowed, "\"memory\", \"durable\""));
    error = load_error("[storage]\nmax_size = \"512KiB\"\n");
    CHECK(contains(error.problem, "below the minimum of 1MiB"));

    // Left out, storage.path is $STATE_DIRECTORY's first directory, else ./sluice-data;
    // given (even ""), it stays.
    {
      cfg::Settings bare;
      ::unsetenv("STATE_DIRECTORY");
      cfg::resolve_defaults(bare);
      CHECK(bare.storage_path == (std::filesystem::current_path() / "sluice-data").string());
      cfg::Settings systemd;
      ::setenv("STATE_DIRECTORY", "/var/lib/sluice:/var/lib/other", 1);
      cfg::resolve_defaults(systemd);
      CHECK(systemd.storage_path == "/var/lib/sluice");
      cfg::Settings memory;
      REQUIRE_FALSE(cfg::apply_setting(memory, "storage.path", ""));
      cfg::resolve_defaults(memory);
      CHECK(memory.storage_path.empty());
      ::unsetenv("STATE_DIRECTORY");
    }

    // A durable queue needs a data directory.
    cfg::Settings no_path;
    REQUIRE_FALSE(cfg::apply_setting(no_path, "queues.orders.durability", "durable"));
    auto invalid = cfg::validate(no_path);
    REQUIRE(invalid.has_value());
    CHECK(invalid->setting == "queues.orders.durability");
    CHECK(contains(invalid->problem, "storage.path is \"\" (memory only)"));
    cfg::Settings defaults_durable;
    defaults_durable.queue_defaults.durability = cfg::Durability::durable;
    invalid = cfg::validate(defaults_durable);
    REQUIRE(invalid.has_value());
    CHECK(invalid->setting == "queue_defaults.durability");
  }

  TEST_CASE("http settings: listener, limits, and a clash with the protocol listener") {
    const auto s = load_ok(R"(
[http]
enabled = "on"
listen = "0.0.0.0:8080"
max_body_bytes = "1MiB"
max_connections = 50
idle_timeout = "5s"
max_wait = "1m"
)");
    CHECK(s.http_enabled);
    CHECK(s.http_host == "0.0.0.0");
    CHECK(s.http_port == 8080);
    CHECK(s.http_max_body_bytes == 1u << 20);
    CHECK(s.http_max_connections == 50);
    CHECK(s.http_idle_timeout == 5s);
    CHECK(s.http_max_wait == 1min);
    const cfg::Settings defaults;
    CHECK(defaults.http_enabled);
    CHECK(defaults.http_port == 7451);
    CHECK_FALSE(load_ok("[http]\nenabled = \"off\"").http_enabled);
    CHECK(contains(flag_error("http.max_wait", "6m").problem, "6m"));
    CHECK(contains(flag_error("http.enabled", "maybe").problem, "maybe"));
    cfg::Settings clash;
    REQUIRE_FALSE(cfg::apply_setting(clash, "http.listen", "127.0.0.1:7450"));
    const auto error = cfg::validate(clash);
    REQUIRE(error);
    CHECK(error->setting == "http.listen");
    REQUIRE_FALSE(cfg::apply_setting(clash, "http.enabled", "off"));
    CHECK_FALSE(cfg::validate(clash));
  }

  TEST_CASE("config files are ASCII, other characters go in strings as escapes") {
    // Found by fuzzing: non-ASCII bytes reach undefined behaviour inside toml++ 3.3.
    auto error = load_error("[queue_]\nlist\xd1\x9an = \"x\"\n");
    CHECK(error.line == 2);
    CHECK(contains(error.problem, "non-ASCII byte at column 5"));
    CHECK(contains(error.allowed, "\\uXXXX"));
    error = load_error("# caf\xc3\xa9\n[server]\n");
    CHECK(error.line == 1);
    error = load_error("[server]\nlisttes =-\"Q\xc3\xa1'''Bes = es =-\"");
    CHECK(error.line == 2);
    const auto s = load_ok("[server]\nport_file = \"/tmp/\\u00e9t\\u00e9.port\"\n");
    CHECK(s.port_file == "/tmp/\xc3\xa9t\xc3\xa9.port");
  }
}

TEST_SUITE("config: security") {
  constexpr std::string_view kHash =
      "sha256:00112233445566778899aabbccddeeff:"
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

  TEST_CASE("tokens are read from [tokens.NAME] tables, in file order") {
    const auto s =
        load_ok(std::string("[tokens.writer]\nhash = \"") + std::string(kHash) +
                "\"\npublish = [\"orders.*\", \"audit\"]\n"
                "[tokens.ops]\nhash = \"" +
                std::string(kHash).replace(7, 1, "1") + "\"\nadmin = [\"*\"]\nmetrics = \"on\"\n");
    REQUIRE(s.tokens.size() == 2);
    CHECK(s.tokens[0].name == "writer");
    CHECK(s.tokens[0].publish == std::vector<std::string>{"orders.*", "audit"});
    CHECK(s.tokens[0].consume.empty());
    CHECK_FALSE(s.tokens[0].metrics);
    CHECK(s.tokens[1].name == "ops");
    CHECK(s.tokens[1].admin == std::vector<std::string>{"*"});
    CHECK(s.tokens[1].metrics);
    CHECK_FALSE(cfg::validate(s));
  }

  TEST_CASE("bad tokens are refused with the setting named, and a token is never echoed") {
    auto error = load_error("[tokens.t]\nhash = \"sluice_0123456789abcdef0123456789abcdef\"\n");
    CHECK(error.setting == "tokens.t.hash");
    CHECK(contains(error.problem, "looks like a token"));
    CHECK_FALSE(contains(error.problem, "0123456789abcdef"));
    error = load_error("[tokens.t]\nhash = \"md5:abc\"\n");
    CHECK(contains(error.problem, "not a token hash"));
    error = load_error(std::string("[tokens.t]\nhash = \"") + std::string(kHash) +
                       "\"\npublish = [\"bad name!\"]\n");
    CHECK(error.setting == "tokens.t.publish");
    CHECK(contains(error.problem, "bad name!"));
    error = load_error(std::string("[tokens.t]\nhash = \"") + std::string(kHash) +
                       "\"\nconsume = [1, 2]\n");
    CHECK(contains(error.problem, "array of strings"));
    error = load_error("[tokens.\"a b\"]\npublish = [\"q\"]\n");
    CHECK(contains(error.problem, "invalid token name"));
    error = load_error("[tokens.t]\nread = [\"q\"]\n");
    CHECK(error.setting == "tokens.t.read");
    // A token pasted where a table or a list belongs is not echoed either.
    for (const char* text : {"[tokens]\nprod = \"sluice_0123456789abcdef\"\n",
                             "tokens = \"sluice_0123456789abcdef\"\n",
                             "[tokens.t]\npublish = \"sluice_0123456789abcdef\"\n"}) {
      error = load_error(text);
      CHECK_FALSE(contains(error.to_string(), "0123456789abcdef"));
    }

    cfg::Settings s;
    REQUIRE_FALSE(cfg::apply_setting(s, "tokens.t.publish", "orders.*,audit"));
    auto problem = cfg::validate(s);
    REQUIRE(problem);  // no hash yet
    CHECK(problem->setting == "tokens.t.hash");
    REQUIRE_FALSE(cfg::apply_setting(s, "tokens.t.hash", kHash));
    CHECK_FALSE(cfg::validate(s));
    CHECK(s.tokens[0].publish == std::vector<std::string>{"orders.*", "audit"});
    cfg::Settings idle;
    REQUIRE_FALSE(cfg::apply_setting(idle, "tokens.idle.hash", kHash));
    problem = cfg::validate(idle);
    REQUIRE(problem);
    CHECK(contains(problem->problem, "may do nothing"));
  }

  TEST_CASE("tls needs both files") {
    const auto s = load_ok(
        "[tls]\ncert_file = \"/etc/sluice/cert.pem\"\n"
        "key_file = \"/etc/sluice/key.pem\"\n");
    CHECK(s.tls_cert_file == "/etc/sluice/cert.pem");
    CHECK_FALSE(cfg::validate(s));
    cfg::Settings half;
    REQUIRE_FALSE(cfg::apply_setting(half, "tls.cert_file", "/x.pem"));
    const auto problem = cfg::validate(half);
    REQUIRE(problem);
    CHECK(problem->setting == "tls.key_file");
  }

  TEST_CASE("queue-name patterns") {
    CHECK(cfg::pattern_matches("orders", "orders"));
    CHECK_FALSE(cfg::pattern_matches("orders", "orders.eu"));
    CHECK(cfg::pattern_matches("orders.*", "orders.eu"));
    CHECK(cfg::pattern_matches("orders.*", "orders."));
    CHECK_FALSE(cfg::pattern_matches("orders.*", "orders"));
    CHECK_FALSE(cfg::pattern_matches("orders.*", "billing"));
    CHECK(cfg::pattern_matches("*", "billing"));
    CHECK(cfg::pattern_matches("*.dlq", "a.b.dlq"));
    CHECK(cfg::pattern_matches("a*b*c", "aXXbYYbc"));
    CHECK_FALSE(cfg::pattern_matches("a*b*c", "aXXbYYb"));
    // Only a pattern of stars matches the name "*" (the broker-wide admin right).
    CHECK(cfg::pattern_matches("*", "*"));
    CHECK(cfg::pattern_matches("**", "*"));
    CHECK_FALSE(cfg::pattern_matches("orders*", "*"));
    CHECK_FALSE(cfg::pattern_matches("*.x", "*"));
  }

  TEST_CASE("loopback hosts") {
    CHECK(cfg::is_loopback_host("127.0.0.1"));
    CHECK(cfg::is_loopback_host("127.9.9.9"));
    CHECK(cfg::is_loopback_host("localhost"));
    CHECK(cfg::is_loopback_host("::1"));
    CHECK(cfg::is_loopback_host("0:0:0:0:0:0:0:1"));
    CHECK_FALSE(cfg::is_loopback_host("0.0.0.0"));
    CHECK_FALSE(cfg::is_loopback_host("::"));
    CHECK_FALSE(cfg::is_loopback_host("10.0.0.1"));
    CHECK_FALSE(cfg::is_loopback_host(std::string_view("127.0.0.1\0x", 11)));
  }
}

TEST_SUITE("config: triggers") {
  TEST_CASE("[triggers.NAME] tables are read in file order with their defaults") {
    const auto s = load_ok(R"(
[triggers.resize]
queue = "images"
url = "https://fn.example:8443/resize?v=2"
method = "PUT"
headers = ["Authorization: Bearer abc", "X-Env: prod"]
timeout = "5s"
max_concurrency = 8
batch_size = 10
batch_window = "50ms"
batch_max_bytes = "1MiB"
body = "json"
signing_secret_file = "/etc/sluice/resize.secret"
ca_file = "/etc/ssl/ca.pem"
verify = "off"
dead_letter_on = [400, 422]

[triggers.audit]
queue = "audit"
url = "http://127.0.0.1:9000/"
)");
    REQUIRE(s.triggers.size() == 2);
    const auto& t = s.triggers[0];
    CHECK(t.name == "resize");
    CHECK(t.queue == "images");
    CHECK(t.url == "https://fn.example:8443/resize?v=2");
    CHECK(t.method == "PUT");
    CHECK(t.headers == std::vector<std::string>{"Authorization: Bearer abc", "X-Env: prod"});
    CHECK(t.timeout == std::chrono::seconds(5));
    CHECK(t.max_concurrency == 8);
    CHECK(t.batch_size == 10);
    CHECK(t.batch_window == std::chrono::milliseconds(50));
    CHECK(t.batch_max_bytes == 1u << 20);
    CHECK(t.body_json);
    CHECK(t.signing_secret_file == "/etc/sluice/resize.secret");
    CHECK(t.ca_file == "/etc/ssl/ca.pem");
    CHECK_FALSE(t.verify);
    CHECK(t.dead_letter_on == std::vector<uint32_t>{400, 422});
    const auto& d = s.triggers[1];
    CHECK(d.name == "audit");
    CHECK(d.method == "POST");
    CHECK(d.timeout == std::chrono::seconds(30));
    CHECK(d.max_concurrency == 10);
    CHECK(d.batch_size == 1);
    CHECK_FALSE(d.body_json);
    CHECK(d.verify);
    CHECK_FALSE(cfg::validate(s));
  }

  TEST_CASE("bad trigger settings name the setting and what is allowed") {
    auto error = load_error("[triggers.t]\nqueue = \"q\"\nurl = \"ftp://x/\"\n");
    CHECK(error.setting == "triggers.t.url");
    CHECK(contains(error.allowed, "https://"));
    CHECK(error.line == 3);
    error = load_error("[triggers.t]\nqueue = \"q\"\nurl = \"http://h/\"\nmax_concurency = 3\n");
    CHECK(contains(error.problem, "did you mean max_concurrency"));
    error = load_error("[triggers.t]\nqueue = \"q\"\nurl = \"http://h/\"\nbatch_size = 1001\n");
    CHECK(contains(error.problem, "above the maximum of 1000"));
    error =
        load_error("[triggers.t]\nqueue = \"q\"\nurl = \"http://h/\"\nheaders = [\"nocolon\"]\n");
    CHECK(contains(error.problem, "Name: value"));
    error =
        load_error("[triggers.t]\nqueue = \"q\"\nurl = \"http://h/\"\ndead_letter_on = [200]\n");
    CHECK(contains(error.problem, "200 is not a 4xx or 5xx status"));
    error = load_error("[triggers.\"bad name!\"]\nqueue = \"q\"\n");
    CHECK(contains(error.problem, "invalid trigger name"));
    // What a single value cannot show: validate().
    cfg::Settings s;
    REQUIRE_FALSE(cfg::apply_setting(s, "triggers.t.url", "http://h/"));
    auto problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "triggers.t.queue");
    REQUIRE_FALSE(cfg::apply_setting(s, "triggers.t.queue", "q"));
    REQUIRE_FALSE(cfg::apply_setting(s, "triggers.t.batch_size", "5"));
    problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "triggers.t.batch_size");
    REQUIRE_FALSE(cfg::apply_setting(s, "triggers.t.body", "json"));
    CHECK_FALSE(cfg::validate(s));
    auto flag = flag_error("triggers.t.nope", "1");
    CHECK(contains(flag.problem, "expected triggers.NAME.SETTING"));
  }

  TEST_CASE("[sources.NAME] tables: scheme, secrets beside the config file, defaults") {
    const auto s = load_ok(
        "[sources.gh]\nqueue = \"events\"\nscheme = \"github\"\nsecret_file = \"gh.secret\"\n"
        "previous_secret_file = \"/etc/old.secret\"\n"
        "[sources.hook]\nqueue = \"events\"\nscheme = \"hmac\"\nsecret_file = \"/s\"\n"
        "signature_header = \"X-Signature-256\"\nsignature_encoding = \"base64\"\n"
        "id_header = \"X-Delivery\"\nrate = 5\nburst = 2\ntolerance = \"30s\"\n");
    REQUIRE(s.sources.size() == 2);
    const cfg::SourceSettings& gh = s.sources[0];
    CHECK(gh.name == "gh");
    CHECK(gh.scheme == cfg::SourceScheme::github);
    // Relative to the config file's directory, which is the temp directory here.
    CHECK(gh.secret_file == (std::filesystem::temp_directory_path() / "gh.secret").string());
    CHECK(gh.previous_secret_file == "/etc/old.secret");
    CHECK(gh.tolerance == 300s);
    const cfg::SourceSettings& hook = s.sources[1];
    CHECK(hook.scheme == cfg::SourceScheme::hmac);
    CHECK(hook.signature_header == "x-signature-256");  // compared lower-case
    CHECK(hook.signature_base64);
    CHECK(hook.id_header == "x-delivery");
    CHECK(hook.rate == 5000);
    CHECK(hook.burst == 2);
    CHECK(hook.tolerance == 30s);
    CHECK_FALSE(cfg::validate(s));
  }

  TEST_CASE("bad sources name the setting") {
    auto error = load_error("[sources.s]\nqueue = \"q\"\nscheme = \"gitlab\"\n");
    CHECK(error.setting == "sources.s.scheme");
    CHECK(contains(error.allowed, "standard-webhooks"));
    error = load_error("[sources.s]\nqueue = \"q\"\ntolerance = \"2h\"\n");
    CHECK(contains(error.problem, "above the maximum"));
    cfg::Settings s;
    REQUIRE_FALSE(cfg::apply_setting(s, "sources.s.queue", "q"));
    auto problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "sources.s.scheme");
    REQUIRE_FALSE(cfg::apply_setting(s, "sources.s.scheme", "stripe"));
    problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "sources.s.secret_file");
    REQUIRE_FALSE(cfg::apply_setting(s, "sources.s.secret_file", "/run/secret"));
    // stripe's tolerance (5m) needs ids remembered for 10m; the default window is 5m.
    problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "sources.s.tolerance");
    CHECK(contains(problem->allowed, "dedup_window = \"10m\""));
    REQUIRE_FALSE(cfg::apply_setting(s, "queues.q.dedup_window", "10m"));
    CHECK_FALSE(cfg::validate(s));
    REQUIRE_FALSE(cfg::apply_setting(s, "sources.s.id_header", "sluice-delay-ms"));
    problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "sources.s.id_header");
    REQUIRE_FALSE(cfg::apply_setting(s, "sources.s.id_header", ""));
    s.queues[0].require_schema = true;
    s.queues[0].schemas.push_back({"v1", "/s.json"});
    problem = cfg::validate(s);
    REQUIRE(problem);
    CHECK(problem->setting == "sources.s.queue");
    CHECK(contains(problem->problem, "requires a schema version"));
  }

  TEST_CASE("a source's secret paths are relative to the file that names them, once") {
    const auto dir = std::filesystem::temp_directory_path() / "sluice_config_two_files";
    std::filesystem::create_directories(dir / "etc");
    std::ofstream(dir / "etc" / "a.toml")
        << "[sources.gh]\nqueue = \"q\"\nscheme = \"github\"\nsecret_file = \"gh.secret\"\n";
    std::ofstream(dir / "b.toml") << "[sources.gh]\nrate = 5\n[sources.other]\nqueue = \"q\"\n";
    cfg::Settings s;
    REQUIRE_FALSE(cfg::load_file((dir / "etc" / "a.toml").string(), s));
    REQUIRE_FALSE(cfg::load_file((dir / "b.toml").string(), s));
    REQUIRE(s.sources.size() == 2);
    CHECK(s.sources[0].secret_file == (dir / "etc" / "gh.secret").string());
    CHECK(s.sources[0].rate == 5000);
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("[queues.NAME.schemas] holds versions in file order, beside the queue's settings") {
    const auto s = load_ok(
        "[queues.orders]\nmax_attempts = 3\nrequire_schema = \"on\"\n"
        "[queues.orders.schemas]\nv2 = \"/schemas/orders-v2.json\"\nv1 = \"orders-v1.json\"\n");
    REQUIRE(s.queues.size() == 1);
    const cfg::DeclaredQueue& q = s.queues[0];
    CHECK(q.settings.max_attempts == 3);
    CHECK(q.require_schema);
    REQUIRE(q.schemas.size() == 2);
    CHECK(q.schemas[0].version == "v2");
    CHECK(q.schemas[0].file == "/schemas/orders-v2.json");
    CHECK(q.schemas[1].version == "v1");
    CHECK(q.schemas[1].file ==
          (std::filesystem::temp_directory_path() / "orders-v1.json").string());
    CHECK_FALSE(cfg::validate(s));
    auto error = load_error("[queues.q.schemas]\n\"bad version!\" = \"f.json\"\n");
    CHECK(error.setting == "queues.q.schemas.bad version!");
    CHECK(contains(error.problem, "invalid schema version"));
    error = load_error("[queues.q.schemas]\nv1 = 5\n");
    CHECK(contains(error.problem, "expected a file path"));
    error = load_error("[queues.q]\nrequire_schema = \"maybe\"\n");
    CHECK(error.setting == "queues.q.require_schema");
    const auto required_without = load_ok("[queues.q]\nrequire_schema = \"on\"\n");
    const auto problem = cfg::validate(required_without);
    REQUIRE(problem);
    CHECK(problem->setting == "queues.q.require_schema");
  }
}
