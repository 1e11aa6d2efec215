// Tells systemd how sluiced is doing (the sd_notify protocol, without
// libsystemd): READY=1 once recovered and listening (Type=notify), STOPPING=1
// when it stops, and WATCHDOG=1 at half of WatchdogSec while the I/O thread
// turns. Without $NOTIFY_SOCKET every call does nothing.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <string>
#include <string_view>

namespace sluice::net {

class SystemdNotifier {
 public:
  /// Reads $NOTIFY_SOCKET ("/path" or "@abstract"), $WATCHDOG_USEC and $WATCHDOG_PID.
  explicit SystemdNotifier(boost::asio::io_context& io);
  ~SystemdNotifier();
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  bool enabled() const noexcept { return fd_ >= 0; }
  /// Sends `state` ("READY=1\nSTATUS=..."); false when it could not be sent.
  bool notify(std::string_view state);
  /// Pets the watchdog every half interval from the I/O thread, if systemd asked for one.
  void start_watchdog();
  void stop_watchdog();
  /// The watchdog interval systemd asked for (0: none).
  std::chrono::microseconds watchdog_interval() const noexcept { return watchdog_; }

 private:
  void arm();

  int fd_ = -1;
  std::string address_;  // sun_path bytes (a leading '\0' for the abstract namespace)
  std::chrono::microseconds watchdog_{0};
  boost::asio::steady_timer timer_;
  bool watching_ = false;
};

}  // namespace sluice::net
