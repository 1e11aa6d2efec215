// integration_tests: doctest, plus one helper role the tests start as a separate
// process (so it can be killed with SIGKILL like a real consumer):
//
//   integration_tests --hold-consumer PORT QUEUE CREDIT
//
// subscribes to QUEUE with CREDIT, never settles anything, prints
// "holding CREDIT" once it holds that many, and waits to be killed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "sluice/client/client.hpp"

namespace {

int hold_consumer(const char* port, const char* queue, const char* credit_text) {
  sluice::client::Options options;
  options.port = static_cast<std::uint16_t>(std::atoi(port));
  options.client_name = "hold-consumer";
  auto connection = sluice::client::Connection::connect(options);
  if (!connection) return 1;
  const auto credit = static_cast<std::uint32_t>(std::atoi(credit_text));
  std::atomic<std::uint32_t> held{0};
  auto sub =
      (*connection)
          ->subscribe(queue, {.max_in_flight = credit}, [&](const sluice::client::Delivery&) {
            if (held.fetch_add(1) + 1 == credit) {
              std::printf("holding %u\n", credit);
              std::fflush(stdout);
            }
            return sluice::client::Disposition::manual;
          });
  if (!sub) return 1;
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string_view(argv[1]) == "--hold-consumer")
    return hold_consumer(argv[2], argv[3], argv[4]);
  doctest::Context context(argc, argv);
  return context.run();
}
