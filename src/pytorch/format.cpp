// PyTorch .pt files in the format registry.
#include "ckpt/pytorch.h"
#include "pytorch/format.h"

namespace ckpt {

namespace detail {

FormatHandler pytorch_format() {
  return {"pytorch", "torch.save and torch.jit.save files (zip and legacy; writes state_dicts and checkpoints)",
          {".pt", ".pth", ".bin"}, pytorch::sniff, pytorch::open_reader, write_pytorch, {}, false};
}

}  // namespace detail

std::unique_ptr<Reader> open_pytorch(const std::filesystem::path& path, const ReadOptions& options) {
  return detail::make_reader(detail::pytorch::open_reader(detail::ByteSource::open_file(path), options));
}

}  // namespace ckpt
