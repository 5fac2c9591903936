// Golden bad files (made by tests/peers/make_spec_files.py): each must be refused with exactly
// this error. Paths are relative to tests/data, the working directory of these tests.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <random>

#include "helpers.h"

using namespace ckpt;

namespace {

struct Golden {
  const char* file;
  ErrorCode code;
  const char* message;  // after "FILE: "
};

const Golden kGolden[] = {
    {"bad/truncated.ckpt.h5", ErrorCode::format,
     "cannot open as HDF5 (HDF5: truncated file: eof = 7736, sblock->base_addr = 0, stored_eof = 15473)"},
    {"bad/wrong_magic.ckpt.h5", ErrorCode::format,
     "unrecognized file format at offset 0, expected one of: ckpt-h5, safetensors, safetensors-sharded, pytorch, flax, numpy, boost-text, boost-xml, boost-binary, dcp"},
    {"bad/wrong_format.ckpt.h5", ErrorCode::format,
     "not a ckpt-h5 file: root attribute 'ckpt_format' is 'something-else', expected 'ckpt-h5'"},
    {"bad/major2.ckpt.h5", ErrorCode::unsupported, "ckpt-h5 version 2.0 is not supported (this reader reads 1.x)"},
    {"bad/lying_shape.ckpt.h5", ErrorCode::format,
     "tensor 'conv.weight': dataset shape [2, 3, 4] does not match the index shape [2, 3, 5]"},
    {"bad/lying_dtype.ckpt.h5", ErrorCode::format,
     "tensor 'a/b': dataset type (float (11 exponent, 52 mantissa bits) of 8 bytes) cannot hold index dtype int8 "
     "(signed integer of 1 byte)"},
    // Spec §5: types may differ in byte order only (uint8 read as int8 would clamp 200 to 127).
    {"bad/signedness.ckpt.h5", ErrorCode::format,
     "tensor 'w': dataset type (unsigned integer of 1 byte) cannot hold index dtype int8 (signed integer of 1 byte)"},
    {"bad/missing_group.ckpt.h5", ErrorCode::format, "tensor 'b': group /buffers is missing"},
    // Found by fuzz_ckpt_h5: a compact dataset with no bytes made HDF5's H5Dread read address 0.
    {"bad/compact_no_bytes.ckpt.h5", ErrorCode::format,
     "tensor 'bf': dataset /parameters/bf stores 0 bytes, its shape and type need 6"},
    {"bad/duplicate_member.ckpt.h5", ErrorCode::format, "/index tensors[0]: member 'dtype' appears twice in one object"},
    // Spec §3, §8: a tensor's data is in the file, and was written.
    {"bad/external_link.ckpt.h5", ErrorCode::format,
     "tensor 'x': dataset /parameters/x is a link to another file: refused (spec §3)"},
    {"bad/external_storage.ckpt.h5", ErrorCode::format,
     "tensor 'x': dataset /parameters/x keeps its data in other files (external storage): refused (spec §8)"},
    {"bad/virtual.ckpt.h5", ErrorCode::format,
     "tensor 'x': dataset /parameters/x keeps its data in other files (a virtual dataset): refused (spec §8)"},
    {"bad/unwritten_chunks.ckpt.h5", ErrorCode::format,
     "tensor 'x': dataset /parameters/x: 4 of its 4 chunks were never written (spec §8)"},
    {"bad/unwritten_contiguous.ckpt.h5", ErrorCode::format,
     "tensor 'x': dataset /parameters/x: its 4096 bytes were never written (spec §8)"},
    {"bad/many_chunks.ckpt.h5", ErrorCode::format,
     "tensor 'x': dataset /parameters/x claims 4194304 chunks, more than a file of 2973 bytes holds"},
    {"bad/unknown_dtype.ckpt.h5", ErrorCode::unsupported, "tensor 'conv.weight': unknown dtype 'float4_e2m1'"},
    {"bad/flipped_byte.ckpt.h5", ErrorCode::integrity,
     "tensor 'conv.weight': checksum mismatch (stored xxh3-64:a5772a1cbae99a5a, data has xxh3-64:f906695369fe54c7)"},
    {"bad/missing_dataset.ckpt.h5", ErrorCode::format, "tensor 'half': dataset /parameters/half is missing"},
    {"bad/bad_index.ckpt.h5", ErrorCode::format,
     "/index is not valid JSON: [json.exception.parse_error.101] parse error at line 1, column 29: syntax error "
     "while parsing object key - unexpected end of input; expected string literal"},
    {"bad/st_truncated.safetensors", ErrorCode::format,
     "data buffer (offset 136) is 29 bytes but the tensors cover 32 bytes: file is truncated"},
    {"bad/st_trailing.safetensors", ErrorCode::format,
     "data buffer (offset 136) is 35 bytes but the tensors cover 32 bytes: trailing bytes after the data"},
    {"bad/st_huge_header.safetensors", ErrorCode::format,
     "header length 200000000 at offset 0 exceeds the limit of 100000000 bytes"},
    {"bad/st_header_past_end.safetensors", ErrorCode::format,
     "header length 1000 at offset 0 extends past the end of the file (16 bytes)"},
    {"bad/st_lying_size.safetensors", ErrorCode::format,
     "tensor 'w': data_offsets [0, 12] do not match shape [2, 2] of F32 (16 bytes)"},
    {"bad/st_overlap.safetensors", ErrorCode::format,
     "tensor 'v': data_offsets [2, 6] overlap the previous tensor (expected to start at 4)"},
    {"bad/st_gap.safetensors", ErrorCode::format,
     "tensor 'v': data_offsets [8, 12] leave a gap (expected to start at 4)"},
    {"bad/st_duplicate.safetensors", ErrorCode::format, "header (offset 8, 112 bytes) member 'w' appears twice in one object"},
    {"bad/st_unknown_dtype.safetensors", ErrorCode::unsupported, "tensor 'w': unknown dtype 'F4'"},
    {"bad/st_bad_json.safetensors", ErrorCode::format,
     "header (offset 8, 56 bytes) is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
     "column 57: syntax error while parsing object - unexpected end of input; expected '}'"},
    {"bad/st_bad_utf8.safetensors", ErrorCode::format,
     "header (offset 8, 56 bytes) is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
     "column 4: syntax error while parsing object key - invalid string: ill-formed UTF-8 byte; last read: "
     "'\"w\xff'; expected string literal"},
    {"bad/st_overflow.safetensors", ErrorCode::format, "tensor 'w': shape [4294967296, 4294967296] overflows"},
    // The hostile .pt corpus (tests/peers/make_pt_fixtures.py).
    {"bad/pt_os_system.pt", ErrorCode::unsupported,
     "unsafe pickle: it calls 'posix.system' (ckpt never runs pickled code; it only reads tensors, dicts and modules)"},
    {"bad/pt_subprocess.pt", ErrorCode::unsupported,
     "unsafe pickle: it calls 'commands.Popen' (ckpt never runs pickled code; it only reads tensors, dicts and modules)"},
    {"bad/pt_eval.pt", ErrorCode::unsupported,
     "unsafe pickle: it calls '__builtin__.eval' (ckpt never runs pickled code; it only reads tensors, dicts and modules)"},
    {"bad/pt_storage_claims.pt", ErrorCode::format,
     "data.pkl, value of 'w': storage '0' claims 4398046511104 bytes, but its entry holds 16"},
    {"bad/pt_view_outside.pt", ErrorCode::format,
     "data.pkl, value of 'w': the view (offset 3, size [2], stride [1]) reaches element 4 of a storage of 4"},
    {"bad/pt_size_overflow.pt", ErrorCode::format, "data.pkl, value of 'w': size [4294967296, 4294967296] overflows"},
    {"bad/pt_v3_bad_dtype.pt", ErrorCode::unsupported, "data.pkl, value of 'w': dtype 'torch.quint4x2' is not supported"},
    {"bad/pt_quantized_storage.pt", ErrorCode::unsupported,
     "data.pkl, value of 'w': storage type 'torch.QInt8Storage' is not supported"},
    {"bad/pt_missing_storage.pt", ErrorCode::format, "data.pkl, value of 'w': storage '7' has no zip entry archive/data/7"},
    {"bad/pt_deep_nesting.pt", ErrorCode::format,
     "archive/data.pkl: pickle opcode at offset 100514: values nested deeper than 512"},
    {"bad/pt_huge_memo.pt", ErrorCode::format, "archive/data.pkl: pickle opcode at offset 11: memo index 4294967295 was never stored"},
    {"bad/pt_cyclic.pt", ErrorCode::unsupported, "data.pkl: dicts nested too deeply"},
    // 2^40 lists and 2^60 dicts through shared references, from under 1 KB.
    {"bad/pt_shared_lists.pt", ErrorCode::unsupported,
     "data.pkl: shared references expand its 44 values to more than 65712 (each reference is a copy); refused"},
    {"bad/pt_shared_dicts.pt", ErrorCode::unsupported,
     "data.pkl: shared references expand its 67 values to more than 65804 (each reference is a copy); refused"},
    {"bad/pt_zip_size_lies.pt", ErrorCode::format,
     "zip entry 'archive/data/0' is stored but its sizes differ (16 and 1073741824)"},
    {"bad/pt_zip_bomb.pt", ErrorCode::format,
     "zip entry 'archive/data.pkl' claims 4294967294 bytes from 145 compressed bytes, more than deflate can give"},
    // Zip records that disagree, and a flipped bit only the CRC-32 tells (make_zip_fixtures.py).
    {"bad/pt_crc_flipped.pt", ErrorCode::integrity,
     "tensor 'w': zip entry 'torch_save/data/0': CRC-32 5ada1ee6 does not match the stored e9579f8d"},
    {"bad/npz_crc_flipped.npz", ErrorCode::integrity,
     "tensor 'i': zip entry 'i.npy': CRC-32 9a17141d does not match the stored 5b99cbdd"},
    {"bad/pt_local_extra_shifted.pt", ErrorCode::format,
     "tensor 'b': zip entry 'torch_save/data/1': its data descriptor starts 4 bytes before the end of its data "
     "(offset 748): the local header's lengths are wrong"},
    {"bad/npz_local_extra_shifted.npz", ErrorCode::format,
     "zip entry 'a.npy': its data (offset 59, 188 bytes) runs into the next record at offset 243"},
    {"bad/npz_overlapping_entries.npz", ErrorCode::format,
     "zip entries 'a.npy' and 'f.npy' both start at offset 0"},
    {"bad/npz_comment_name_differs.npz", ErrorCode::format,
     "layer3.bias.npy: entry comment names tensor 'lcyer3.bias', but the entry is 'layer3.bias'"},
    {"bad/npz_local_name_differs.npz", ErrorCode::format,
     "zip entry 'i.npy': local header at offset 474 names 'j.npy' (method 0), the central directory 'i.npy' (method 0)"},
    {"bad/pt_legacy_truncated.pt", ErrorCode::format, "legacy storage 'r' at offset 315 needs 24 bytes, 12 remain"},
    {"bad/pt_legacy_view_outside.pt", ErrorCode::format,
     "data.pkl, value of 'w': storage view 'v' (offset 4, size 3) lies outside storage 'r' of 6 elements"},
};

}  // namespace

TEST_CASE("golden bad files are refused with the exact error", "[golden]") {
  for (const auto& g : kGolden) {
    SECTION(g.file) {
      try {
        auto reader = open(g.file);
        reader->verify();
        FAIL("no error for " << g.file);
      } catch (const Error& e) {
        CHECK(std::string(e.what()) == std::string(g.file) + ": " + g.message);
        CHECK(error_code_name(e.code()) == std::string(error_code_name(g.code)));
      }
    }
  }
}

TEST_CASE("spec edges: empty groups left out, unlisted datasets ignored, big-endian types converted", "[golden]") {
  auto reader = open("good/spec_edges.ckpt.h5");
  REQUIRE(reader->tensors().size() == 2);  // not_in_index is not part of the checkpoint
  CHECK(reader->verify() == 2);
  const Tensor big = reader->read("big_endian");
  const std::vector<float> want = {0.5f, -1.0f, 7.25f, 1e-30f};
  CHECK(std::vector<float>(big.as<float>().begin(), big.as<float>().end()) == want);
  CHECK(reader->read_slice("big_endian", {1, 0}, {1, 2}).as<float>()[1] == 1e-30f);
}

TEST_CASE("a user block of 8 KiB: detected beyond the first 4 KiB, read exactly", "[golden]") {
  auto reader = open("good/userblock.ckpt.h5");
  CHECK(reader->format() == "ckpt-h5");
  CHECK(reader->verify() == 1);
  CHECK(reader->read_slice("w", {1}, {2}).as<float>()[1] == 4.0f);
}

TEST_CASE("partial edge chunks that HDF5 left unfiltered read back exactly", "[golden]") {
  auto reader = open("good/partial_chunks.ckpt.h5");
  CHECK(reader->verify() == 2);
  for (const char* name : {"shuffled", "zstd"}) {
    const Tensor t = reader->read(name);
    for (std::size_t i = 0; i < t.numel(); ++i) CHECK(t.as<float>()[i] == static_cast<float>(i) + 0.5f);
    CHECK(reader->read_slice(name, {6, 9}, {1, 2}).as<float>()[1] == 76.5f);
  }
}

TEST_CASE("the ckpt-h5 reader names the problem when opened directly", "[golden]") {
  CHECK_THROWS_WITH(open_ckpt_h5("bad/wrong_magic.ckpt.h5"),
                    "bad/wrong_magic.ckpt.h5: cannot open as HDF5 (HDF5: file signature not found)");
  CHECK_THROWS_WITH(open_safetensors("bad/truncated.ckpt.h5"), Catch::Matchers::Contains("header length"));
  CHECK_THROWS_WITH(open("no/such/file.safetensors"), "no/such/file.safetensors: cannot open: No such file or directory");
}

// Seeded mutations of good files (flipped bits, truncations): every one must open and read, or be
// refused with ckpt::Error; nothing may crash (HDF5's own parsing runs in a child first).
TEST_CASE("mutated files never crash the readers", "[golden][fuzz]") {
  test::TempDir dir;
  for (const char* good : {"good/h5py_spec.ckpt.h5", "good/plain.safetensors", "good/pt_v3_untyped.pt",
                           "good/pt_legacy_views.pt"}) {
    const std::string original = test::read_file(good);
    const std::string suffix = std::filesystem::path(good).extension().string();
    std::mt19937 rng(20261129);
    std::size_t refused = 0;
    const int cases = 150;
    for (int i = 0; i < cases; ++i) {
      std::string bytes = original;
      if (rng() % 3 == 0) bytes.resize(rng() % bytes.size());
      else
        for (unsigned k = 0, n = 1 + rng() % 8; k < n; ++k) bytes[rng() % bytes.size()] ^= static_cast<char>(1u << (rng() % 8));
      const auto path = dir / ("case" + suffix);
      std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
      try {
        (void)open(path)->read_all();
      } catch (const Error&) {
        ++refused;
      }
    }
    INFO(good << ": " << refused << " of " << cases << " refused");
    CHECK(refused > 0);
  }
}

TEST_CASE("npy headers numpy would read differently are refused", "[numpy][hostile]") {
  auto npy = [](const std::string& dict) {
    std::string header = dict;
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
    const auto n = static_cast<std::uint16_t>(header.size());
    bytes.append(reinterpret_cast<const char*>(&n), 2);
    bytes += header + std::string(64, '\0');
    std::vector<std::byte> out(bytes.size());
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  };
  auto error_of = [&](const std::string& dict) {
    try {
      (void)open_memory(npy(dict), {}, "a.npy")->read_all();
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("no error");
  };
  CHECK(error_of("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }") == "no error");
  // numpy keeps the last of a repeated key: (4,) here, where a reader appending would see [3, 4].
  CHECK(error_of("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'shape': (4,), }") ==
        "npy header at character 64: key 'shape' appears twice");
  CHECK(error_of("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), } junk") ==
        "npy header at character 58: text after the header's dict");
}
