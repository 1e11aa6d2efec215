#include "sluice/storage/data_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace sluice::storage {

namespace {
constexpr std::string_view kFormatKey = "format";

std::string read_pid(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string pid(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  return pid.empty() ? "unknown" : pid;
}
}  // namespace

DataDir::~DataDir() {
  close();
}

void DataDir::close() noexcept {
  env_ = Env();                          // LMDB closed first: the lock guards it until then
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
  lock_fd_ = -1;
}

Error DataDir::open(const std::string& path, const Env::Options& options) {
  if (lock_fd_ >= 0) return storage_error("data directory " + path_ + " is already open here");
  auto problem = open_locked(path, options);
  if (problem) close();  // a failed open holds nothing
  return problem;
}

Error DataDir::open_locked(const std::string& path, const Env::Options& options) {
  path_ = path;
  std::error_code ec;
  // A directory made here is its user's alone (0700): it holds every message.
  if (std::filesystem::create_directories(path, ec) && !ec)
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  if (ec) return storage_error("cannot create data directory " + path + ": " + ec.message());

  const std::string lock_path = path + "/sluiced.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return storage_error("cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = read_pid(lock_fd_);
    return storage_error("data directory " + path + " is in use by another sluiced (pid " + holder +
                         ")");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 ||
      ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    return storage_error("cannot write " + lock_path + ": " + std::strerror(errno));

  if (auto e = env_.open(path, options)) return storage_error(*e);

  Txn txn;
  if (auto e = txn.begin(env_, false)) return storage_error(*e);
  Db meta;
  if (auto e = txn.open_db("meta", meta)) return storage_error(*e);
  std::optional<std::string_view> format;
  if (auto e = txn.get(meta, kFormatKey, format)) return storage_error(*e);
  if (!format) {
    const std::uint32_t version = kFormatVersion;
    if (auto e = txn.put(meta, kFormatKey, {reinterpret_cast<const char*>(&version), 4}))
      return storage_error(*e);
    if (auto e = txn.commit()) return storage_error(*e);
    return {};
  }
  std::uint32_t version = 0;
  if (format->size() != 4)
    return storage_error("data directory " + path + " has an unreadable format record");
  std::memcpy(&version, format->data(), 4);
  if (version != kFormatVersion) {
    return storage_error("data directory " + path + " has storage format " +
                         std::to_string(version) +
                         (version > kFormatVersion ? ", newer than this sluiced understands ("
                                                   : ", which this sluiced cannot read (") +
                         std::to_string(kFormatVersion) + "); use the matching sluiced version");
  }
  return {};
}

}  // namespace sluice::storage
