// The one shape of a failure in Sluice: a code from the one list (errc.hpp)
// and a line for a person. The engine, net, storage's public face and the
// client all report failures as an Error. Three low-level forms stay at
// their own boundary and become an Error there: the codec's allocation-free
// protocol::Status (a static detail), LMDB's storage::StorageError (it keeps
// LMDB's number, to tell a full map), and Asio's error_code.
#pragma once

#include <string>
#include <utility>

#include "sluice/protocol/errc.hpp"

namespace sluice {

struct Error {
  errc code = errc::ok;
  std::string detail;

  Error() = default;
  Error(errc c, std::string d) : code(c), detail(std::move(d)) {}

  /// True when this is a failure: `if (auto e = f()) return e;`.
  explicit operator bool() const noexcept { return code != errc::ok; }
  /// "code_name: detail", for logs and people.
  std::string to_string() const { return std::string(sluice::to_string(code)) + ": " + detail; }
};

}  // namespace sluice
