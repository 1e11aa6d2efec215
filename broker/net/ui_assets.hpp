// The web console's files (ui/), compiled into sluiced by broker/embed_ui.cmake.
#pragma once

#include <optional>
#include <string_view>

namespace sluice::net {

struct UiAsset {
  std::string_view content_type;
  std::string_view body;
};

/// The file `name` of ui/ ("index.html", "app.js", ...), if there is one.
std::optional<UiAsset> find_ui_asset(std::string_view name) noexcept;

}  // namespace sluice::net
