// Handles COUNT messages from QUEUE on WORKERS threads, each handler free to
// block (here it sleeps as a slow call would); a handler that throws nacks
// its message with the exception's text. Prints how many were handled and
// the most that ran at once, which the broker keeps at WORKERS.
//   worker_pool HOST:PORT QUEUE COUNT WORKERS
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include <sluice/client/client.hpp>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: worker_pool HOST:PORT QUEUE COUNT WORKERS\n");
    return 2;
  }
  const std::string broker = argv[1];
  sluice::client::Options options;
  options.host = broker.substr(0, broker.rfind(':'));
  options.port = static_cast<std::uint16_t>(std::stoi(broker.substr(broker.rfind(':') + 1)));
  options.token = std::getenv("SLUICE_TOKEN") ? std::getenv("SLUICE_TOKEN") : "";
  auto connection = sluice::client::Connection::connect(options);
  if (!connection) {
    std::fprintf(stderr, "worker_pool: %s\n", connection.error().to_string().c_str());
    return 1;
  }
  const int count = std::atoi(argv[3]);
  std::atomic<int> handled{0}, running{0}, most{0};
  sluice::client::SubscribeOptions subscribe;
  subscribe.workers = static_cast<std::uint32_t>(std::atoi(argv[4]));
  auto subscription =
      (*connection)->subscribe(argv[2], subscribe, [&](const sluice::client::Delivery& d) {
        if (d.payload.empty()) throw std::invalid_argument("an empty order");  // nacked
        const int now = ++running;
        for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a slow call
        --running;
        ++handled;
        return sluice::client::Disposition::ack;  // acked when the handler returns
      });
  if (!subscription) {
    std::fprintf(stderr, "worker_pool: %s\n", subscription.error().to_string().c_str());
    return 1;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (handled < count && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  (*connection)->unsubscribe(*subscription);  // waits for running handlers
  std::printf("handled %d, at most %d at once\n", handled.load(), most.load());
  return handled >= count ? 0 : 1;
}
