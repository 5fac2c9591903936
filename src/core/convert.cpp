#include "ckpt/convert.h"

namespace ckpt {

std::size_t convert(const std::filesystem::path& input, const std::filesystem::path& output,
                    const ConvertOptions& options) {
  auto reader = open(input, options.read);
  save(*reader, output, options.write);
  return reader->tensors().size();
}

}  // namespace ckpt
