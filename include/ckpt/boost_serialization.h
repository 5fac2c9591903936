// Boost.Serialization support for Tensor and StateDict, so model state can live inside a user's
// own Boost-archived training state (text, xml and binary archives):
//
//   #include <ckpt/boost_serialization.h>
//   boost::archive::xml_oarchive out(stream);
//   out << boost::serialization::make_nvp("model", state);
//
// Tensor bytes are little-endian (ckpt's definition); text and xml archives carry them as base64.
// Versioned with BOOST_CLASS_VERSION; loading a newer version throws ckpt::Error (unsupported).
// Archives from untrusted sources: prefer ckpt::open on the file (it bounds every allocation by the
// file's size and checks what Boost does not). Boost 1.74's own xml_iarchive reads out of bounds
// on a mismatched end tag unless constructed with boost::archive::no_xml_tag_checking, and ends
// the program if the closing </boost_serialization> tag is malformed (format-spec §3).
#pragma once

#include "ckpt/api.h"

#include <algorithm>
#include <string>

#include <boost/serialization/binary_object.hpp>
#include <boost/serialization/nvp.hpp>
#include <boost/serialization/split_free.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <boost/serialization/version.hpp>

#include "ckpt/state_dict.h"

CKPT_API_BEGIN

namespace ckpt {

// While one exists, loading Tensors and StateDicts from Boost archives on this thread allocates at
// most `bytes` in all (strings, shapes, tensor data): a claim beyond what is left throws
// ckpt::Error (format) before anything is allocated. Boost itself trusts every size it reads; set
// a limit (the archive's size: every allocated byte must also be in it) when loading archives
// you did not write. ckpt::open sets one for Boost archive files. Limits nest: the innermost
// applies until it ends.
class BoostLoadLimit {
 public:
  explicit BoostLoadLimit(std::uint64_t bytes);
  ~BoostLoadLimit();
  BoostLoadLimit(const BoostLoadLimit&) = delete;
  BoostLoadLimit& operator=(const BoostLoadLimit&) = delete;

 private:
  std::uint64_t saved_;
};

}  // namespace ckpt

namespace ckpt::detail {
inline constexpr unsigned kBoostTensorVersion = 2;
inline constexpr unsigned kBoostStateDictVersion = 2;

// The load limit of this thread (ckpt::BoostLoadLimit): take `bytes` from it, or throw format
// naming `what` when they are more than it holds; whether a limit is set.
void boost_spend(std::uint64_t bytes, const char* what);
bool boost_limited() noexcept;

[[noreturn]] inline void boost_version_error(const char* what, unsigned found, unsigned supported) {
  throw Error(ErrorCode::unsupported, "",
              std::string("Boost archive: ") + what + " version " + std::to_string(found) +
                  " is newer than this reader (" + std::to_string(supported) + ")");
}

inline void boost_refuse_v1(const char* what) {
  if (boost_limited())
    throw Error(ErrorCode::unsupported, "",
                std::string("Boost archive: ") + what +
                    " version 1 is not read from files (its sizes cannot be checked before allocating); "
                    "load and save it again with this version");
}

// Strings as a size, then their bytes as a binary object, so a load can check the size first
// (Boost's own string loading resizes to whatever the archive claims).
template <class Archive>
void save_string(Archive& ar, const char* name, const std::string& text) {
  const std::uint64_t size = text.size();
  ar << boost::serialization::make_nvp("size", size);
  ar << boost::serialization::make_nvp(name, boost::serialization::make_binary_object(const_cast<char*>(text.data()), text.size()));
}
template <class Archive>
std::string load_string(Archive& ar, const char* name) {
  std::uint64_t size = 0;
  ar >> boost::serialization::make_nvp("size", size);
  boost_spend(size, name);
  std::string text(static_cast<std::size_t>(size), '\0');
  ar >> boost::serialization::make_nvp(name, boost::serialization::make_binary_object(text.data(), text.size()));
  return text;
}

// A bool, loaded as the byte it is stored as: Boost's binary archives copy that byte into a bool
// unchecked (a value other than 0 or 1 is undefined behavior); text and xml hold the same 0 or 1.
template <class Archive>
bool load_flag(Archive& ar, const char* name) {
  unsigned char value = 0;
  ar >> boost::serialization::make_nvp(name, value);
  if (value > 1)
    throw Error(ErrorCode::format, "",
                std::string("Boost archive: ") + name + " flag is " + std::to_string(value) + ", expected 0 or 1");
  return value != 0;
}

inline Role parse_boost_role(const std::string& role) {
  if (role == "parameter") return Role::parameter;
  if (role == "buffer") return Role::buffer;
  if (role == "extra") return Role::extra;
  throw Error(ErrorCode::format, "", "Boost archive: unknown role '" + role + "'");
}

// The data size of a tensor an archive describes: a negative dimension or a size beyond 64 bits
// is corrupt input (format), not a caller's mistake.
inline std::uint64_t boost_tensor_bytes(const TensorInfo& info) {
  for (const std::int64_t d : info.shape)
    if (d < 0) throw Error(ErrorCode::format, "", "Boost archive: tensor shape " + shape_to_string(info.shape) + " has a negative dimension");
  try {
    return info.nbytes();
  } catch (const Error&) {
    throw Error(ErrorCode::format, "", "Boost archive: tensor shape " + shape_to_string(info.shape) + " overflows 64 bits");
  }
}

// Version 2 of a tensor up to its data: dtype, rank, each dimension. (Shared with the file writer,
// which saves the data its own way.)
template <class Archive>
void save_tensor_header(Archive& ar, const Tensor& tensor) {
  using boost::serialization::make_nvp;
  save_string(ar, "dtype", std::string(dtype_name(tensor.dtype())));
  const std::uint64_t rank = tensor.shape().size();
  ar << make_nvp("rank", rank);
  for (const std::int64_t d : tensor.shape()) ar << make_nvp("dim", d);
}

// The same, loaded: checked, and its data's size
// taken from the budget. (Shared with the file reader's listing pass, which skips the data.)
template <class Archive>
TensorInfo load_tensor_header(Archive& ar) {
  using boost::serialization::make_nvp;
  const std::string dtype_text = load_string(ar, "dtype");
  std::uint64_t rank = 0;
  ar >> make_nvp("rank", rank);
  if (rank > 64) throw Error(ErrorCode::format, "", "Boost archive: tensor rank " + std::to_string(rank) + " is over 64");
  Shape shape(static_cast<std::size_t>(rank));
  for (auto& d : shape) ar >> make_nvp("dim", d);
  const auto dtype = dtype_from_name(dtype_text);
  if (!dtype) throw Error(ErrorCode::unsupported, "", "Boost archive: unknown dtype '" + dtype_text + "'");
  TensorInfo info;
  info.dtype = *dtype;
  info.shape = std::move(shape);
  boost_spend(boost_tensor_bytes(info), "tensor data");
  return info;
}

// Version 2 of a StateDict entry up to its tensor: name, role, section, collection, persistent.
template <class Archive>
EntryInfo load_entry_fields(Archive& ar) {
  EntryInfo info;
  info.name = load_string(ar, "name");
  const std::string role = load_string(ar, "role");
  info.section = load_string(ar, "section");
  info.collection = load_string(ar, "collection");
  info.persistent = load_flag(ar, "persistent");
  info.role = parse_boost_role(role);
  return info;
}

// The deepest nesting of arrays and objects in JSON text (brackets inside strings not counted):
// checked before parsing, since nlohmann's parse, copy, dump and destruction recurse.
inline std::size_t json_nesting(const std::string& text) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

inline Metadata parse_boost_metadata(const std::string& text) {
  constexpr std::size_t kMaxDepth = 128;  // as for JSON in every other format
  if (json_nesting(text) > kMaxDepth)
    throw Error(ErrorCode::format, "", "Boost archive: metadata nests deeper than " + std::to_string(kMaxDepth) + " levels");
  try {
    return Metadata::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, "", std::string("Boost archive: metadata is not JSON: ") + e.what());
  }
}
}  // namespace ckpt::detail

namespace boost::serialization {

// Version 2: dtype, rank, each dimension, data. (Version 1 stored the shape as a vector, whose
// size Boost allocates before anything can check it; it is still read from in-memory archives.)
template <class Archive>
void save(Archive& ar, const ckpt::Tensor& tensor, unsigned /*version*/) {
  ckpt::detail::save_tensor_header(ar, tensor);
  const auto bytes = tensor.bytes();
  ar << make_nvp("data", make_binary_object(const_cast<std::byte*>(bytes.data()), bytes.size()));
}

template <class Archive>
void load(Archive& ar, ckpt::Tensor& tensor, unsigned version) {
  if (version > ckpt::detail::kBoostTensorVersion)
    ckpt::detail::boost_version_error("Tensor", version, ckpt::detail::kBoostTensorVersion);
  ckpt::TensorInfo info;
  if (version < 2) {
    ckpt::detail::boost_refuse_v1("Tensor");
    std::string dtype_text;
    ar >> make_nvp("dtype", dtype_text) >> make_nvp("shape", info.shape);
    const auto dtype = ckpt::dtype_from_name(dtype_text);
    if (!dtype) throw ckpt::Error(ckpt::ErrorCode::unsupported, "", "Boost archive: unknown dtype '" + dtype_text + "'");
    info.dtype = *dtype;
    (void)ckpt::detail::boost_tensor_bytes(info);
  } else {
    info = ckpt::detail::load_tensor_header(ar);  // sized from the shape, within the budget
  }
  // Uninitialized: the archive fills every byte or the load throws and the tensor is dropped.
  ckpt::Tensor loaded = ckpt::Tensor::uninitialized(info.dtype, std::move(info.shape));
  auto bytes = loaded.mutable_bytes();
  ar >> make_nvp("data", make_binary_object(bytes.data(), bytes.size()));
  tensor = std::move(loaded);
}

template <class Archive>
void save(Archive& ar, const ckpt::StateDict& state, unsigned /*version*/) {
  const std::uint64_t count = state.size();
  ar << make_nvp("count", count);
  for (const auto& e : state.entries()) {
    ckpt::detail::save_string(ar, "name", e.name);
    ckpt::detail::save_string(ar, "role", ckpt::role_name(e.role));
    ckpt::detail::save_string(ar, "section", e.section);
    ckpt::detail::save_string(ar, "collection", e.collection);
    ar << make_nvp("persistent", e.persistent) << make_nvp("tensor", e.tensor);
  }
  ckpt::detail::save_string(ar, "metadata", state.metadata().dump());
}

template <class Archive>
void load(Archive& ar, ckpt::StateDict& state, unsigned version) {
  if (version > ckpt::detail::kBoostStateDictVersion)
    ckpt::detail::boost_version_error("StateDict", version, ckpt::detail::kBoostStateDictVersion);
  if (version < 2) ckpt::detail::boost_refuse_v1("StateDict");
  ckpt::StateDict loaded;
  std::uint64_t count = 0;
  ar >> make_nvp("count", count);
  for (std::uint64_t i = 0; i < count; ++i) {  // each iteration reads from the archive or throws
    ckpt::EntryInfo info;
    ckpt::Tensor tensor;
    if (version < 2) {
      std::string role;
      ar >> make_nvp("name", info.name) >> make_nvp("role", role) >> make_nvp("section", info.section) >>
          make_nvp("collection", info.collection);
      info.persistent = ckpt::detail::load_flag(ar, "persistent");
      info.role = ckpt::detail::parse_boost_role(role);
    } else {
      info = ckpt::detail::load_entry_fields(ar);
    }
    ar >> make_nvp("tensor", tensor);
    loaded.add(std::move(info), std::move(tensor));
  }
  std::string metadata;
  if (version < 2) ar >> make_nvp("metadata", metadata);
  else metadata = ckpt::detail::load_string(ar, "metadata");
  loaded.metadata() = ckpt::detail::parse_boost_metadata(metadata);
  state = std::move(loaded);
}

template <class Archive>
void serialize(Archive& ar, ckpt::Tensor& tensor, unsigned version) {
  split_free(ar, tensor, version);
}
template <class Archive>
void serialize(Archive& ar, ckpt::StateDict& state, unsigned version) {
  split_free(ar, state, version);
}

}  // namespace boost::serialization

BOOST_CLASS_VERSION(ckpt::Tensor, ckpt::detail::kBoostTensorVersion)
BOOST_CLASS_VERSION(ckpt::StateDict, ckpt::detail::kBoostStateDictVersion)

CKPT_API_END
