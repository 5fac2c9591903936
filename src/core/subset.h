// Some of a Source's tensors, as a Source of their own (shards of a sharded write, the tensors a
// format keeps).
#pragma once

#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "ckpt/io.h"

namespace ckpt::detail {

class Subset final : public Source {
 public:
  // `inner` must outlive the Subset; `indices` index inner.tensors().
  Subset(Source& inner, std::vector<std::size_t> indices) : inner_(inner), indices_(std::move(indices)) {
    for (auto i : indices_) infos_.push_back(inner.tensors()[i]);
  }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Metadata& metadata() const override { return inner_.metadata(); }
  RoleSource role_source() const noexcept override { return inner_.role_source(); }
  Tensor read(std::size_t index) override { return inner_.read(indices_.at(index)); }
  std::optional<FileSpan> file_span(std::size_t index) const override { return inner_.file_span(indices_.at(index)); }

 private:
  Source& inner_;
  std::vector<std::size_t> indices_;
  std::vector<TensorInfo> infos_;
};

}  // namespace ckpt::detail
