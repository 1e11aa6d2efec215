// The broker core: what every front end (protocol sessions, the HTTP API)
// works through. It owns the engine's one deadline timer, the token table and
// the live-settings hook, and knows the durable store. Sessions and the HTTP
// API are given a Broker&; nothing reaches the listeners through it. Engine
// thread only.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "auth.hpp"
#include "clock.hpp"
#include "engine.hpp"
#include "listener.hpp"
#include "schemas.hpp"
#include "sources.hpp"
#include "sluice/protocol/error.hpp"
#include "sluice/protocol/frames.hpp"

namespace sluice::net {

class DurableStore;
class DeadLetters;
class Triggers;
class LiveConfig;

/// The reason a protocol connection closed with error `code` ends under.
CloseReason close_reason_of(errc code) noexcept;

struct BrokerOptions {
  protocol::Limits limits;
  std::size_t connection_outbound_bytes = 8u << 20;
  /// Messages published on one connection and awaiting their durable commit;
  /// past it the connection is not read (limits.max_pending_publishes).
  std::uint32_t max_pending_publishes = 100000;
  std::chrono::milliseconds shutdown_grace{5000};
  /// A frame begun must be complete within this (see limits.frame_timeout).
  std::chrono::milliseconds frame_timeout{30000};
  /// HELLO must arrive within this (see limits.handshake_timeout).
  std::chrono::milliseconds handshake_timeout{10000};
  /// storage.settle = "commit": acks, nacks and extends that changed storage
  /// are answered only once that change is committed.
  bool settle_after_commit = false;
};

/// The two ports, as labels of broker-wide counters.
enum class Port : std::uint8_t { protocol, http };

class Broker {
 public:
  /// `store` may be null (no storage: the fuzzer); when given it must outlive the broker.
  Broker(boost::asio::io_context& io, engine::Engine& engine, BrokerOptions options,
         DurableStore* store = nullptr);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  engine::Engine& engine() noexcept { return engine_; }
  const engine::Engine& engine() const noexcept { return engine_; }
  boost::asio::io_context& io() noexcept { return io_; }
  const BrokerOptions& options() const noexcept { return options_; }
  /// Who may do what; configure() it at start and on SIGHUP.
  Authorizer& auth() noexcept { return auth_; }
  DurableStore* store() const noexcept { return store_; }
  /// The dead-letter queues (they live in the store); null without one.
  DeadLetters* dead_letters() const noexcept;
  /// Each declared queue's JSON Schemas, which every publish is checked against.
  Schemas& schemas() noexcept { return schemas_; }
  const Schemas& schemas() const noexcept { return schemas_; }
  /// The verified webhook sources ([sources.NAME]).
  Sources& sources() noexcept { return sources_; }
  const Sources& sources() const noexcept { return sources_; }
  /// The running triggers; null until they are set up (and in the fuzzer).
  Triggers* triggers() const noexcept { return triggers_; }
  /// Triggers register themselves here for their lifetime.
  void set_triggers(Triggers* triggers) noexcept { triggers_ = triggers; }

  /// Applies a live settings change (sluicectl set, PATCH): nullopt, or the problem as one line.
  using ConfigureHandler = std::function<Error(
      std::string_view queue, std::span<const std::pair<std::string_view, std::string_view>>)>;
  void set_configure_handler(ConfigureHandler handler) { configure_ = std::move(handler); }
  const ConfigureHandler& configure_handler() const noexcept { return configure_; }

  /// The running settings, for an operator's queue lifecycle (create, delete,
  /// purge); null in the fuzzer, where those answer unsupported.
  LiveConfig* live_config() const noexcept { return live_config_; }
  void set_live_config(LiveConfig* live) noexcept { live_config_ = live; }

  /// A connection or request whose token was missing or unknown, by port.
  void count_auth_failure(Port port) noexcept { ++auth_failures_[static_cast<int>(port)]; }
  std::uint64_t auth_failures(Port port) const noexcept {
    return auth_failures_[static_cast<int>(port)];
  }

  /// Stopping: the deadline timer is not armed again, so io.run() can return.
  void stop();
  bool stopping() const noexcept { return stopping_; }

 private:
  void arm(engine::Micros at);

  boost::asio::io_context& io_;
  engine::Engine& engine_;
  BrokerOptions options_;
  DurableStore* store_;
  Triggers* triggers_ = nullptr;
  Authorizer auth_;
  Schemas schemas_;
  Sources sources_;
  ConfigureHandler configure_;
  LiveConfig* live_config_ = nullptr;
  boost::asio::steady_timer deadline_timer_;
  bool stopping_ = false;
  std::uint64_t auth_failures_[2] = {0, 0};
};

}  // namespace sluice::net
