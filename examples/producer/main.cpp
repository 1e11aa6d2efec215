// Publishes COUNT messages to QUEUE and waits for every confirm.
//   producer HOST:PORT QUEUE COUNT
#include <cstdio>
#include <cstdlib>
#include <string>

#include <sluice/client/client.hpp>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: producer HOST:PORT QUEUE COUNT\n");
    return 2;
  }
  const std::string broker = argv[1];
  sluice::client::Options options;
  options.host = broker.substr(0, broker.rfind(':'));
  options.port = static_cast<std::uint16_t>(std::stoi(broker.substr(broker.rfind(':') + 1)));
  options.token = std::getenv("SLUICE_TOKEN") ? std::getenv("SLUICE_TOKEN") : "";
  auto connection = sluice::client::Connection::connect(options);
  if (!connection) {
    std::fprintf(stderr, "producer: %s\n", connection.error().to_string().c_str());
    return 1;
  }
  const int count = std::atoi(argv[3]);
  for (int i = 0; i < count; ++i) {
    sluice::client::Message message;
    message.payload = "order " + std::to_string(i);
    message.headers.emplace_back("content-type", "text/plain");
    // Batched into frames and pipelined; the callback runs when the broker confirms.
    (*connection)
        ->publish_async(argv[2], message, [](const sluice::client::Error& e, std::uint64_t) {
          if (e) std::fprintf(stderr, "producer: %s\n", e.to_string().c_str());
        });
  }
  if (!(*connection)->wait_confirms(std::chrono::seconds(30))) return 1;
  std::printf("published %d\n", count);
  return 0;
}
