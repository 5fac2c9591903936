// For targets whose input is several files (a sharded safetensors index and its shards, a
// distributed checkpoint's directory): a directory of this process's own, and writing a piece of
// the input as a file in it.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

// <temp>/ckpt-fuzz-TAG-PID, made on first use.
inline const std::filesystem::path& fuzz_work_dir(const char* tag) {
  static const std::filesystem::path dir = [tag] {
    auto d = std::filesystem::temp_directory_path() / ("ckpt-fuzz-" + std::string(tag) + "-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void fuzz_put(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}
