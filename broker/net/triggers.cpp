#include "triggers.hpp"

#include <fstream>
#include <iterator>
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
  out.name = s.name;
  out.queue = s.queue;
  out.url = *url;
  out.method = s.method;
  for (const auto& line : s.headers) {
    const auto colon = line.find(':');
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out.headers.emplace_back(line.substr(0, colon), std::move(value));
  }
  out.timeout = s.timeout;
  out.max_concurrency = s.max_concurrency;
  out.adaptive = s.adaptive;
  out.min_concurrency = s.min_concurrency;
  out.batch_size = s.batch_size;
  out.batch_window = s.batch_window;
  out.batch_max_bytes = s.batch_max_bytes;
  out.json_body = s.body_json;
  out.ca_file = s.ca_file;
  out.breaker_window = s.breaker_window;
  out.breaker_failure_ratio = s.breaker_failure_ratio / 1000.0;
  out.breaker_min_calls = s.breaker_min_calls;
  out.breaker_consecutive = s.breaker_consecutive;
  out.breaker_open_for = s.breaker_open_for;
  out.breaker_open_max = s.breaker_open_max;
  out.breaker_probes = s.breaker_probes;
  out.verify = s.verify;
  out.dead_letter_on.assign(s.dead_letter_on.begin(), s.dead_letter_on.end());
  if (!s.signing_secret_file.empty()) {
    std::ifstream file(s.signing_secret_file, std::ios::binary);
    std::string secret((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (!file.good() && !file.eof())
      return {errc::invalid_argument,
              prefix + ".signing_secret_file: cannot read " + s.signing_secret_file};
    while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back())))
      secret.pop_back();
    // A Standard Webhooks secret "whsec_<base64>" is the key its base64 encodes.
    if (secret.starts_with("whsec_")) {
      auto key = base64_decode(std::string_view(secret).substr(6));
      if (!key)
        return {errc::invalid_argument,
                prefix + ".signing_secret_file: whsec_ secret is not base64"};
      secret = std::move(*key);
    }
    if (secret.size() < 16)
      return {errc::invalid_argument,
              prefix + ".signing_secret_file: " + s.signing_secret_file +
                  " holds fewer than 16 bytes; a signing key needs more (e.g. openssl rand "
                  "-base64 32)"};
    out.signing_secret = std::move(secret);
  }
  return {};
}

Triggers::~Triggers() {
  stop();
}

Error Triggers::apply(const std::vector<config::TriggerSettings>& settings) {
  // Everything is checked before anything changes.
  std::map<std::string, TriggerOptions> wanted;
  for (const auto& s : settings) {
    TriggerOptions options;
    if (auto problem = to_trigger_options(s, options)) return problem;
    wanted.emplace(s.name, std::move(options));
  }
  std::set<std::string> keep;
  for (const auto& s : settings) {
    auto it = applied_.find(s.name);
    if (it != applied_.end() && it->second == s) keep.insert(s.name);
  }
  for (auto it = running_.begin(); it != running_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    log::info("trigger_stopped").str("trigger", it->first);
    it->second->stop();
    applied_.erase(it->first);
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
    applied_[s.name] = s;
    running_[s.name] = std::move(trigger);
  }
  return first;
}

void Triggers::stop() {
  for (auto& [name, trigger] : running_) trigger->stop();
  running_.clear();
  applied_.clear();
}

}  // namespace sluice::net
