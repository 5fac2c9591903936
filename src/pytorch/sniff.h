// Content detection of PyTorch files, for the format registry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ckpt::detail::pytorch {

// A torch.save zip (first entry "<folder>/data.pkl") or a legacy file (pickled magic number).
bool sniff(std::span<const std::byte> head, std::uint64_t file_size);

}  // namespace ckpt::detail::pytorch
