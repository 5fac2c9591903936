#include "ckpt/error.h"

#include <string>

#include "util/bytes.h"

namespace ckpt {
namespace {
std::string compose(const std::string& file, const std::string& message) {
  return file.empty() ? message : file + ": " + message;
}
}  // namespace

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::io: return "io";
    case ErrorCode::format: return "format";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::integrity: return "integrity";
    case ErrorCode::invalid_argument: return "invalid_argument";
  }
  return "unknown";
}

Error::Error(ErrorCode code, std::string file, const std::string& message)
    : std::runtime_error(compose(file, message)),
      code_(code),
      file_(std::move(file)),
      message_(message) {}

namespace detail {

std::string quote(std::string_view name) {
  constexpr std::size_t kMax = 200;
  std::string out = "'";
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (i == kMax) {
      out += fmt::format("...' ({} bytes)", name.size());
      return out;
    }
    const auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else if (c == '\'' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else out += static_cast<char>(c);
  }
  return out + "'";
}

}  // namespace detail
}  // namespace ckpt
