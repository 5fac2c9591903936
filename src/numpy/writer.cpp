// NumPy writer: .npz as numpy.savez writes it (one stored .npy entry per tensor), each entry's
// data 64-byte aligned in the file so readers can map it, or deflated as savez_compressed does
// (Compression::deflate); roles in entry comments, metadata in
// the archive comment (format-spec/conventions.md §6). Or a single .npy.
#include <set>

#include <nlohmann/json.hpp>

#include "ckpt/numpy.h"
#include "numpy/npy.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "zip/zip.h"

namespace ckpt {

using detail::fail;
using detail::quote;

void write_numpy(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const std::string name = path.string();
  const auto& infos = source.tensors();
  std::uint64_t total = 0, done = 0;
  for (const auto& info : infos) total += info.nbytes();
  auto progress = [&](std::uint64_t bytes) {
    done += bytes;
    if (options.progress) options.progress(done, total);
  };

  if (path.extension() == ".npy") {
    if (infos.size() != 1)
      fail(ErrorCode::unsupported, name, "a .npy file holds one array, the source has {}; write .npz", infos.size());
    const auto& info = infos.front();
    if (info.dtype == DType::bfloat16 || info.dtype == DType::float8_e4m3fn || info.dtype == DType::float8_e5m2)
      fail(ErrorCode::unsupported, name, "numpy has no {} and a .npy file has no place to say so; write .npz",
           dtype_name(info.dtype));
    detail::AtomicFile file(path, options.overwrite);
    const std::string header = detail::npy::make_header(info.dtype, info.shape);
    file.write(std::as_bytes(std::span(header)));
    const Tensor tensor = source.read_checked(0, name);
    file.write(tensor.bytes(), source.file_span(0));
    progress(tensor.nbytes());
    file.commit();
    return;
  }

  // Everything that could fail is checked before the file is created.
  const Metadata archive_comment = {{"ckpt", 1}, {"metadata", source.metadata()}};
  std::string archive_text;
  try {
    archive_text = archive_comment.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::invalid_argument, name, "metadata is not valid UTF-8: {}", e.what());
  }
  if (archive_text.size() > 0xffff)
    fail(ErrorCode::unsupported, name, "metadata of {} bytes does not fit the 64 KiB zip comment that carries it in .npz",
         archive_text.size());
  std::vector<std::string> entry_names, comments;
  std::set<std::string> seen;
  for (const auto& info : infos) {
    // Model tensors under their names; extra sections as "section/name" (names stay unique).
    std::string entry = (info.role == Role::extra ? info.section + "/" + info.name : info.name) + ".npy";
    if (!seen.insert(entry).second)
      fail(ErrorCode::unsupported, name, "two tensors would both be the .npz entry {}", quote(entry));
    Metadata c = {{"ckpt", 1}, {"role", role_name(info.role)}, {"name", info.name}};
    if (info.role == Role::buffer) {
      c["collection"] = info.collection;
      c["persistent"] = info.persistent;
    }
    if (info.role == Role::extra) c["section"] = info.section;
    if (info.dtype == DType::bfloat16 || info.dtype == DType::float8_e4m3fn || info.dtype == DType::float8_e5m2)
      c["dtype"] = dtype_name(info.dtype);  // written as uint16 / uint8 bits
    std::string text;
    try {
      text = c.dump();
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorCode::invalid_argument, name, "tensor name is not valid UTF-8: {}", e.what());
    }
    if (text.size() > 0xffff || entry.size() > 0xffff)
      fail(ErrorCode::unsupported, name, "tensor {}: name too long for a zip entry", quote(info.name.substr(0, 40)));
    entry_names.push_back(std::move(entry));
    comments.push_back(std::move(text));
  }

  detail::AtomicFile file(path, options.overwrite);
  detail::zip::Writer zip(file, 64);
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const auto& info = infos[i];
    // The .npy preamble is padded so that the array data is 64-byte aligned too (the entry's
    // data starts aligned; the header is a multiple of 64 bytes long).
    const std::string header = detail::npy::make_header(info.dtype, info.shape);
    const Tensor tensor = source.read_checked(i, name);
    if (options.compression == Compression::deflate) {
      zip.add_deflated(entry_names[i], {std::as_bytes(std::span(header)), tensor.bytes()}, comments[i]);
    } else {
      zip.begin(entry_names[i], header.size() + info.nbytes(), comments[i]);
      zip.write(std::as_bytes(std::span(header)));
      zip.write(tensor.bytes(), source.file_span(i));
      zip.end();
    }
    progress(tensor.nbytes());
  }
  zip.finish(archive_text);
  file.commit();
}

}  // namespace ckpt
