# Writes OUT: the web console's files (UI_DIR, the repository's ui/) as byte
# arrays and a table of them, so sluiced serves /ui/ from its own binary
# (nothing fetched at run time, no build step beyond CMake). Run by
# broker/CMakeLists.txt.
file(GLOB FILES LIST_DIRECTORIES false "${UI_DIR}/*")
list(FILTER FILES EXCLUDE REGEX "/\\.[^/]*$|~$")  # no dotfiles or editor backups
list(SORT FILES)
set(arrays "")
set(table "")
set(n 0)
foreach(file IN LISTS FILES)
  get_filename_component(name "${file}" NAME)
  get_filename_component(ext "${file}" LAST_EXT)
  if(ext STREQUAL ".html")
    set(type "text/html; charset=utf-8")
  elseif(ext STREQUAL ".js")
    set(type "text/javascript; charset=utf-8")
  elseif(ext STREQUAL ".css")
    set(type "text/css; charset=utf-8")
  elseif(ext STREQUAL ".svg")
    set(type "image/svg+xml")
  elseif(ext STREQUAL ".png")
    set(type "image/png")
  else()
    message(FATAL_ERROR "ui/${name}: no content type for ${ext} files")
  endif()
  file(READ "${file}" hex HEX)
  string(LENGTH "${hex}" hex_length)
  math(EXPR size "${hex_length} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND arrays "const unsigned char kFile${n}[] = {${bytes}0};\n")
  string(APPEND table "    {\"${name}\", \"${type}\", kFile${n}, ${size}},\n")
  math(EXPR n "${n} + 1")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from ui/ by broker/embed_ui.cmake: do not edit.
#include \"ui_assets.hpp\"

namespace sluice::net {
namespace {
${arrays}
struct Entry {
  const char* name;
  const char* type;
  const unsigned char* data;
  std::size_t size;
};
const Entry kEntries[] = {
${table}};
}  // namespace

std::optional<UiAsset> find_ui_asset(std::string_view name) noexcept {
  for (const Entry& e : kEntries)
    if (name == e.name)
      return UiAsset{e.type, std::string_view(reinterpret_cast<const char*>(e.data), e.size)};
  return std::nullopt;
}

}  // namespace sluice::net
")
# Only a changed file is replaced, so an unchanged console does not rebuild.
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
