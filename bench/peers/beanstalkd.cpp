// beanstalkd: producers `put` into a tube; consumers `reserve` (with a
// timeout, so an empty tube is asked again) and ack with `delete`. A
// consumer keeps `prefetch` reserves pipelined (its credit); a job's TTR is
// 60 s, far beyond a run, so nothing is re-delivered by timeout.
#include <charconv>
#include <string>

#include "stream.hpp"

namespace sluice::bench::peers {
namespace {

constexpr std::string_view kReserve = "reserve-with-timeout 1\r\n";

/// Sends `command` and reads one reply line; empty `error` when it starts with `expect`.
bool exchange(Socket& s, InputBuffer& in, const std::string& command, std::string_view expect,
              std::string& error) {
  std::string line;
  if (!s.write_all(command) || !read_line(s, in, line)) {
    error = "beanstalkd: connection lost";
    return false;
  }
  if (line.rfind(expect, 0) != 0) {
    error = "beanstalkd: " + command.substr(0, command.size() - 2) + ": " + line;
    return false;
  }
  return true;
}

class BeanstalkProducer final : public StreamProducer {
 public:
  BeanstalkProducer(Socket s, InputBuffer in, const PeerOptions& o)
      : StreamProducer(std::move(s), std::move(in), o.window) {
    start_reader();
  }
  ~BeanstalkProducer() override { stop_reader(); }

 private:
  void encode_publish(std::string& out, std::string_view payload) override {
    out += "put 1024 0 60 ";
    out += std::to_string(payload.size());
    out += "\r\n";
    out += payload;
    out += "\r\n";
  }
  std::size_t parse_confirms(const char* in, std::size_t n, std::uint64_t& confirmed,
                             std::uint64_t& failed, std::string&) override {
    const std::string_view have(in, n);
    std::size_t used = 0;
    for (std::size_t eol; (eol = have.find("\r\n", used)) != std::string_view::npos;
         used = eol + 2) {
      // INSERTED <id>; anything else (BURIED, JOB_TOO_BIG, OUT_OF_MEMORY,
      // DRAINING...) is a publish the server did not take as asked.
      if (have.substr(used, 9) == "INSERTED ")
        ++confirmed;
      else
        ++failed;
    }
    return used;
  }
};

class BeanstalkConsumer final : public StreamConsumer {
 public:
  BeanstalkConsumer(Socket s, InputBuffer in, const PeerOptions& o)
      : StreamConsumer(std::move(s), std::move(in)), prefetch_(o.prefetch) {}

  ~BeanstalkConsumer() override { stop(); }

 private:
  void begin(std::string& out) override {
    for (std::uint32_t i = 0; i < prefetch_; ++i) out += kReserve;
  }
  std::size_t parse(const char* in, std::size_t n, std::string& out, const Handler& handler,
                    std::string& error) override {
    const std::string_view have(in, n);
    std::size_t used = 0;
    for (std::size_t eol; (eol = have.find("\r\n", used)) != std::string_view::npos;) {
      const std::string_view line = have.substr(used, eol - used);
      if (line.rfind("RESERVED ", 0) == 0) {
        // RESERVED <id> <bytes>\r\n<data>\r\n
        const auto space = line.find(' ', 9);
        const std::string_view id = line.substr(9, space - 9);
        std::size_t bytes = 0;
        std::from_chars(line.data() + space + 1, line.data() + line.size(), bytes);
        if (eol + 2 + bytes + 2 > n) break;  // the job's data is not all here yet
        handler(have.substr(eol + 2, bytes));
        out += "delete ";
        out += id;
        out += "\r\n";
        out += kReserve;
        used = eol + 2 + bytes + 2;
        continue;
      }
      if (line == "TIMED_OUT" || line == "DEADLINE_SOON") {
        out += kReserve;  // this reserve ended without a job: ask again
      } else if (line != "DELETED" && line != "NOT_FOUND") {
        error = "beanstalkd: " + std::string(line);
        return kProtocolError;
      }
      used = eol + 2;
    }
    return used;
  }
  std::uint32_t prefetch_;
};

class Beanstalkd final : public Peer {
 public:
  explicit Beanstalkd(const PeerOptions& o) : options_(o) {}

  std::string prepare() override {
    // Tubes exist while used; empty this one of ready jobs left by a run before.
    std::string error;
    InputBuffer in;
    Socket s = open(in, "watch", "WATCHING", error);
    if (!s.open()) return error;
    if (!exchange(s, in, "ignore default\r\n", "WATCHING", error)) return error;
    for (;;) {
      std::string line;
      if (!s.write_all("reserve-with-timeout 0\r\n") || !read_line(s, in, line))
        return "beanstalkd: connection lost";
      if (line.rfind("RESERVED ", 0) != 0) break;
      const auto space = line.find(' ', 9);
      std::size_t bytes = 0;
      std::from_chars(line.data() + space + 1, line.data() + line.size(), bytes);
      while (in.size() < bytes + 2)
        if (!in.fill(s)) return "beanstalkd: connection lost";
      in.consume(bytes + 2);
      if (!exchange(s, in, "delete " + line.substr(9, space - 9) + "\r\n", "DELETED", error))
        return error;
    }
    return {};
  }
  std::unique_ptr<Producer> producer(std::string& error) override {
    InputBuffer in;
    Socket s = open(in, "use", "USING", error);
    if (!s.open()) return nullptr;
    return std::make_unique<BeanstalkProducer>(std::move(s), std::move(in), options_);
  }
  std::unique_ptr<Consumer> consumer(std::string& error) override {
    InputBuffer in;
    Socket s = open(in, "watch", "WATCHING", error);
    if (!s.open() || !exchange(s, in, "ignore default\r\n", "WATCHING", error)) return nullptr;
    return std::make_unique<BeanstalkConsumer>(std::move(s), std::move(in), options_);
  }

 private:
  /// A connection that has sent `verb <tube>` and had `expect` back.
  Socket open(InputBuffer& in, const char* verb, std::string_view expect, std::string& error) {
    Socket s = Socket::connect(options_.host, options_.port, error);
    if (!s.open()) {
      error = "beanstalkd: " + error;
      return s;
    }
    if (!exchange(s, in, std::string(verb) + " " + options_.queue + "\r\n", expect, error))
      return {};
    return s;
  }
  PeerOptions options_;
};

}  // namespace

std::unique_ptr<Peer> make_beanstalkd(const PeerOptions& options) {
  return std::make_unique<Beanstalkd>(options);
}

}  // namespace sluice::bench::peers
