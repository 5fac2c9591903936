// libFuzzer target, structure-aware: the input is a program that builds a pickle (protocol 2)
// full of memo sharing, nesting, globals the reader allows and persistent storage references,
// put in a torch.save zip and read as a .pt checkpoint: listing, metadata, tensors. Byte
// mutation of real files rarely keeps a pickle valid; this explores what shared references and
// deep structures do to the reader (the reference bombs of issue 11 came from such structures).
#include "fuzz_input.h"
#include "gen_util.h"

namespace {

std::string build_pickle(fuzzgen::Program& p) {
  std::string out = "\x80\x02}q\x00X\x01\x00\x00\x00x";  // {} memo 0, key "x"
  static const char* const kGlobals[] = {"collections\nOrderedDict\n", "torch._utils\n_rebuild_tensor_v2\n",
                                         "torch\nFloatStorage\n", "torch\nLongStorage\n", "builtins\nset\n",
                                         "torch.nn.modules.linear\nLinear\n", "__builtin__\nobject\n"};
  int steps = 0;
  while (!p.done() && steps++ < 4096) {
    const std::uint8_t op = p.next();
    switch (op % 20) {
      case 0: out += ']'; break;
      case 1: out += '}'; break;
      case 2: out += '('; break;
      case 3: out += 'K', out.push_back(static_cast<char>(p.next())); break;
      case 4: {
        const char key[2] = {static_cast<char>('a' + p.next() % 8), 0};
        out += 'X', fuzzgen::put_le(out, 1, 4), out += key;
        break;
      }
      case 5: out += 'q', out.push_back(static_cast<char>(p.next() % 16)); break;
      case 6: out += 'h', out.push_back(static_cast<char>(p.next() % 16)); break;
      case 7: out += 'a'; break;
      case 8: out += 'e'; break;
      case 9: out += 's'; break;
      case 10: out += 'u'; break;
      case 11: out += 't'; break;
      case 12: out += '2'; break;
      case 13: out += '0'; break;
      case 14: out += 'c', out += kGlobals[p.next() % 7]; break;
      case 15: out += 'R'; break;
      case 16: out += 'b'; break;
      case 17:  // a persistent storage reference ('storage', type, key, 'cpu', numel)
        out += "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK";
        out.push_back(static_cast<char>(p.next() % 16));
        out += "tQ";
        break;
      case 18: out += '\x85'; break;  // TUPLE1
      case 19: out += 'N'; break;
    }
  }
  out += "s.";  // {"x": value}
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzzgen::Program program(data, size);
  const std::string pickle = build_pickle(program);
  const std::string zip = fuzzgen::stored_zip({{"archive/data.pkl", pickle},
                                               {"archive/data/0", std::string(64, '\x01')},
                                               {"archive/version", "3\n"}});
  return fuzz_format(reinterpret_cast<const std::uint8_t*>(zip.data()), zip.size(), "pytorch");
}
