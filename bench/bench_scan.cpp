// The structural scan (dicom/scan.h) that every received instance passes before it is committed:
// its cost per file, to set beside the durable write it precedes (bench/ingest.sh prints both).
//
//   bench_scan FILE...      scans each file 5 times (page cache warm after the first round) and
//                           prints the median microseconds per file of the later rounds
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "dicom/scan.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_scan FILE...\n");
    return 2;
  }
  const std::vector<std::filesystem::path> files(argv + 1, argv + argc);
  std::vector<double> per_file_us;
  std::uint64_t bytes = 0;
  for (int round = 0; round < 5; ++round) {
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t round_bytes = 0;
    for (const auto& f : files) {
      const auto r = dicom::scan_file(f);
      if (!r.ok) {
        std::fprintf(stderr, "bench_scan: %s refused: %s\n", f.c_str(), r.reason.c_str());
        return 1;
      }
      round_bytes += r.bytes;
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    if (round > 0) per_file_us.push_back(us / static_cast<double>(files.size()));
    bytes = round_bytes;
  }
  std::sort(per_file_us.begin(), per_file_us.end());
  const double median = per_file_us[per_file_us.size() / 2];
  std::printf("%.1f %zu %.0f\n", median, files.size(), static_cast<double>(bytes) / files.size());
  return 0;
}
