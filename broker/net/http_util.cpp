#include "http_util.hpp"

#include <zlib.h>

#include <openssl/evp.h>

#include <cstring>

#include "utf8.hpp"

#include <array>
#include <cstdint>

namespace sluice::net {

bool accepts_gzip(const std::string* accept_encoding) noexcept {
  if (accept_encoding == nullptr) return false;
  // An explicit "gzip" decides; otherwise "*" does (RFC 9110, 12.5.3). q=0 refuses.
  int gzip = -1, any = -1;  // -1 not listed, 0 refused, 1 accepted
  std::string_view rest(*accept_encoding);
  const auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  const auto lower_is = [](std::string_view v, std::string_view word) {
    if (v.size() != word.size()) return false;
    for (std::size_t i = 0; i < v.size(); ++i)
      if ((v[i] | 0x20) != word[i]) return false;
    return true;
  };
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto semicolon = item.find(';');
    const std::string_view coding = trim(item.substr(0, semicolon));
    std::string_view params =
        semicolon == std::string_view::npos ? std::string_view{} : trim(item.substr(semicolon + 1));
    const bool refused = params.size() >= 3 && (params[0] | 0x20) == 'q' && params[1] == '=' &&
                         params[2] == '0' &&
                         params.find_first_not_of("0.", 2) == std::string_view::npos;
    if (lower_is(coding, "gzip"))
      gzip = refused ? 0 : 1;
    else if (coding == "*")
      any = refused ? 0 : 1;
  }
  return gzip == 1 || (gzip == -1 && any == 1);
}

std::string gzip(std::string_view bytes) {
  z_stream z{};
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  std::string out(deflateBound(&z, static_cast<uLong>(bytes.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int result = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return result == Z_STREAM_END ? out : std::string();
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
