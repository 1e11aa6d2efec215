// A subscription's handler on threads of its own (SubscribeOptions::workers):
// the I/O thread copies each delivery into the pool's queue; a free worker
// runs the handler and settles the lease by what it returned, or nacks it
// with the exception's message when it throws. The subscription's credit is
// the number of workers, so the queue never holds more than one delivery per
// worker and "N at once" stays the broker's promise.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sluice/client/client.hpp"

namespace sluice::client {

class WorkerPool {
 public:
  /// `settle(lease, disposition, reason)` acks or nacks from a worker thread.
  using Settle =
      std::function<void(const LeaseHandle&, Disposition, const std::string& nack_reason)>;
  WorkerPool(Connection::Handler handler, Settle settle, std::uint32_t workers);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  /// On the I/O thread: queues a copy of `delivery` for the next free worker.
  void push(const Delivery& delivery);
  /// Forgets what no worker has started (the connection dropped: the broker
  /// delivers those again).
  void drop_queued();
  /// Stops the workers once what is queued has run, and joins them.
  void stop();

 private:
  struct Owned {
    Delivery view;  // points into the strings below
    std::string payload;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  void run();

  Connection::Handler handler_;
  Settle settle_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Owned> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace sluice::client
