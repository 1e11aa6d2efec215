// sluicectl --json: every command that prints data prints one JSON document
// instead (one line), with the same fields as the text, unabridged.
#pragma once

#include <nlohmann/json.hpp>

#include "sluice/client/client.hpp"

namespace sluicectl {

nlohmann::json queue_json(const sluice::client::QueueStats& q);
nlohmann::json storage_json(const sluice::client::StorageStats& s);
/// One dead letter: ids, attempts, times (Unix µs), reason, headers and the payload
/// ("payload" when it is UTF-8, else "payload_base64").
nlohmann::json dead_letter_json(const sluice::client::DeadLetter& e);
/// A message's headers and payload, as in dead_letter_json.
void describe(std::string_view payload,
              const std::vector<std::pair<std::string, std::string>>& headers, nlohmann::json& out);
nlohmann::json trigger_json(const sluice::client::TriggerState& t);
nlohmann::json invocation_json(const sluice::client::TriggerInvocation& i);
/// Prints `document` on one line.
void print_json(const nlohmann::json& document);

}  // namespace sluicectl
