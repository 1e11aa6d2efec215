#include "ready_spool.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "sluice/protocol/wire.hpp"

namespace sluice::engine {
namespace {

// Chunk sizes (data bytes): the first is small, so a queue holding a few
// messages holds little; each next one doubles up to kMaxChunk, so a large
// backlog takes one chunk per ~600 messages of 100 bytes. An empty spool
// keeps its chunk only up to kKeepChunk.
constexpr std::uint32_t kFirstChunk = 512;
// The largest chunk is 64 KiB with its header: 16 whole pages, mapped on
// their own rather than taken from the malloc heap, so that a backlog's
// chunks do not pin the heap memory that requests used between them (HTTP
// batches parse into many small allocations).
constexpr std::size_t kChunkHeader = 24;  // sizeof(ReadySpool::Chunk), checked in reserve()
constexpr std::size_t kMaxChunkBytes = 64 * 1024;
constexpr std::uint32_t kMaxChunk = kMaxChunkBytes - kChunkHeader;
constexpr std::uint32_t kKeepChunk = 4096;
// Largest chunks given back are kept for reuse, up to this many per thread
// (4 MiB): a backlog that drains and builds again, as it does under a
// producer that runs ahead of its consumers, then reuses warm memory instead
// of going through malloc and fresh pages for every 600 messages.
constexpr std::size_t kPooledChunks = 64;
// The most a record's varints take: tag, key_at, id and time.
constexpr std::size_t kMaxRecordHead = 4 * 10;

constexpr std::uint32_t kParked = 1, kCompact = 2, kDurable = 4, kRedriven = 8, kNextId = 16,
                        kSameTime = 32;
constexpr int kFlagBits = 6;
// "No properties, no headers" before a bytes32 payload: what a compact record leaves out.
constexpr std::size_t kCompactPrefix = 7;

char* put_varint(char* out, std::uint64_t v) noexcept {
  while (v >= 0x80) {
    *out++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<char>(v);
  return out;
}

std::uint64_t get_varint(const char*& in) noexcept {
  std::uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const auto byte = static_cast<unsigned char>(*in++);
    v |= std::uint64_t{byte & 0x7fu} << shift;
    if (byte < 0x80) return v;
  }
}

std::uint64_t zigzag(std::int64_t v) noexcept {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
std::int64_t unzigzag(std::uint64_t v) noexcept {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

/// Whether `message` has no properties and no headers, so only its payload need be kept.
bool bare(std::string_view message) noexcept {
  if (message.size() < kCompactPrefix || message[0] != 0 || message[1] != 0 || message[2] != 0)
    return false;
  protocol::Reader r(message.substr(3));
  return r.u32() == message.size() - kCompactPrefix;
}

/// Free chunks of the largest size, shared by the spools of one thread (the engine's).
class ChunkPool {
 public:
  ChunkPool() = default;
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;
  ~ChunkPool() {
    for (void* chunk : free_) ::munmap(chunk, kMaxChunkBytes);
  }
  /// Memory for a chunk of `capacity` data bytes plus its header.
  void* take(std::size_t capacity) {
    if (capacity != kMaxChunk) {
      void* memory = std::malloc(kChunkHeader + capacity);
      if (memory == nullptr) throw std::bad_alloc();
      return memory;
    }
    if (!free_.empty()) {
      void* chunk = free_.back();
      free_.pop_back();
      return chunk;
    }
    void* memory =
        ::mmap(nullptr, kMaxChunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    return memory;
  }
  void give(void* chunk, std::size_t capacity) noexcept {
    if (capacity != kMaxChunk) {
      std::free(chunk);
    } else if (free_.size() < kPooledChunks) {
      free_.push_back(chunk);
    } else {
      ::munmap(chunk, kMaxChunkBytes);
    }
  }

 private:
  std::vector<void*> free_;
};

thread_local ChunkPool pool;

}  // namespace

void ReadySpool::Head::message(std::string& out) const {
  if (!compact) {
    out.assign(stored.data(), stored.size());
    return;
  }
  out.assign(3, '\0');
  protocol::put::u32(out, static_cast<std::uint32_t>(stored.size()));
  out.append(stored.data(), stored.size());
}

ReadySpool::~ReadySpool() {
  while (head_ != nullptr) {
    Chunk* next = head_->next;
    free_chunk(head_);
    head_ = next;
  }
}

void ReadySpool::free_chunk(Chunk* chunk) noexcept {
  chunk_bytes_ -= sizeof(Chunk) + chunk->capacity;
  pool.give(chunk, chunk->capacity);
}

char* ReadySpool::reserve(std::size_t bytes) {
  if (tail_ != nullptr && tail_->capacity - tail_->end >= bytes) return tail_->data() + tail_->end;
  const std::size_t grown = tail_ != nullptr ? std::size_t{tail_->capacity} * 2 : kFirstChunk;
  const std::size_t capacity =
      std::max<std::size_t>(std::min<std::size_t>(grown, kMaxChunk), bytes);
  if (count_ == 0 && head_ != nullptr) {
    // The small chunk an emptied spool kept is too small for this record: the
    // reader would start in it, so it goes rather than stay empty ahead of the new one.
    free_chunk(head_);
    head_ = tail_ = nullptr;
  }
  static_assert(sizeof(Chunk) == kChunkHeader);
  void* memory = pool.take(capacity);
  auto* chunk = new (memory) Chunk{nullptr, static_cast<std::uint32_t>(capacity), 0, 0};
  chunk_bytes_ += sizeof(Chunk) + capacity;
  if (tail_ != nullptr)
    tail_->next = chunk;
  else
    head_ = chunk;
  tail_ = chunk;
  return chunk->data();
}

void ReadySpool::push_slot(std::uint32_t index) {
  char* at = reserve(10);
  tail_->end += static_cast<std::uint32_t>(put_varint(at, std::uint64_t{index} << kFlagBits) - at);
  ++count_;
}

void ReadySpool::park(const Slot& s) {
  const std::string_view message = s.message;
  const bool compact = bare(message);
  const std::string_view stored = compact ? message.substr(kCompactPrefix) : message;
  const bool next_id = s.id == write_id_ + 1;  // the usual case: one publisher, one queue
  const bool same_time = s.publish_wall_us == write_time_;  // the messages of one PUBLISH frame
  const std::uint32_t flags = kParked | (compact ? kCompact : 0) | (s.durable ? kDurable : 0) |
                              (s.redriven ? kRedriven : 0) | (next_id ? kNextId : 0) |
                              (same_time ? kSameTime : 0);
  char* const start = reserve(kMaxRecordHead + stored.size());
  char* at = put_varint(start, (std::uint64_t{stored.size()} << kFlagBits) | flags);
  if (!compact) at = put_varint(at, s.key_at);
  if (!next_id) at = put_varint(at, zigzag(static_cast<std::int64_t>(s.id - write_id_)));
  if (!same_time) at = put_varint(at, zigzag(s.publish_wall_us - write_time_));
  std::memcpy(at, stored.data(), stored.size());
  at += stored.size();
  tail_->end += static_cast<std::uint32_t>(at - start);
  write_id_ = s.id;
  write_time_ = s.publish_wall_us;
  ++count_;
  ++parked_;
}

ReadySpool::Head ReadySpool::decode(std::size_t& length) const noexcept {
  const char* const start = head_->data() + head_->begin;
  const char* in = start;
  Head h;
  const std::uint64_t tag = get_varint(in);
  if ((tag & kParked) == 0) {
    h.slot = static_cast<std::uint32_t>(tag >> kFlagBits);
    length = static_cast<std::size_t>(in - start);
    return h;
  }
  const auto n = static_cast<std::size_t>(tag >> kFlagBits);
  h.compact = (tag & kCompact) != 0;
  h.durable = (tag & kDurable) != 0;
  h.redriven = (tag & kRedriven) != 0;
  if (!h.compact) h.key_at = static_cast<std::uint16_t>(get_varint(in));
  h.id = (tag & kNextId) != 0 ? read_id_ + 1
                              : read_id_ + static_cast<std::uint64_t>(unzigzag(get_varint(in)));
  h.publish_wall_us = (tag & kSameTime) != 0 ? read_time_ : read_time_ + unzigzag(get_varint(in));
  h.stored = std::string_view(in, n);
  length = static_cast<std::size_t>(in - start) + n;
  return h;
}

ReadySpool::Head ReadySpool::front() const noexcept {
  std::size_t length = 0;
  return decode(length);
}

void ReadySpool::pop_front() noexcept {
  std::size_t length = 0;
  const Head h = decode(length);
  if (h.slot == kNil) {
    read_id_ = h.id;
    read_time_ = h.publish_wall_us;
    --parked_;
  }
  --count_;
  head_->begin += static_cast<std::uint32_t>(length);
  if (head_->begin < head_->end) return;
  // The head chunk is read to its end: free it, or keep a small last one for what comes next.
  if (head_ != tail_) {
    Chunk* next = head_->next;
    free_chunk(head_);
    head_ = next;
  } else if (head_->capacity <= kKeepChunk) {
    head_->begin = head_->end = 0;
  } else {
    free_chunk(head_);
    head_ = tail_ = nullptr;
  }
}

}  // namespace sluice::engine
