#include "http_util.hpp"

#include <openssl/evp.h>

#include <cstring>

#include "utf8.hpp"

#include <array>
#include <cstdint>

namespace sluice::net {

bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t at = 0; at < s.size();) {
    const std::size_t n = utf8_sequence_length(s, at);
    if (n == 0) return false;
    at += n;
  }
  return true;
}

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string url_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() && hex_value(in[i + 1]) >= 0 &&
               hex_value(in[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2]));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}
}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out((bytes.size() + 2) / 3 * 4 + 1, '\0');  // EVP_EncodeBlock adds a NUL
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  // Stricter than EVP_DecodeBlock (which skips surrounding whitespace): the
  // alphabet only, then padding; padding itself is optional.
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  for (char c : text)
    if (std::memchr(kAlphabet, c, 64) == nullptr) return std::nullopt;
  const std::size_t pad = (4 - text.size() % 4) % 4;
  std::string padded(text);
  padded.append(pad, '=');
  std::string out(padded.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(padded.data()),
                                static_cast<int>(padded.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - pad);  // it counts the padding as zero bytes
  return out;
}

std::pair<std::string_view, std::vector<std::pair<std::string, std::string>>> split_target(
    std::string_view target) {
  std::vector<std::pair<std::string, std::string>> query;
  const auto q = target.find('?');
  if (q == std::string_view::npos) return {target, query};
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    if (!pair.empty()) {
      const auto eq = pair.find('=');
      if (eq == std::string_view::npos)
        query.emplace_back(url_decode(pair), "");
      else
        query.emplace_back(url_decode(pair.substr(0, eq)), url_decode(pair.substr(eq + 1)));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return {target.substr(0, q), query};
}

}  // namespace sluice::net
