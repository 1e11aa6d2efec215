// Access tokens: how they are made, how the config stores them (salted
// SHA-256, never the token itself) and how the broker checks one.
//
// A token sluicectl makes holds 256 random bits, so one fast salted hash is
// enough: there is nothing to guess by brute force. A hash is
// "sha256:<32 hex salt>:<64 hex digest of salt bytes + token>".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sluice::security {

/// A fresh random token: "sluice_" + 64 hex digits (256 bits from the OS's CSPRNG).
std::string generate_token();

/// The config line for `token` with a fresh random salt.
std::string hash_token(std::string_view token);
/// The same with a given 16-byte salt (tests).
std::string hash_token(std::string_view token, std::string_view salt16);

/// True when `token` hashes to `hash` (constant time in the digest compare).
/// False for a malformed hash too.
bool token_matches(std::string_view token, std::string_view hash);

/// True when `hash` has the form hash_token() writes. Inline and free of
/// OpenSSL, so the config library checks the form without linking it.
inline bool is_token_hash(std::string_view hash) {
  constexpr std::string_view kPrefix = "sha256:";
  constexpr std::size_t kSaltHex = 32, kDigestHex = 64;
  if (!hash.starts_with(kPrefix)) return false;
  hash.remove_prefix(kPrefix.size());
  if (hash.size() != kSaltHex + 1 + kDigestHex || hash[kSaltHex] != ':') return false;
  for (std::size_t i = 0; i < hash.size(); ++i) {
    const char c = hash[i];
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (i != kSaltHex && !hex) return false;
  }
  return true;
}

/// Tokens shorter than this are refused by sluicectl hash-token: a salted
/// fast hash protects only tokens too long to guess.
constexpr std::size_t kMinTokenLength = 24;

}  // namespace sluice::security
