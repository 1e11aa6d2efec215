// Little-endian fixed-width fields for LMDB record values (private to storage/).
#pragma once

#include <cstring>
#include <string>
#include <string_view>

namespace sluice::storage::detail {

template <typename T>
void put_le(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out.append(bytes, sizeof(T));
}

/// Reads a T and advances `in`; false if too short.
template <typename T>
bool get_le(std::string_view& in, T& value) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&value, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}

}  // namespace sluice::storage::detail
