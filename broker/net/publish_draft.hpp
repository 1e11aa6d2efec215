// A message on its way in from HTTP (a publish, a CloudEvent, a verified
// webhook), before it is encoded and offered to the Intake.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace sluice::net {

struct PublishDraft {
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload;
  std::string correlation_id;

  bool has_header(std::string_view name) const noexcept {
    for (const auto& [k, v] : headers)
      if (k == name) return true;
    return false;
  }
};

}  // namespace sluice::net
