// Strict JSON request bodies for the HTTP API, read as strictly as the config
// file: no byte order mark, no key twice in one object, no field an endpoint
// does not take. Each refusal names the field.
#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::net {

/// Parses `text`; nullopt with the problem when it is not JSON, starts with a
/// byte order mark or repeats a key within one object.
std::optional<nlohmann::json> parse_strict(std::string_view text, std::string& problem);

/// A field of `object` that is not one of `allowed`: the problem, or nullopt.
std::optional<std::string> unknown_field(const nlohmann::json& object,
                                         std::initializer_list<std::string_view> allowed);

}  // namespace sluice::net
