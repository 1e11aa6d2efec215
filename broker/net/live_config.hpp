// LiveConfig: the settings sluiced runs with, where they come from (the config
// file and the command-line flags, re-read on SIGHUP), and the changes it takes
// while running: a reload, and per-queue changes sent by `sluicectl set`
// (CONFIGURE frames). Capacities, rates, caps, the memory limit and the log
// level change live without losing or repeating a message; listener and frame
// settings need a restart and are reported as such. Engine thread only.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine.hpp"
#include "sluice/config/settings.hpp"
#include "sluice/protocol/frames.hpp"

namespace sluice::net {

/// Where settings come from: config files in order (a later one wins; e.g. the settings
/// from a ConfigMap, then tokens from a Secret), then name=value flags in order.
struct SettingsSource {
  std::vector<std::string> config_files;
  std::vector<std::pair<std::string, std::string>> flags;
};

/// Builds validated Settings from `source`; the first problem as one line.
Error load_settings(const SettingsSource& source, config::Settings& out);

/// The engine's options for a queue's settings.
engine::QueueOptions to_queue_options(const config::QueueSettings& settings);

class LiveConfig {
 public:
  LiveConfig(engine::Engine& engine, SettingsSource source, config::Settings settings);

  /// Declares the config's queues and sets the engine's defaults and memory limit.
  void apply_at_start();
  /// SIGHUP: reads the file and flags again and applies what can change live.
  /// A bad file changes nothing (logged as reload_failed).
  void reload(engine::Micros now);
  /// `sluicectl set QUEUE name=value...`: the settings of one queue (created if
  /// new). All or nothing; the problem as one line. Lasts until the next reload.
  Error configure(std::string_view queue,
                  std::span<const std::pair<std::string_view, std::string_view>> pairs,
                  engine::Micros now);

  // ---- an operator's queue lifecycle (QUEUES frames, HTTP, sluicectl queues) ----

  /// Creates `queue` with `pairs` (as configure takes them; none: the defaults).
  /// queue_exists if it exists. Lasts until a restart; the config file declares
  /// queues for good.
  Error create_queue(std::string_view queue,
                     std::span<const std::pair<std::string_view, std::string_view>> pairs,
                     engine::Micros now);
  /// Deletes `queue` with what it holds and its dead letters (Engine::remove_queue):
  /// queue_not_found; queue_in_use when it holds messages or has consumers (unless
  /// `force`), is declared in the config file (it would come back) or a trigger
  /// consumes it. `dropped`: the messages that went with it.
  Error delete_queue(std::string_view queue, bool force, engine::Micros now,
                     std::uint64_t& dropped);
  /// Drops `queue`'s ready messages (Engine::purge): queue_not_found if it does not exist.
  Error purge_queue(std::string_view queue, engine::Micros now, std::uint64_t& dropped);
  /// One QUEUES request, its rights checked by the caller: list shows the queues
  /// `visible` admits (by name order), create the new queue. `result`'s views
  /// point into the engine's queues: encode it before the next engine call.
  Error run(const protocol::QueuesRequest& request,
            const std::function<bool(std::string_view queue)>& visible, engine::Micros now,
            protocol::QueuesResult& result);

  const config::Settings& settings() const noexcept { return settings_; }

  /// Tokens and TLS certificates (main.cpp): checks and applies `next`'s at a
  /// reload, before anything else changes; a problem fails the whole reload.
  using SecurityHook = std::function<Error(const config::Settings& next)>;
  void set_security_hook(SecurityHook hook) { security_hook_ = std::move(hook); }
  /// What follows the queues (main.cpp: the triggers): called with the new
  /// settings at the end of each reload that applied.
  using AppliedHook = std::function<void(const config::Settings& applied)>;
  void set_applied_hook(AppliedHook hook) { applied_hook_ = std::move(hook); }

 private:
  /// The settings `queue` has under `settings` (declared, or the defaults).
  static const config::QueueSettings& queue_settings(const config::Settings& settings,
                                                     std::string_view queue);

  engine::Engine& engine_;
  SecurityHook security_hook_;
  AppliedHook applied_hook_;
  SettingsSource source_;
  config::Settings settings_;
  // The queues the config file (and flags) declare: a delete would not last.
  std::vector<std::string> file_queues_;
  // Queues create_queue made (and not deleted since): a reload keeps their settings.
  std::vector<std::string> runtime_queues_;
};

}  // namespace sluice::net
