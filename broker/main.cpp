// sluiced: wiring only. Reads settings (embedded defaults, then the config
// file, then flags), builds the engine and the server, and runs them on one
// thread until SIGTERM or SIGINT.
#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <memory>
#include <filesystem>
#include <algorithm>
#include <functional>
#include <optional>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include "durable_store.hpp"
#include "engine.hpp"
#include "http_api.hpp"
#include "http_server.hpp"
#include "log.hpp"
#include "attempt_log.hpp"
#include "metrics.hpp"
#include "broker.hpp"
#include "listener.hpp"
#include "session.hpp"
#include "systemd_notify.hpp"
#include "triggers.hpp"
#include "live_config.hpp"
#include "sluice/config/settings.hpp"
#include "sluice/security/tls.hpp"

namespace {

constexpr std::string_view kUsage = R"(usage: sluiced [options]

Runs the Sluice queue broker. With no options it listens on 127.0.0.1:7450
with embedded defaults; see config/sluiced.example.toml for every setting.

options:
  --config FILE         read settings from a TOML file; repeatable, a later file wins
                        (e.g. settings from one file, tokens from another)
  --listen HOST:PORT    protocol listener (default 127.0.0.1:7450; port 0 = any free port)
  --http-listen HOST:PORT  HTTP API, /metrics and health (default 127.0.0.1:7451)
  --port-file PATH      after binding, write the bound ports to PATH (protocol, then HTTP)
  --log-level LEVEL     trace | debug | info | warn | error (default info)
  --set NAME=VALUE      any setting by its dotted name, e.g. --set queue_defaults.lease_timeout=10s
  --check               validate the settings, print "config ok" and exit
  --version             print the version and exit
  --help                print this help and exit

Flags win over the config file; the file wins over the defaults.
SIGHUP reads the file and flags again and applies what can change live
(capacities, rates, caps, memory limit, log level); SIGTERM/SIGINT stop.
)";

int fail(const std::string& line) {
  std::fprintf(stderr, "sluiced: %s\n", line.c_str());
  return 2;
}

bool write_port_file(const std::string& path, std::uint16_t port, std::uint16_t http_port) {
  // Write then rename, so a reader never sees a half-written file.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return false;
    f << port << "\n" << http_port << "\n";
    if (!f.flush()) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

/// Without tokens anyone who reaches a listener may do anything: that is only
/// acceptable on loopback. `listen` and `http` are the running listeners.
sluice::Error open_to_the_network(const sluice::config::Settings& listen,
                                  const sluice::config::Settings& tokens) {
  if (!tokens.tokens.empty()) return {};
  auto refuse = [](std::string_view setting, const std::string& host) {
    return sluice::Error(
        sluice::errc::invalid_argument,
        std::string(setting) + " is " + host +
            ", not a loopback address, and no [tokens.NAME] are configured: anyone who can "
            "reach it could publish, consume and administer. Add a token (sluicectl "
            "hash-token) or listen on 127.0.0.1");
  };
  if (!sluice::config::is_loopback_host(listen.listen_host))
    return refuse("server.listen", listen.listen_host);
  if (listen.http_enabled && !sluice::config::is_loopback_host(listen.http_host))
    return refuse("http.listen", listen.http_host);
  return {};
}

/// The TLS context for `settings` (nullptr without tls.cert_file); `error` on failure.
std::shared_ptr<boost::asio::ssl::context> tls_context(const sluice::config::Settings& settings,
                                                       std::string& error) {
  if (settings.tls_cert_file.empty()) return nullptr;
  return sluice::security::server_context(settings.tls_cert_file, settings.tls_key_file, error);
}

/// Many connections need many descriptors: take the hard limit.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < 4096)
    sluice::log::warn("descriptor_limit_low")
        .unum("limit", limit.rlim_cur)
        .str("effect", "connections past this limit are refused; raise ulimit -n");
}

/// Reads the command line into `source` and `check_only`. An exit code when
/// sluiced should stop at once: 0 after --help or --version, 2 on a usage error.
std::optional<int> parse_command_line(int argc, char** argv, sluice::net::SettingsSource& source,
                                      bool& check_only) {
  CLI::App app("sluiced");
  app.formatter_fn(
      [](const CLI::App*, std::string, CLI::AppFormatMode) { return std::string(kUsage); });
  app.set_version_flag("--version", "sluiced " SLUICE_VERSION);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--config", source.config_files)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_flag("--check", check_only);
  // Flags that set a setting are kept in the order given: a later one wins.
  auto setting = [&](const std::string& flag, std::string name) {
    app.add_option_function<std::string>(
           flag,
           [&source, name](const std::string& value) { source.flags.emplace_back(name, value); })
        ->trigger_on_parse();
  };
  setting("--listen", "server.listen");
  setting("--http-listen", "http.listen");
  setting("--port-file", "server.port_file");
  setting("--log-level", "log.level");
  app.add_option_function<std::string>(
         "--set",
         [&source](const std::string& pair) {
           const auto eq = pair.find('=');
           if (eq == std::string::npos || eq == 0)
             throw CLI::ValidationError("--set", "needs NAME=VALUE, got " + pair);
           source.flags.emplace_back(pair.substr(0, eq), pair.substr(eq + 1));
         })
      ->trigger_on_parse();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(kUsage.data(), stdout);
    return 0;
  } catch (const CLI::CallForVersion& version) {
    std::puts(version.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    return fail(std::string(e.what()) + " (see --help)");
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  namespace config = sluice::config;
  namespace net = sluice::net;
  net::SettingsSource source;
  bool check_only = false;
  if (auto exit_code = parse_command_line(argc, argv, source, check_only)) return *exit_code;
  // The file first, then the flags in order, whatever their order on the line.
  config::Settings settings;
  if (auto problem = net::load_settings(source, settings)) return fail(problem.detail);
  // Schemas and sources' secrets come from files: read before anything starts
  // (--check reads them too), and again on SIGHUP, where a problem fails the
  // reload (nothing changes).
  std::vector<net::Schemas::Queue> schemas;
  std::vector<net::Sources::Source> sources;
  const auto read_ingress = [&](const config::Settings& next) -> sluice::Error {
    if (auto problem = net::Schemas::load(next, schemas)) return problem;
    return net::Sources::load(next.sources, net::mono_us(), sources);
  };
  if (auto problem = read_ingress(settings)) return fail(problem.detail);
  if (check_only) {
    std::puts("config ok");
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  if (auto problem = open_to_the_network(settings, settings)) return fail(problem.detail);
  std::string tls_error;
  auto tls = tls_context(settings, tls_error);
  if (!tls_error.empty()) return fail(tls_error);
  raise_descriptor_limit();

  boost::asio::io_context io(1);
  sluice::engine::Engine engine;
  net::AttemptLog attempt_log;
  engine.set_events(&attempt_log);
  // Storage first, so the config can declare durable queues; then what it
  // holds comes back into those queues.
  // Without storage.path the store lives in a temporary directory: dead
  // letters need a home, but they last only as long as the process.
  auto store = std::make_unique<net::DurableStore>(io, engine);
  if (auto problem =
          store->open({settings.storage_path, settings.storage_sync, settings.storage_max_size}))
    return fail(problem.detail);
  if (store->temporary())
    sluice::log::warn("storage_temporary")
        .str("effect",
             "storage.path is \"\": dead letters are kept only until sluiced stops, and no "
             "queue can be durable");
  else if (!settings.storage_path_given)
    sluice::log::info("storage_default")
        .str("path", settings.storage_path)
        .str("effect",
             "storage.path is not set: durable queues and dead letters live here and survive "
             "restarts (storage.path = \"\" keeps them in memory only)");
  net::LiveConfig live(engine, source, settings);
  live.apply_at_start();
  {
    const auto started = std::chrono::steady_clock::now();
    sluice::storage::RecoveryStats recovered;
    if (auto problem = store->recover(net::mono_us(), net::wall_us(), recovered))
      return fail(problem.detail);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    sluice::log::info("recovered")
        .str("path", settings.storage_path)
        .unum("messages", recovered.messages)
        .unum("orphan_attempt_records", recovered.orphan_attempts)
        .unum("duration_ms", static_cast<std::uint64_t>(took.count()));
  }
  net::BrokerOptions options;
  options.limits.max_frame_bytes = settings.max_frame_bytes;
  options.limits.max_payload_bytes = settings.max_payload_bytes;
  options.limits.max_headers = static_cast<std::uint16_t>(settings.max_headers);
  options.limits.max_header_bytes = settings.max_header_bytes;
  options.connection_outbound_bytes = settings.connection_outbound_bytes;
  options.max_pending_publishes = settings.max_pending_publishes;
  options.shutdown_grace = settings.shutdown_grace;
  options.frame_timeout = settings.frame_timeout;
  options.handshake_timeout = settings.handshake_timeout;
  options.settle_after_commit = settings.storage_settle_commit;
  net::Broker broker(io, engine, options, store.get());
  broker.auth().configure(settings.tokens);
  broker.schemas().replace(std::move(schemas));
  broker.sources().replace(std::move(sources));
  broker.set_configure_handler([&](std::string_view queue, auto pairs) {
    return live.configure(queue, pairs, net::mono_us());
  });
  broker.set_live_config(&live);
  net::Listener server(io,
                       {"protocol", settings.listen_host, settings.listen_port,
                        settings.max_connections, settings.max_connections_per_source,
                        "server.max_connections", "server.max_connections_per_source"},
                       [&broker](net::Accepted&& accepted, net::Listener& listener) {
                         net::accept_session(broker, std::move(accepted), listener);
                       });
  server.set_tls(tls);
  if (auto problem = server.start()) return fail(problem.detail + " (server.listen)");

  net::Metrics metrics(broker);
  metrics.set_protocol(&server);
  net::HttpApiOptions api_options;
  api_options.max_payload_bytes = settings.max_payload_bytes;
  api_options.max_wait = settings.http_max_wait;
  api_options.max_response_bytes = settings.http_max_body_bytes;
  net::HttpApi api(broker, metrics, api_options);
  net::HttpServerOptions http_options;
  http_options.host = settings.http_host;
  http_options.port = settings.http_port;
  http_options.max_body_bytes = settings.http_max_body_bytes;
  http_options.max_connections = settings.http_max_connections;
  http_options.max_connections_per_source = settings.http_max_connections_per_source;
  http_options.idle_timeout = settings.http_idle_timeout;
  std::unique_ptr<net::HttpServer> http;
  if (settings.http_enabled) {
    http = std::make_unique<net::HttpServer>(
        io, http_options, [&api](net::HttpRequest&& request, net::Respond respond) {
          api.handle(std::move(request), std::move(respond));
        });
    http->set_tls(tls);
    if (auto problem = http->start()) return fail(problem.detail + " (http.listen)");
    metrics.set_http(http.get());
    metrics.set_http_requests(&api.request_counts());
  }
  const std::uint16_t http_port = http ? http->port() : 0;
  net::Triggers triggers(broker);
  if (auto problem = triggers.apply(settings.triggers)) return fail(problem.detail);
  metrics.set_per_queue(settings.metrics_per_queue);
  live.set_applied_hook([&](const config::Settings& applied) {
    metrics.set_per_queue(applied.metrics_per_queue);
    if (auto problem = triggers.apply(applied.triggers))
      sluice::log::warn("reload_trigger_failed").str("problem", problem.detail);
  });
  api.set_ready(true);
  metrics.set_ready(true);
  live.set_security_hook([&](const config::Settings& next) -> sluice::Error {
    const config::Settings& running = live.settings();
    if (auto problem = open_to_the_network(running, next)) return problem;
    if (auto problem = read_ingress(next)) return problem;
    if (next.tls_cert_file.empty() != running.tls_cert_file.empty())
      return {sluice::errc::invalid_argument,
              "turning TLS on or off (tls.cert_file) needs a restart"};
    std::string error;
    auto context = tls_context(next, error);
    if (!error.empty()) return {sluice::errc::invalid_argument, error};
    // Certificates are read again even under the same paths: renewal replaces the files.
    server.set_tls(context);
    if (http) http->set_tls(context);
    if (context) sluice::log::info("tls_reloaded").str("cert_file", next.tls_cert_file);
    broker.auth().configure(next.tokens);
    broker.schemas().replace(std::move(schemas));
    broker.sources().replace(std::move(sources));
    for (net::ListenedConnection* c : server.open()) c->recheck_grant();
    api.recheck_grants();
    return {};
  });
  sluice::log::info("listening")
      .str("host", settings.listen_host)
      .unum("protocol_port", server.port())
      .str("http_host", http ? settings.http_host : "")
      .unum("http_port", http_port)
      .str("tls", tls ? "on" : "off")
      .unum("tokens", settings.tokens.size())
      .str("version", SLUICE_VERSION);
  // The port file comes after the "listening" line, so whoever waits for the
  // file (tests, scripts) finds that line in the log once it exists.
  if (!settings.port_file.empty() && !write_port_file(settings.port_file, server.port(), http_port))
    return fail("cannot write port file " + settings.port_file);

  // Recovered and listening: systemd (Type=notify) may start what depends on us.
  net::SystemdNotifier systemd(io);
  systemd.notify("READY=1\nSTATUS=listening on protocol port " + std::to_string(server.port()) +
                 (http ? ", http port " + std::to_string(http_port) : std::string()));
  systemd.start_watchdog();

  boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signal) {
        if (ec) return;
        if (signal == SIGHUP) {
          live.reload(net::mono_us());
          signals.async_wait(on_signal);
          return;
        }
        sluice::log::info("stopping").str("signal", signal == SIGTERM ? "SIGTERM" : "SIGINT");
        systemd.notify("STOPPING=1");
        systemd.stop_watchdog();
        store->dead_letters().stop_timers();
        triggers.stop();
        metrics.set_ready(false);
        api.stop();
        if (http) http->stop();
        server.stop();
        broker.stop();
      };
  signals.async_wait(on_signal);

  // After SIGTERM nothing re-arms the signal wait, so run() returns once the
  // last session has flushed and closed.
  io.run();
  sluice::log::info("stopped").unum("messages_held", engine.messages());
  return 0;
}
