// A map keyed by std::string that finds by std::string_view without building
// a string: queue names, ordering keys, dedup ids and source addresses.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace sluice {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

template <typename T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

}  // namespace sluice
