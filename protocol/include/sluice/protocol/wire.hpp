// Little-endian primitives for reading and writing frame bodies. Inline on
// purpose: they sit on the per-message hot path in broker and client.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sluice::protocol {

/// Reads fixed-width little-endian fields from a byte span. A read past the end
/// sets a sticky failure flag and yields zeros: callers check `ok()` once at
/// the end instead of after every field. Never reads outside the span.
/// Not thread-safe (a value type; use one per thread).
class Reader {
 public:
  explicit Reader(std::string_view bytes) noexcept : p_(bytes.data()), end_(p_ + bytes.size()) {}

  std::uint8_t u8() noexcept { return fixed<std::uint8_t>(); }
  std::uint16_t u16() noexcept { return fixed<std::uint16_t>(); }
  std::uint32_t u32() noexcept { return fixed<std::uint32_t>(); }
  std::uint64_t u64() noexcept { return fixed<std::uint64_t>(); }

  /// A u16-length-prefixed string, as a view into the input.
  std::string_view str16() noexcept { return bytes(u16()); }
  /// A u32-length-prefixed byte string, as a view into the input.
  std::string_view bytes32() noexcept { return bytes(u32()); }

  /// The next `n` bytes as a view; fails (empty view) if fewer remain.
  std::string_view bytes(std::size_t n) noexcept {
    if (failed_ || static_cast<std::size_t>(end_ - p_) < n) {
      failed_ = true;
      return {};
    }
    std::string_view v(p_, n);
    p_ += n;
    return v;
  }

  /// Bytes not yet read.
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  const char* position() const noexcept { return p_; }
  bool ok() const noexcept { return !failed_; }
  /// True when every read succeeded and the input is used up exactly.
  bool done() const noexcept { return !failed_ && p_ == end_; }
  void fail() noexcept { failed_ = true; }

 private:
  template <typename T>
  T fixed() noexcept {
    if (failed_ || static_cast<std::size_t>(end_ - p_) < sizeof(T)) {
      failed_ = true;
      return 0;
    }
    T v;
    std::memcpy(&v, p_, sizeof(T));  // x86-64 and aarch64 Linux are little-endian
    p_ += sizeof(T);
    return v;
  }

  const char* p_;
  const char* end_;
  bool failed_ = false;
};

/// Appends little-endian fields to a std::string used as a byte buffer.
/// Callers that write many fields should `reserve` first.
namespace put {
template <typename T>
inline void fixed(std::string& out, T v) {
  char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  out.append(raw, sizeof(T));
}
inline void u8(std::string& out, std::uint8_t v) {
  out.push_back(static_cast<char>(v));
}
inline void u16(std::string& out, std::uint16_t v) {
  fixed(out, v);
}
inline void u32(std::string& out, std::uint32_t v) {
  fixed(out, v);
}
inline void u64(std::string& out, std::uint64_t v) {
  fixed(out, v);
}
/// Caller guarantees s.size() <= 65535 (checked by the frame encoders).
inline void str16(std::string& out, std::string_view s) {
  u16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}
inline void bytes32(std::string& out, std::string_view s) {
  u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}
/// Overwrites a u32 at `offset` (used to patch a frame's length or count).
inline void patch_u32(std::string& out, std::size_t offset, std::uint32_t v) {
  std::memcpy(out.data() + offset, &v, sizeof v);
}
}  // namespace put

}  // namespace sluice::protocol
