// HMAC-SHA256 and a constant-time compare: what verifying a signed webhook
// (broker/net/sources.cpp) and signing a trigger's request need.
#pragma once

#include <string>
#include <string_view>

namespace sluice::security {

/// HMAC-SHA256 of `data` under `key`: the 32 raw bytes, or "" if OpenSSL failed
/// (callers must not take "" for a digest).
std::string hmac_sha256(std::string_view key, std::string_view data);

/// True when `a` and `b` are equal and not empty (an empty signature never
/// verifies); the time taken depends on their lengths only, never on where
/// they first differ.
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

/// Lower-case hex of `bytes`.
std::string to_hex(std::string_view bytes);

}  // namespace sluice::security
