#include "ckpt/convert.h"

#include "core/buffer_reuse.h"
#include "core/read_ahead.h"

namespace ckpt {

std::size_t convert(const std::filesystem::path& input, const std::filesystem::path& output,
                    const ConvertOptions& options) {
  // Tensors are copied one at a time rather than viewed: a view would keep every page of the
  // input mapped (and counted as resident) until the end, a copy only the tensor being written.
  ReadOptions read = options.read;
  read.zero_copy = false;
  const detail::BufferReuse reuse;  // one tensor's buffer serves the next
  auto reader = open(input, read);
  // What the reader left out is said where the writers say what they leave out.
  if (options.write.notice)
    for (const auto& note : reader->notes()) options.write.notice(note);
  reader->expect_full_read();
  // The next tensor is read while this one is written (read_ahead.h); at most this much is read
  // ahead, so memory holds at most two tensors of up to 32 MiB.
  constexpr std::uint64_t kMaxAheadBytes = 32u << 20;
  if (options.layout) {
    const auto mapped = map_layout(*reader, *options.layout, input.string(), options.layout_report);
    detail::ReadAheadSource ahead(*mapped, kMaxAheadBytes);
    save(ahead, output, options.write);
    return mapped->tensors().size();
  }
  detail::ReadAheadSource ahead(*reader, kMaxAheadBytes);
  save(ahead, output, options.write);
  return reader->tensors().size();
}

}  // namespace ckpt
