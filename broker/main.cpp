// sluiced: wiring only. Reads settings (embedded defaults, then the config
// file, then flags), builds the engine and the server, and runs them on one
// thread until SIGTERM or SIGINT.
#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include "engine.hpp"
#include "log.hpp"
#include "server.hpp"
#include "sluice/config/settings.hpp"

namespace {

constexpr std::string_view kUsage = R"(usage: sluiced [options]

Runs the Sluice queue broker. With no options it listens on 127.0.0.1:7450
with embedded defaults; see config/sluiced.example.toml for every setting.

options:
  --config FILE         read settings from a TOML file
  --listen HOST:PORT    protocol listener (default 127.0.0.1:7450; port 0 = any free port)
  --port-file PATH      after binding, write the bound port to PATH
  --log-level LEVEL     trace | debug | info | warn | error (default info)
  --set NAME=VALUE      any setting by its dotted name, e.g. --set queue_defaults.lease_timeout=10s
  --check               validate the settings, print "config ok" and exit
  --version             print the version and exit
  --help                print this help and exit

Flags win over the config file; the file wins over the defaults.
)";

int fail(const std::string& line) {
  std::fprintf(stderr, "sluiced: %s\n", line.c_str());
  return 2;
}

bool write_port_file(const std::string& path, std::uint16_t port) {
  // Write then rename, so a reader never sees a half-written file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return false;
    f << port << "\n";
    if (!f.flush()) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

sluice::log::Level to_log_level(sluice::config::LogLevel level) {
  return static_cast<sluice::log::Level>(static_cast<int>(level));
}

sluice::engine::QueueOptions to_queue_options(const sluice::config::QueueSettings& q) {
  sluice::engine::QueueOptions o;
  o.lease = std::chrono::duration_cast<std::chrono::microseconds>(q.lease_timeout).count();
  o.max_consumer_in_flight = q.max_consumer_in_flight;
  o.max_messages = q.max_messages;
  o.max_bytes = q.max_bytes;
  o.high_watermark_pct = static_cast<std::uint8_t>(q.high_watermark);
  o.low_watermark_pct = static_cast<std::uint8_t>(q.low_watermark);
  o.overflow = q.overflow == sluice::config::Overflow::reject ? sluice::engine::Overflow::reject
                                                              : sluice::engine::Overflow::block;
  o.dispatch_rate = {q.dispatch_rate, q.dispatch_burst};
  o.max_consumer_rate = q.max_consumer_rate;
  o.ingress_rate = {q.ingress_rate, q.ingress_burst};
  o.max_in_flight = q.max_in_flight;
  o.key_header = q.key_header;
  o.key_rate = {q.key_rate, q.key_burst};
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  namespace config = sluice::config;
  config::Settings settings;
  bool check_only = false;

  // First pass: the config file, so flags can override it whatever their order.
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
    if (arg == "--version") {
      std::puts("sluiced " SLUICE_VERSION);
      return 0;
    }
    if (arg == "--config") {
      if (i + 1 >= argc) return fail("--config needs a file path");
      if (auto err = config::load_file(argv[++i], settings)) return fail(err->to_string());
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view flag) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)flag;
      return argv[++i];
    };
    std::optional<config::ConfigError> err;
    if (arg == "--config") {
      ++i;
    } else if (arg == "--check") {
      check_only = true;
    } else if (arg == "--listen") {
      const char* v = value(arg);
      if (!v) return fail("--listen needs HOST:PORT");
      err = config::apply_setting(settings, "server.listen", v);
    } else if (arg == "--port-file") {
      const char* v = value(arg);
      if (!v) return fail("--port-file needs a path");
      err = config::apply_setting(settings, "server.port_file", v);
    } else if (arg == "--log-level") {
      const char* v = value(arg);
      if (!v) return fail("--log-level needs a level");
      err = config::apply_setting(settings, "log.level", v);
    } else if (arg == "--set") {
      const char* v = value(arg);
      std::string_view kv = v ? v : "";
      const auto eq = kv.find('=');
      if (eq == std::string_view::npos || eq == 0) return fail("--set needs NAME=VALUE");
      err = config::apply_setting(settings, kv.substr(0, eq), kv.substr(eq + 1));
    } else {
      return fail("unknown option " + std::string(arg) + " (see --help)");
    }
    if (err) return fail(err->to_string());
  }
  if (auto err = config::validate(settings)) return fail(err->to_string());
  if (check_only) {
    std::puts("config ok");
    return 0;
  }

  sluice::log::set_level(to_log_level(settings.log_level));
  std::signal(SIGPIPE, SIG_IGN);

  sluice::engine::Engine engine(to_queue_options(settings.queue_defaults));
  engine.set_memory_limit(settings.memory);
  for (const auto& q : settings.queues) engine.declare(q.name, to_queue_options(q.settings));

  boost::asio::io_context io(1);
  sluice::net::ServerOptions options;
  options.host = settings.listen_host;
  options.port = settings.listen_port;
  options.max_connections = settings.max_connections;
  options.limits.max_frame_bytes = settings.max_frame_bytes;
  options.limits.max_payload_bytes = settings.max_payload_bytes;
  options.connection_outbound_bytes = settings.connection_outbound_bytes;
  options.shutdown_grace = settings.shutdown_grace;
  options.frame_timeout = settings.frame_timeout;
  sluice::net::Server server(io, engine, options);
  if (auto ec = server.start()) {
    return fail("cannot listen on " + settings.listen_host + ":" +
                std::to_string(settings.listen_port) + ": " + ec.message());
  }
  if (!settings.port_file.empty() && !write_port_file(settings.port_file, server.port()))
    return fail("cannot write port file " + settings.port_file);
  sluice::log::info("listening")
      .str("host", settings.listen_host)
      .unum("protocol_port", server.port())
      .str("version", SLUICE_VERSION);

  boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signal) {
        if (ec) return;
        if (signal == SIGHUP) {
          sluice::log::warn("reload_unsupported")
              .str("detail", "settings are read at start only; restart to change them");
          signals.async_wait(on_signal);
          return;
        }
        sluice::log::info("stopping").str("signal", signal == SIGTERM ? "SIGTERM" : "SIGINT");
        server.stop();
      };
  signals.async_wait(on_signal);

  // After SIGTERM nothing re-arms the signal wait, so run() returns once the
  // last session has flushed and closed.
  io.run();
  sluice::log::info("stopped").unum("messages_held", engine.messages());
  return 0;
}
