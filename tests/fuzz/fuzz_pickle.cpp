// libFuzzer target: the restricted pickle reader (and its renderer) on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckpt/error.h"
#include "pickle/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto graph = ckpt::detail::pickle::parse(std::as_bytes(std::span(data, size)), "fuzz");
    (void)ckpt::detail::pickle::render(graph, graph.root(), 16);
  } catch (const ckpt::Error&) {
  }
  return 0;
}
