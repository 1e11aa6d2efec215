// sluice-host-gaps: how often this machine's CPUs stop running us. One thread
// is pinned to each CPU and reads the clock in a loop; a gap between two reads
// is time that CPU spent on something else, or, in a virtual machine, time the
// host did not run it at all. A message whose path crosses such a gap waits
// for it, whatever the broker does, so the tail percentiles of any latency
// figure taken here cannot be below what this prints. Run it before trusting a
// p99.9 (bench.py compare records it beside the latency runs).
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

struct Gaps {
  int cpu = 0;
  std::uint64_t over_200us = 0;
  std::uint64_t over_500us = 0;
  std::uint64_t over_1ms = 0;
  std::uint64_t worst_ns = 0;
  std::uint64_t lost_ns = 0;  // in gaps over 200 µs
};

Gaps watch(int cpu, double seconds) {
  Gaps g;
  g.cpu = cpu;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) g.cpu = -1;  // unpinned
  const std::uint64_t end = now_ns() + static_cast<std::uint64_t>(seconds * 1e9);
  std::uint64_t prev = now_ns();
  for (std::uint64_t t; (t = now_ns()) < end; prev = t) {
    const std::uint64_t gap = t - prev;
    if (gap <= 200'000) continue;
    ++g.over_200us;
    g.lost_ns += gap;
    if (gap > 500'000) ++g.over_500us;
    if (gap > 1'000'000) ++g.over_1ms;
    g.worst_ns = std::max(g.worst_ns, gap);
  }
  return g;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "sluice-host-gaps: %s\n"
               "usage: sluice-host-gaps [--seconds S] [--json]\n"
               "  Pins a clock-reading thread to each CPU it may run on for S seconds\n"
               "  (default 5) and counts the gaps: time each CPU did not run it.\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--seconds" && i + 1 < argc) {
      char* end = nullptr;
      seconds = std::strtod(argv[++i], &end);
      if (*end != '\0' || !(seconds > 0 && seconds <= 3600))
        return usage("--seconds takes a number of seconds, 0 < S <= 3600");
    } else {
      return usage(("unknown argument " + arg).c_str());
    }
  }
  // The CPUs this process may run on (a container's cpuset may be fewer than
  // the machine has).
  std::vector<int> cpus;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  if (cpus.empty()) cpus.push_back(0);
  std::vector<Gaps> results(cpus.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < cpus.size(); ++i)
    threads.emplace_back([&, i] { results[i] = watch(cpus[i], seconds); });
  for (auto& t : threads) t.join();

  if (json) {
    std::printf("{\"seconds\": %g, \"cpus\": [", seconds);
    for (std::size_t i = 0; i < results.size(); ++i) {
      const Gaps& g = results[i];
      std::printf(
          "%s{\"cpu\": %d, \"over_200us\": %llu, \"over_500us\": %llu, \"over_1ms\": %llu, "
          "\"worst_us\": %llu, \"lost_ms\": %.1f}",
          i ? ", " : "", g.cpu, static_cast<unsigned long long>(g.over_200us),
          static_cast<unsigned long long>(g.over_500us),
          static_cast<unsigned long long>(g.over_1ms),
          static_cast<unsigned long long>(g.worst_ns / 1000), g.lost_ns / 1e6);
    }
    std::printf("]}\n");
    return 0;
  }
  std::printf("gaps in %g s, a clock-reading thread pinned to each CPU:\n", seconds);
  std::printf("%-4s %10s %10s %8s %10s %10s\n", "cpu", ">200 us", ">500 us", ">1 ms", "worst us",
              "lost ms");
  for (const Gaps& g : results)
    std::printf("%-4d %10llu %10llu %8llu %10llu %10.1f\n", g.cpu,
                static_cast<unsigned long long>(g.over_200us),
                static_cast<unsigned long long>(g.over_500us),
                static_cast<unsigned long long>(g.over_1ms),
                static_cast<unsigned long long>(g.worst_ns / 1000), g.lost_ns / 1e6);
  return 0;
}
