// PyTorch distributed checkpoints in the format registry (read only).
#include "ckpt/dcp.h"
#include "dcp/format.h"

namespace ckpt {

namespace detail {

FormatHandler dcp_format() {
  return {"dcp",
          "PyTorch distributed checkpoints (torch.distributed.checkpoint): a directory with .metadata and .distcp "
          "files; read only",
          {}, dcp::sniff, dcp::open_reader, nullptr, {}, false};
}

}  // namespace detail

std::unique_ptr<Reader> open_dcp(const std::filesystem::path& path, const ReadOptions& options) {
  std::error_code ec;
  const auto metadata = std::filesystem::is_directory(path, ec) ? path / ".metadata" : path;
  return detail::make_reader(detail::dcp::open_reader(detail::ByteSource::open_file(metadata), options));
}

}  // namespace ckpt
