#include "sluice/security/token.hpp"

#include "sluice/security/hmac.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <stdexcept>

namespace sluice::security {

namespace {
constexpr std::string_view kPrefix = "sha256:";
constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kDigestBytes = 32;

std::string to_hex(const unsigned char* data, std::size_t n) {
  return security::to_hex(std::string_view(reinterpret_cast<const char*>(data), n));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool from_hex(std::string_view hex, unsigned char* out, std::size_t n) {
  if (hex.size() != 2 * n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

std::array<unsigned char, kDigestBytes> digest(std::string_view salt, std::string_view token) {
  std::array<unsigned char, kDigestBytes> md{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int len = 0;
  const bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx, salt.data(), salt.size()) == 1 &&
                  EVP_DigestUpdate(ctx, token.data(), token.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx, md.data(), &len) == 1 && len == kDigestBytes;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("SHA-256 failed in OpenSSL");
  return md;
}

void random_bytes(unsigned char* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1)
    throw std::runtime_error("the OS random number generator failed");
}
}  // namespace

std::string generate_token() {
  std::array<unsigned char, 32> bytes{};
  random_bytes(bytes.data(), bytes.size());
  return "sluice_" + to_hex(bytes.data(), bytes.size());
}

std::string hash_token(std::string_view token) {
  std::array<unsigned char, kSaltBytes> salt{};
  random_bytes(salt.data(), salt.size());
  return hash_token(token,
                    std::string_view(reinterpret_cast<const char*>(salt.data()), kSaltBytes));
}

std::string hash_token(std::string_view token, std::string_view salt16) {
  if (salt16.size() != kSaltBytes) throw std::invalid_argument("a token salt is 16 bytes");
  const auto md = digest(salt16, token);
  return std::string(kPrefix) +
         to_hex(reinterpret_cast<const unsigned char*>(salt16.data()), kSaltBytes) + ":" +
         to_hex(md.data(), md.size());
}

bool token_matches(std::string_view token, std::string_view hash) {
  if (!is_token_hash(hash)) return false;
  hash.remove_prefix(kPrefix.size());
  std::array<unsigned char, kSaltBytes> salt{};
  std::array<unsigned char, kDigestBytes> expected{};
  if (!from_hex(hash.substr(0, 2 * kSaltBytes), salt.data(), salt.size()) ||
      !from_hex(hash.substr(2 * kSaltBytes + 1), expected.data(), expected.size()))
    return false;
  const auto actual =
      digest(std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()), token);
  return CRYPTO_memcmp(actual.data(), expected.data(), kDigestBytes) == 0;
}

}  // namespace sluice::security
