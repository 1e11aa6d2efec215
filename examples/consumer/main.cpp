// Receives COUNT messages from QUEUE, acking each, and prints how many came.
//   consumer HOST:PORT QUEUE COUNT
// The handler runs on the client's I/O thread: it must not block.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <sluice/client/client.hpp>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: consumer HOST:PORT QUEUE COUNT\n");
    return 2;
  }
  const std::string broker = argv[1];
  sluice::client::Options options;
  options.host = broker.substr(0, broker.rfind(':'));
  options.port = static_cast<std::uint16_t>(std::stoi(broker.substr(broker.rfind(':') + 1)));
  options.token = std::getenv("SLUICE_TOKEN") ? std::getenv("SLUICE_TOKEN") : "";
  auto connection = sluice::client::Connection::connect(options);
  if (!connection) {
    std::fprintf(stderr, "consumer: %s\n", connection.error().to_string().c_str());
    return 1;
  }
  const int count = std::atoi(argv[3]);
  std::atomic<int> received{0};
  sluice::client::SubscribeOptions subscribe;
  subscribe.max_in_flight = 32;  // never more than 32 unacked at once
  auto subscription =
      (*connection)->subscribe(argv[2], subscribe, [&](const sluice::client::Delivery&) {
        // Past COUNT: give it back (a nack; the queue retries it after its backoff).
        if (received.load() >= count) return sluice::client::Disposition::nack;
        ++received;
        return sluice::client::Disposition::ack;
      });
  if (!subscription) {
    std::fprintf(stderr, "consumer: %s\n", subscription.error().to_string().c_str());
    return 1;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (received < count && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  (*connection)->unsubscribe(*subscription);
  (*connection)->ping();  // the last acks reach the broker before the connection closes
  std::printf("received %d\n", received.load());
  return received >= count ? 0 : 1;
}
