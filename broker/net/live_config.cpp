#include "live_config.hpp"

#include <algorithm>

#include "log.hpp"

namespace sluice::net {

namespace {
/// A queue as the config would declare it (no schemas).
config::DeclaredQueue declared_queue(std::string name, const config::QueueSettings& settings) {
  config::DeclaredQueue queue;
  queue.name = std::move(name);
  queue.settings = settings;
  return queue;
}

/// A settings problem (file, line, what is allowed) as the one error shape.
Error invalid(const config::ConfigError& e) {
  return {errc::invalid_argument, e.to_string()};
}
}  // namespace

Error load_settings(const SettingsSource& source, config::Settings& out) {
  config::Settings settings;
  for (const auto& file : source.config_files) {
    if (auto err = config::load_file(file, settings)) return invalid(*err);
  }
  for (const auto& [name, value] : source.flags) {
    if (auto err = config::apply_setting(settings, name, value)) return invalid(*err);
  }
  config::resolve_defaults(settings);
  if (auto err = config::validate(settings)) return invalid(*err);
  out = std::move(settings);
  return {};
}

engine::QueueOptions to_queue_options(const config::QueueSettings& q) {
  engine::QueueOptions o;
  o.lease = std::chrono::duration_cast<std::chrono::microseconds>(q.lease_timeout).count();
  o.max_consumer_in_flight = q.max_consumer_in_flight;
  o.max_messages = q.max_messages;
  o.max_bytes = q.max_bytes;
  o.high_watermark_pct = static_cast<std::uint8_t>(q.high_watermark);
  o.low_watermark_pct = static_cast<std::uint8_t>(q.low_watermark);
  o.overflow =
      q.overflow == config::Overflow::reject ? engine::Overflow::reject : engine::Overflow::block;
  o.dispatch_rate = {q.dispatch_rate, q.dispatch_burst};
  o.max_consumer_rate = q.max_consumer_rate;
  o.ingress_rate = {q.ingress_rate, q.ingress_burst};
  o.max_in_flight = q.max_in_flight;
  o.key_header = q.key_header;
  o.key_rate = {q.key_rate, q.key_burst};
  o.durable = q.durability == config::Durability::durable;
  o.ordered = q.ordered;
  o.retry.max_attempts = q.max_attempts;
  o.retry.initial_backoff =
      std::chrono::duration_cast<std::chrono::microseconds>(q.retry_backoff).count();
  o.retry.max_backoff =
      std::chrono::duration_cast<std::chrono::microseconds>(q.retry_backoff_max).count();
  o.retry.multiplier_milli = q.retry_multiplier;
  o.retry.jitter = static_cast<engine::Jitter>(static_cast<int>(q.retry_jitter));
  o.dedup_window = std::chrono::duration_cast<std::chrono::microseconds>(q.dedup_window).count();
  o.dedup_max_entries = q.dedup_max_entries;
  o.resequence = q.resequence;
  o.gap_timeout = std::chrono::duration_cast<std::chrono::microseconds>(q.gap_timeout).count();
  o.dlq_max_entries = q.dlq_max_entries;
  o.dlq_retention = std::chrono::duration_cast<std::chrono::microseconds>(q.dlq_retention).count();
  return o;
}

namespace {

log::Level to_log_level(config::LogLevel level) {
  return static_cast<log::Level>(static_cast<int>(level));
}

/// Calls `visit(name, member)` for each setting that only a restart changes
/// (the server reads them once). One list serves both the warning on reload
/// and keeping the running values, so the two cannot drift apart.
template <typename Visit>
void for_each_restart_only(Visit&& visit) {
  using S = config::Settings;
  visit("server.listen", &S::listen_host);
  visit("server.listen", &S::listen_port);
  visit("server.port_file", &S::port_file);
  visit("server.max_connections", &S::max_connections);
  visit("server.max_connections_per_source", &S::max_connections_per_source);
  visit("server.shutdown_grace", &S::shutdown_grace);
  visit("http.enabled", &S::http_enabled);
  visit("http.listen", &S::http_host);
  visit("http.listen", &S::http_port);
  visit("http.max_body_bytes", &S::http_max_body_bytes);
  visit("http.max_connections", &S::http_max_connections);
  visit("http.max_connections_per_source", &S::http_max_connections_per_source);
  visit("http.idle_timeout", &S::http_idle_timeout);
  visit("http.max_wait", &S::http_max_wait);
  visit("limits.max_frame_bytes", &S::max_frame_bytes);
  visit("limits.max_payload_bytes", &S::max_payload_bytes);
  visit("limits.connection_outbound_bytes", &S::connection_outbound_bytes);
  visit("limits.frame_timeout", &S::frame_timeout);
  visit("limits.max_pending_publishes", &S::max_pending_publishes);
  visit("limits.max_headers", &S::max_headers);
  visit("limits.max_header_bytes", &S::max_header_bytes);
  visit("limits.handshake_timeout", &S::handshake_timeout);
  visit("storage.path", &S::storage_path);
  visit("storage.sync", &S::storage_sync);
  visit("storage.max_size", &S::storage_max_size);
  visit("storage.settle", &S::storage_settle_commit);
}

}  // namespace

LiveConfig::LiveConfig(engine::Engine& engine, SettingsSource source, config::Settings settings)
    : engine_(engine), source_(std::move(source)), settings_(std::move(settings)) {}

const config::QueueSettings& LiveConfig::queue_settings(const config::Settings& settings,
                                                        std::string_view queue) {
  for (const auto& q : settings.queues)
    if (q.name == queue) return q.settings;
  return settings.queue_defaults;
}

void LiveConfig::apply_at_start() {
  log::set_level(to_log_level(settings_.log_level));
  engine_.set_defaults(to_queue_options(settings_.queue_defaults));
  engine_.set_memory_limit(settings_.memory);
  engine_.set_max_queues(settings_.max_queues);
  engine_.set_auto_create(settings_.queues_auto_create);
  file_queues_.clear();
  for (const auto& q : settings_.queues) {
    engine_.declare(q.name, to_queue_options(q.settings));
    file_queues_.push_back(q.name);
  }
}

void LiveConfig::reload(engine::Micros now) {
  config::Settings next;
  if (auto problem = load_settings(source_, next)) {
    log::warn("reload_failed").str("problem", problem.detail).str("detail", "nothing changed");
    return;
  }
  if (security_hook_) {
    if (auto problem = security_hook_(next)) {
      log::warn("reload_failed").str("problem", problem.detail).str("detail", "nothing changed");
      return;
    }
  }
  std::vector<std::string_view> needs_restart;
  for_each_restart_only([&](std::string_view name, auto member) {
    if (settings_.*member != next.*member &&
        (needs_restart.empty() || needs_restart.back() != name))
      needs_restart.push_back(name);
  });
  for (const auto& name : needs_restart) log::warn("reload_needs_restart").str("setting", name);

  log::set_level(to_log_level(next.log_level));
  engine_.set_defaults(to_queue_options(next.queue_defaults));
  engine_.set_memory_limit(next.memory);
  engine_.set_max_queues(next.max_queues);
  engine_.set_auto_create(next.queues_auto_create);
  // The file's queues, before anything below adds to next.queues.
  std::vector<std::string> file_queues;
  for (const auto& q : next.queues) file_queues.push_back(q.name);
  // Queues created at run time keep their settings until a restart (unless the
  // file now declares them).
  for (const auto& name : runtime_queues_)
    if (std::find(file_queues.begin(), file_queues.end(), name) == file_queues.end())
      next.queues.push_back(declared_queue(name, queue_settings(settings_, name)));
  // Every existing queue takes its new settings (declared, or the new defaults);
  // queues new in the file are created.
  int changed = 0;
  for (const engine::Queue* q : engine_.queues()) {
    engine::Queue* queue = engine_.find(q->name());
    const auto options = to_queue_options(queue_settings(next, q->name()));
    if (auto refused = engine_.reconfigure(*queue, options, now)) {
      log::warn("reload_refused").str("queue", q->name()).str("problem", refused.detail);
      // It keeps what it had; say so in the settings we report as running.
      const config::QueueSettings kept = queue_settings(settings_, q->name());
      auto declared = std::find_if(next.queues.begin(), next.queues.end(),
                                   [&](const auto& d) { return d.name == q->name(); });
      if (declared != next.queues.end())
        declared->settings = kept;
      else
        next.queues.push_back(declared_queue(std::string(q->name()), kept));
      continue;
    }
    ++changed;
  }
  for (const auto& q : next.queues)
    if (!engine_.find(q.name)) engine_.declare(q.name, to_queue_options(q.settings));
  file_queues_ = std::move(file_queues);
  std::erase_if(runtime_queues_, [&](const std::string& name) {
    return std::find(file_queues_.begin(), file_queues_.end(), name) != file_queues_.end();
  });
  // What needs a restart keeps its running value.
  for_each_restart_only([&](std::string_view, auto member) { next.*member = settings_.*member; });
  settings_ = std::move(next);
  if (applied_hook_) applied_hook_(settings_);
  log::info("reloaded")
      .num("queues", changed)
      .num("needs_restart", static_cast<std::int64_t>(needs_restart.size()));
}

Error LiveConfig::configure(std::string_view queue,
                            std::span<const std::pair<std::string_view, std::string_view>> pairs,
                            engine::Micros now) {
  config::Settings next = settings_;
  const std::string prefix = "queues." + std::string(queue) + ".";
  for (const auto& [name, value] : pairs) {
    if (auto err = config::apply_setting(next, prefix + std::string(name), value)) {
      err->file.clear();  // not the command line of sluiced: the caller's request
      return invalid(*err);
    }
  }
  if (auto err = config::validate(next)) return invalid(*err);
  const auto options = to_queue_options(queue_settings(next, queue));
  engine::Queue* existing = engine_.find(queue);
  if (!existing && engine_.queue_count() >= settings_.max_queues)
    return {errc::invalid_argument, "queues." + std::string(queue) +
                                        ": a new queue would pass limits.max_queues (" +
                                        std::to_string(settings_.max_queues) + ")"};
  if (existing) {
    if (auto refused = engine_.reconfigure(*existing, options, now)) return refused;
  } else {
    engine_.declare(queue, options);
  }
  settings_ = std::move(next);
  log::info("queue_configured")
      .str("queue", queue)
      .num("settings", static_cast<std::int64_t>(pairs.size()));
  return {};
}

Error LiveConfig::create_queue(std::string_view queue,
                               std::span<const std::pair<std::string_view, std::string_view>> pairs,
                               engine::Micros now) {
  if (engine_.find(queue) != nullptr)
    return {errc::queue_exists, "queue " + std::string(queue) + " exists"};
  if (auto problem = configure(queue, pairs, now)) return problem;
  runtime_queues_.emplace_back(queue);
  log::info("queue_created").str("queue", queue);
  return {};
}

Error LiveConfig::delete_queue(std::string_view queue, bool force, engine::Micros now,
                               std::uint64_t& dropped) {
  engine::Queue* q = engine_.find(queue);
  if (q == nullptr) return {errc::queue_not_found, "no queue named " + std::string(queue)};
  if (std::find(file_queues_.begin(), file_queues_.end(), queue) != file_queues_.end())
    return {errc::queue_in_use, "queues." + std::string(queue) +
                                    " is declared in the config file, so it would come back: "
                                    "remove it there (and reload) first"};
  for (const auto& t : settings_.triggers)
    if (t.queue == queue)
      return {errc::queue_in_use,
              "trigger " + t.name + " consumes queue " + std::string(queue) + ": remove it first"};
  if (auto refused = engine_.can_remove(*q, force)) return refused;
  const std::uint64_t consumers = q->consumer_count();
  dropped = engine_.remove_queue(*q, now);
  // Settings given at run time (create, sluicectl set) go with it.
  std::erase_if(settings_.queues, [&](const config::DeclaredQueue& d) { return d.name == queue; });
  std::erase(runtime_queues_, queue);
  log::info("queue_deleted")
      .str("queue", queue)
      .unum("messages", dropped)
      .unum("consumers_ended", consumers);
  return {};
}

Error LiveConfig::purge_queue(std::string_view queue, engine::Micros now, std::uint64_t& dropped) {
  engine::Queue* q = engine_.find(queue);
  if (q == nullptr) return {errc::queue_not_found, "no queue named " + std::string(queue)};
  dropped = engine_.purge(*q, now);
  log::info("queue_purged").str("queue", queue).unum("messages", dropped);
  return {};
}

Error LiveConfig::run(const protocol::QueuesRequest& request,
                      const std::function<bool(std::string_view)>& visible, engine::Micros now,
                      protocol::QueuesResult& result) {
  result.entries.clear();
  result.affected = 0;
  const auto entry = [](const engine::Queue& q) {
    return protocol::QueueEntry{q.name(), q.durable(), q.counters().messages(),
                                static_cast<std::uint32_t>(q.consumer_count())};
  };
  switch (request.op) {
    case protocol::QueueOp::list: {
      std::vector<const engine::Queue*> queues;
      for (const engine::Queue* q : engine_.queues())
        if ((request.queue.empty() || q->name() == request.queue) && visible(q->name()))
          queues.push_back(q);
      std::sort(queues.begin(), queues.end(),
                [](const auto* a, const auto* b) { return a->name() < b->name(); });
      for (const auto* q : queues) result.entries.push_back(entry(*q));
      if (!request.queue.empty() && queues.empty())
        return {errc::queue_not_found, "no queue named " + std::string(request.queue)};
      result.affected = result.entries.size();
      return {};
    }
    case protocol::QueueOp::create: {
      if (auto problem = create_queue(request.queue, request.settings, now)) return problem;
      result.entries.push_back(entry(*engine_.find(request.queue)));
      result.affected = 1;
      return {};
    }
    case protocol::QueueOp::remove:
      return delete_queue(request.queue, (request.flags & protocol::kQueuesForce) != 0, now,
                          result.affected);
    case protocol::QueueOp::purge:
      return purge_queue(request.queue, now, result.affected);
  }
  return {errc::invalid_argument, "queues: unknown operation"};
}

}  // namespace sluice::net
