// A plain blocking HTTP/1.1 client over a POSIX socket, independent of the
// broker's Beast code: one request per connection (Connection: close), the
// answer read to the end. What curl would do, from inside a test.
#pragma once

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

}  // namespace sluice::test
