// libFuzzer target, structure-aware: the input is a program that builds a JSON value (deep
// nesting, many members, duplicate keys, long strings and numbers at the limits), which then
// goes everywhere ckpt parses JSON from a file: the ckpt-h5 index ("metadata"), a safetensors
// header's __metadata__ strings ckpt.metadata, ckpt.roles and ckpt.checksums, and a sharded
// index is covered by fuzz_sharded. Byte mutation of files does not reach 200,000 nested brackets.
#include <string>

#include "ckpt/error.h"
#include "ckpt_h5/index.h"
#include "fuzz_input.h"
#include "gen_util.h"

namespace {

// `calls`: the generator's own recursion, kept shallow (a run of brackets is one call).
void build_value(fuzzgen::Program& p, std::string& out, int depth, int calls = 0) {
  if (p.done() || depth > 300000 || calls > 200) {
    out += "0";
    return;
  }
  const std::uint8_t op = p.next();
  switch (op % 10) {
    case 0: {  // a run of opening brackets: deep nesting at little input cost
      const int n = 1 + p.next() * 64;
      const bool arrays = (op & 0x10) != 0;
      for (int i = 0; i < n; ++i) out += arrays ? "[" : "{\"k\":";
      build_value(p, out, depth + n, calls + 1);
      for (int i = 0; i < n; ++i) out += arrays ? "]" : "}";
      break;
    }
    case 1: case 2: {
      out += '[';
      const int n = p.next() % 8;
      for (int i = 0; i < n && !p.done(); ++i) {
        if (i) out += ',';
        build_value(p, out, depth + 1, calls + 1);
      }
      out += ']';
      break;
    }
    case 3: case 4: {
      out += '{';
      const int n = p.next() % 8;
      for (int i = 0; i < n && !p.done(); ++i) {
        if (i) out += ',';
        out += "\"";
        out += static_cast<char>('a' + p.next() % 4);  // collisions: duplicate keys
        out += "\":";
        build_value(p, out, depth + 1, calls + 1);
      }
      out += '}';
      break;
    }
    case 5: out += "18446744073709551616"; break;
    case 6: out += "-9223372036854775809"; break;
    case 7: out += "1e400"; break;
    case 8: out += "\"" + std::string(p.next() * 16, 'x') + "\\u0000\""; break;
    default: out += "true"; break;
  }
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzzgen::Program program(data, size);
  std::string value;
  build_value(program, value, 0);
  try {
    (void)ckpt::detail::ckpt_h5::parse_index("{\"tensors\": [], \"metadata\": " + value + "}", ckpt::ReadOptions{}, "fuzz");
  } catch (const ckpt::Error&) {
  }
  static const char* const kKeys[] = {"ckpt.metadata", "ckpt.roles", "ckpt.checksums"};
  const std::string header = "{\"__metadata__\": {" + json_string(kKeys[size % 3]) + ": " + json_string(value) +
                             "}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
  std::string file;
  fuzzgen::put_le(file, header.size(), 8);
  file += header;
  file += std::string(4, '\0');
  return fuzz_format(reinterpret_cast<const std::uint8_t*>(file.data()), file.size(), "safetensors");
}
