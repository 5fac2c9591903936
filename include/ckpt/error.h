// The single error type of the library. Every failure on bad input, I/O or misuse of the
// format throws ckpt::Error; its what() is one line: "FILE: what, where".
#pragma once

#include "ckpt/api.h"

#include <stdexcept>
#include <string>

CKPT_API_BEGIN

namespace ckpt {

enum class ErrorCode {
  io,           // the operating system refused (open, read, write, rename, fsync)
  format,       // the file is not what it claims: bad magic, truncated, inconsistent sizes
  unsupported,  // well-formed but outside what this version reads (newer major, unknown dtype)
  integrity,    // a checksum does not match the data
  invalid_argument,  // the caller asked for something impossible (unknown tensor, bad option)
};

// Stable, lowercase name of an error code ("io", "format", ...).
const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  // `file` may be empty when the error is not about a file.
  Error(ErrorCode code, std::string file, const std::string& message);

  ErrorCode code() const noexcept { return code_; }
  const std::string& file() const noexcept { return file_; }
  // The message without the file prefix.
  const std::string& message() const noexcept { return message_; }

 private:
  ErrorCode code_;
  std::string file_;
  std::string message_;
};

}  // namespace ckpt

CKPT_API_END
