// libFuzzer target: loading a ckpt::StateDict from a Boost archive a program holds in memory
// (ckpt/boost_serialization.h with a BoostLoadLimit of the input's size, as a careful caller
// does). The first byte picks text or binary. Not xml: Boost 1.74's xml_iarchive reads out of
// bounds checking end tags (found here at once; ckpt's header says so, and ckpt's own file
// reader, fuzz_boost, reads xml without that check).
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>

#include "ckpt/boost_serialization.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int kind = data[0] % 2 == 0 ? 0 : 2;
  // Boost reads its own signature string with a size from the archive and allocates it, before
  // any ckpt code runs (std::bad_alloc in a normal build, an abort under ASan): the signature
  // is taken as it must be, and the rest of the archive is the fuzzer's.
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  static const std::string kTextSignature = "22 serialization::archive ";
  static const std::string kBinarySignature = std::string("\x16\0\0\0\0\0\0\0", 8) + "serialization::archive";
  if (!text.starts_with(kind == 0 ? kTextSignature : kBinarySignature)) return 0;
  std::istringstream in(text);
  try {
    const ckpt::BoostLoadLimit limit(size);
    ckpt::StateDict state;
    if (kind == 0) {
      boost::archive::text_iarchive archive(in);
      archive >> state;
    } else if (kind == 1) {
      boost::archive::xml_iarchive archive(in);
      archive >> boost::serialization::make_nvp("state_dict", state);
    } else {
      boost::archive::binary_iarchive archive(in);
      archive >> state;
    }
  } catch (const std::exception&) {  // ckpt::Error, Boost's archive and base64 exceptions, stream failures
  }
  return 0;
}
