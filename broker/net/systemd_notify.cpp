#include "systemd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "log.hpp"

namespace sluice::net {

SystemdNotifier::SystemdNotifier(boost::asio::io_context& io) : timer_(io) {
  const char* socket_path = std::getenv("NOTIFY_SOCKET");
  if (socket_path == nullptr || (socket_path[0] != '/' && socket_path[0] != '@') ||
      std::strlen(socket_path) >= sizeof(sockaddr_un::sun_path))
    return;
  address_ = socket_path;
  if (address_[0] == '@') address_[0] = '\0';
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  // The watchdog is ours when systemd named no process, or named this one.
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  if (usec != nullptr && (pid == nullptr || std::strtoll(pid, nullptr, 10) == ::getpid())) {
    const long long us = std::strtoll(usec, nullptr, 10);
    if (us > 0) watchdog_ = std::chrono::microseconds(us);
  }
}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

bool SystemdNotifier::notify(std::string_view state) {
  if (fd_ < 0) return false;
  sockaddr_un to{};
  to.sun_family = AF_UNIX;
  std::memcpy(to.sun_path, address_.data(), address_.size());
  const auto length =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size() +
                             (address_[0] == '\0' ? 0 : 1));  // a path ends with its NUL
  const ssize_t sent = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                                reinterpret_cast<const sockaddr*>(&to), length);
  if (sent != static_cast<ssize_t>(state.size())) {
    log::warn("systemd_notify_failed").str("state", state).str("error", std::strerror(errno));
    return false;
  }
  return true;
}

void SystemdNotifier::start_watchdog() {
  if (fd_ < 0 || watchdog_.count() == 0 || watching_) return;
  watching_ = true;
  arm();
}

void SystemdNotifier::stop_watchdog() {
  watching_ = false;
  timer_.cancel();
}

void SystemdNotifier::arm() {
  // Half the interval, as sd_watchdog_enabled(3) advises: one late turn is not a restart.
  timer_.expires_after(watchdog_ / 2);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || !watching_) return;
    notify("WATCHDOG=1");
    arm();
  });
}

}  // namespace sluice::net
