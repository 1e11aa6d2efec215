// DataDir: the broker's data directory. One LMDB environment whose layout is
// versioned (a "meta" database records the format), held by one sluiced at a
// time (an exclusive lock file with the holder's pid). Opening a directory of
// a newer or unknown format, or one in use, fails with one clear line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "sluice/storage/lmdb.hpp"

namespace sluice::storage {

class DataDir {
 public:
  /// The layout this build writes and reads.
  static constexpr std::uint32_t kFormatVersion = 1;

  DataDir() = default;
  ~DataDir();
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;

  /// Creates `path` if needed, takes the lock, opens the environment and
  /// checks (or, when new, writes) the format. The problem as one line; a
  /// failed open holds nothing (no lock, no environment).
  Error open(const std::string& path, const Env::Options& options);
  /// Closes the environment, then releases the lock. Idempotent.
  void close() noexcept;

  Env& env() noexcept { return env_; }
  const Env& env() const noexcept { return env_; }
  const std::string& path() const noexcept { return path_; }

 private:
  Error open_locked(const std::string& path, const Env::Options& options);

  std::string path_;
  int lock_fd_ = -1;
  Env env_;
};

}  // namespace sluice::storage
