// libFuzzer target: a JSON Schema on the first line, an instance after it (no
// newline: the whole input is the schema, the instance null). compile() must
// refuse or accept any schema, and validate() judge any instance, without
// crashing, throwing, hanging or recursing without bound.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sluice/schema/schema.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto newline = input.find('\n');
  const std::string_view schema_text = input.substr(0, newline);
  const std::string_view instance_text =
      newline == std::string_view::npos ? std::string_view("null") : input.substr(newline + 1);

  const auto document = nlohmann::json::parse(schema_text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return 0;
  std::string error;
  const auto schema = sluice::schema::Schema::compile(document, error);
  if (!schema) return 0;
  const auto instance = nlohmann::json::parse(instance_text, nullptr, /*allow_exceptions=*/false);
  if (instance.is_discarded()) return 0;
  if (const auto violation = schema->validate(instance))
    (void)(violation->pointer.size() + violation->keyword.size() + violation->message.size());
  return 0;
}
