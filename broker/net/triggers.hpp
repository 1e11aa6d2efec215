// The running triggers, kept equal to the config's [triggers.NAME] tables:
// at start, and on every reload (added, changed and removed without a
// restart; a removed or changed trigger gives back what it holds at once).
// Engine thread only.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sluice/config/settings.hpp"
#include "sluice/protocol/error.hpp"
#include "trigger.hpp"

namespace sluice::net {

class Broker;

/// The trigger's options from its settings; reads the signing secret file.
Error to_trigger_options(const config::TriggerSettings& settings, TriggerOptions& out);

class Triggers {
 public:
  /// Registers with `broker` (Broker::triggers) until destroyed.
  explicit Triggers(Broker& broker);
  ~Triggers();

  /// Makes the running triggers those of `settings`. All or nothing on a bad
  /// one (an unreadable secret file, a credit the queue refuses): the problem.
  Error apply(const std::vector<config::TriggerSettings>& settings);
  /// Stops every trigger (shutdown).
  void stop();
  /// Every running trigger, by name.
  const std::map<std::string, std::unique_ptr<Trigger>>& running() const noexcept {
    return running_;
  }
  /// The running trigger named `name`, or null.
  Trigger* find(std::string_view name) const;

 private:
  Broker& broker_;
  std::map<std::string, std::unique_ptr<Trigger>> running_;
  // Engine subscription ids of triggers; protocol sessions number their own.
  std::uint32_t next_subscription_ = 1;
};

}  // namespace sluice::net
