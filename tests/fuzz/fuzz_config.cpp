// libFuzzer target: any text as a config file, and as a "name=value" flag.
// The parser must report problems as values, never crash or throw out.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sluice/config/settings.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  sluice::config::Settings settings;
  if (auto error = sluice::config::load_text(input, "fuzz.toml", settings)) {
    (void)error->to_string();
  } else {
    (void)sluice::config::validate(settings);
  }
  // First line "name", the rest "value".
  const auto newline = input.find('\n');
  if (newline != std::string_view::npos) {
    sluice::config::Settings flags;
    if (auto error = sluice::config::apply_setting(flags, input.substr(0, newline),
                                                   input.substr(newline + 1)))
      (void)error->to_string();
    (void)sluice::config::validate(flags);
  }
  return 0;
}
