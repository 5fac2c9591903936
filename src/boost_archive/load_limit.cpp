// The per-thread allocation limit of Boost loads (ckpt/boost_serialization.h).
#include <cstdint>
#include <string>

#include "ckpt/boost_serialization.h"

namespace ckpt {
namespace {

thread_local std::uint64_t budget = UINT64_MAX;  // UINT64_MAX: no limit

}  // namespace

BoostLoadLimit::BoostLoadLimit(std::uint64_t bytes) : saved_(budget) { budget = bytes == UINT64_MAX ? bytes - 1 : bytes; }
BoostLoadLimit::~BoostLoadLimit() { budget = saved_; }

namespace detail {

void boost_spend(std::uint64_t bytes, const char* what) {
  if (bytes > budget)
    throw Error(ErrorCode::format, "",
                std::string("Boost archive: ") + what + " claims " + std::to_string(bytes) + " bytes, more than the archive holds");
  if (budget != UINT64_MAX) budget -= bytes;
}

bool boost_limited() noexcept { return budget != UINT64_MAX; }

}  // namespace detail
}  // namespace ckpt
