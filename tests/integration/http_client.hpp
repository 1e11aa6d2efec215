// A plain blocking HTTP/1.1 client over a POSIX socket, independent of the
// broker's Beast code: one request per connection (Connection: close), the
// answer read to the end. What curl would do, from inside a test.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sluice::test {

struct HttpResult {
  int status = 0;  // 0: no answer (connection failed or closed early)
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  /// The first header named `name` (lower-case), or "".
  std::string header(const std::string& name) const;
};

/// Sends one request to 127.0.0.1:`port` and reads the whole answer.
HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body = "",
                        const std::vector<std::pair<std::string, std::string>>& headers = {});

/// What came back for bytes sent as they are: everything read until the
/// broker closed the connection or `timeout` passed with nothing new.
struct RawHttpExchange {
  std::string received;
  bool closed = false;  // the broker closed the connection (EOF or reset)
  /// How many responses began ("HTTP/1.1 " at a line start).
  std::size_t responses() const;
  /// The status of the first response (0: none).
  int first_status() const;
};

/// Sends `bytes` to 127.0.0.1:`port` over a fresh connection, exactly as given;
/// with `one_byte_per_segment`, a byte per TCP segment, as a slow sender would.
RawHttpExchange http_raw(std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(3000),
                         bool one_byte_per_segment = false);

}  // namespace sluice::test
