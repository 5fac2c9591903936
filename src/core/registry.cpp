// The format registry: one line per format, in the order formats are tried when a file is
// detected by content. Each format's folder defines its handler in format.cpp; adding a format is
// adding a folder and a line here.
#include "ckpt/io.h"

namespace ckpt {

namespace detail {
FormatHandler ckpt_h5_format();
FormatHandler safetensors_format();
FormatHandler safetensors_sharded_format();
FormatHandler pytorch_format();
FormatHandler flax_format();
FormatHandler numpy_format();
FormatHandler boost_text_format();
FormatHandler boost_xml_format();
FormatHandler boost_binary_format();
FormatHandler dcp_format();
}  // namespace detail

const std::vector<FormatHandler>& formats() {
  static const std::vector<FormatHandler> registry = {
      detail::ckpt_h5_format(),
      detail::safetensors_format(),
      detail::safetensors_sharded_format(),
      detail::pytorch_format(),
      detail::flax_format(),
      detail::numpy_format(),
      detail::boost_text_format(),
      detail::boost_xml_format(),
      detail::boost_binary_format(),
      detail::dcp_format(),
  };
  return registry;
}

}  // namespace ckpt
