#include "triggers.hpp"

#include <set>

#include "broker.hpp"
#include "http_util.hpp"
#include "log.hpp"

namespace sluice::net {

Error to_trigger_options(const config::TriggerSettings& s, TriggerOptions& out) {
  const std::string prefix = "triggers." + s.name;
  auto url = Url::parse(s.url);
  if (!url) return {errc::invalid_argument, prefix + ".url: not an http or https URL: " + s.url};
  out = {};
  out.settings = s;
  out.url = *url;
  for (const auto& line : s.headers) {
    const auto colon = line.find(':');
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out.headers.emplace_back(line.substr(0, colon), std::move(value));
  }
  if (!s.signing_secret_file.empty())
    if (Error problem = read_secret_key(s.signing_secret_file, SecretForm::whsec_prefix,
                                        prefix + ".signing_secret_file", out.signing_secret))
      return problem;
  return {};
}

Triggers::Triggers(Broker& broker) : broker_(broker) {
  broker_.set_triggers(this);
}

Triggers::~Triggers() {
  stop();
  if (broker_.triggers() == this) broker_.set_triggers(nullptr);
}

Trigger* Triggers::find(std::string_view name) const {
  const auto it = running_.find(std::string(name));
  return it == running_.end() ? nullptr : it->second.get();
}

Error Triggers::apply(const std::vector<config::TriggerSettings>& settings) {
  // Everything is checked before anything changes.
  std::map<std::string, TriggerOptions> wanted;
  for (const auto& s : settings) {
    TriggerOptions options;
    if (auto problem = to_trigger_options(s, options)) return problem;
    wanted.emplace(s.name, std::move(options));
  }
  std::set<std::string> keep;  // running as configured: left alone
  for (const auto& s : settings) {
    auto it = running_.find(s.name);
    if (it != running_.end() && it->second->options().settings == s) keep.insert(s.name);
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    log::info("trigger_stopped").str("trigger", it->first);
    it->second->stop();
    it = running_.erase(it);
  }
  Error first;
  for (const auto& s : settings) {
    if (keep.count(s.name)) continue;
    auto trigger =
        std::make_unique<Trigger>(broker_, std::move(wanted[s.name]), next_subscription_++);
    if (auto problem = trigger->start()) {
      log::warn("trigger_not_started").str("trigger", s.name).str("problem", problem.detail);
      if (!first) first = std::move(problem);
      continue;
    }
    running_[s.name] = std::move(trigger);
  }
  return first;
}

void Triggers::stop() {
  for (auto& [name, trigger] : running_) trigger->stop();
  running_.clear();
}

}  // namespace sluice::net
