// Boost.Serialization support for Tensor and StateDict, so model state can live inside a user's
// own Boost-archived training state (text, xml and binary archives):
//
//   #include <ckpt/boost_serialization.h>
//   boost::archive::xml_oarchive out(stream);
//   out << boost::serialization::make_nvp("model", state);
//
// Tensor bytes are little-endian (ckpt's definition); text and xml archives carry them as base64.
// Versioned with BOOST_CLASS_VERSION; loading a newer version throws ckpt::Error (unsupported).
#pragma once

#include <boost/serialization/binary_object.hpp>
#include <boost/serialization/nvp.hpp>
#include <boost/serialization/split_free.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <boost/serialization/version.hpp>

#include "ckpt/state_dict.h"

namespace ckpt::detail {
inline constexpr unsigned kBoostTensorVersion = 2;
inline constexpr unsigned kBoostStateDictVersion = 2;

// Bytes that loading may still allocate (strings, shapes, tensor data). Unbounded for archives a
// program made itself; readers of untrusted files (ckpt::open on a Boost archive) set it to the
// file's size, which bounds every claim, since each allocated byte must also be in the archive.
inline thread_local std::uint64_t boost_load_budget = UINT64_MAX;

[[noreturn]] inline void boost_version_error(const char* what, unsigned found, unsigned supported) {
  throw Error(ErrorCode::unsupported, "",
              std::string("Boost archive: ") + what + " version " + std::to_string(found) +
                  " is newer than this reader (" + std::to_string(supported) + ")");
}

inline void boost_spend(std::uint64_t bytes, const char* what) {
  if (bytes > boost_load_budget)
    throw Error(ErrorCode::format, "",
                std::string("Boost archive: ") + what + " claims " + std::to_string(bytes) +
                    " bytes, more than the archive holds");
  if (boost_load_budget != UINT64_MAX) boost_load_budget -= bytes;
}

inline void boost_refuse_v1(const char* what) {
  if (boost_load_budget != UINT64_MAX)
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
}  // namespace ckpt::detail

namespace boost::serialization {

// Version 2: dtype, rank, each dimension, data. (Version 1 stored the shape as a vector, whose
// size Boost allocates before anything can check it; it is still read from in-memory archives.)
template <class Archive>
void save(Archive& ar, const ckpt::Tensor& tensor, unsigned /*version*/) {
  ckpt::detail::save_string(ar, "dtype", std::string(ckpt::dtype_name(tensor.dtype())));
  const std::uint64_t rank = tensor.shape().size();
  ar << make_nvp("rank", rank);
  for (const std::int64_t d : tensor.shape()) ar << make_nvp("dim", d);
  const auto bytes = tensor.bytes();
  ar << make_nvp("data", make_binary_object(const_cast<std::byte*>(bytes.data()), bytes.size()));
}

template <class Archive>
void load(Archive& ar, ckpt::Tensor& tensor, unsigned version) {
  if (version > ckpt::detail::kBoostTensorVersion)
    ckpt::detail::boost_version_error("Tensor", version, ckpt::detail::kBoostTensorVersion);
  std::string dtype_text;
  std::vector<std::int64_t> shape;
  if (version < 2) {
    ckpt::detail::boost_refuse_v1("Tensor");
    ar >> make_nvp("dtype", dtype_text) >> make_nvp("shape", shape);
  } else {
    dtype_text = ckpt::detail::load_string(ar, "dtype");
    std::uint64_t rank = 0;
    ar >> make_nvp("rank", rank);
    if (rank > 64) throw ckpt::Error(ckpt::ErrorCode::format, "", "Boost archive: tensor rank " + std::to_string(rank) + " is over 64");
    shape.resize(static_cast<std::size_t>(rank));
    for (auto& d : shape) ar >> make_nvp("dim", d);
  }
  const auto dtype = ckpt::dtype_from_name(dtype_text);
  if (!dtype) throw ckpt::Error(ckpt::ErrorCode::unsupported, "", "Boost archive: unknown dtype '" + dtype_text + "'");
  // Sized from the shape (overflow-checked) within the budget; the archive must then hold
  // exactly that many bytes.
  ckpt::TensorInfo info;
  info.dtype = *dtype;
  info.shape = shape;
  ckpt::detail::boost_spend(info.nbytes(), "tensor data");
  // Uninitialized: the archive fills every byte or the load throws and the tensor is dropped.
  ckpt::Tensor loaded = ckpt::Tensor::uninitialized(*dtype, std::move(shape));
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
    std::string role;
    ckpt::Tensor tensor;
    if (version < 2) {
      ar >> make_nvp("name", info.name) >> make_nvp("role", role) >> make_nvp("section", info.section) >>
          make_nvp("collection", info.collection);
    } else {
      info.name = ckpt::detail::load_string(ar, "name");
      role = ckpt::detail::load_string(ar, "role");
      info.section = ckpt::detail::load_string(ar, "section");
      info.collection = ckpt::detail::load_string(ar, "collection");
    }
    ar >> make_nvp("persistent", info.persistent) >> make_nvp("tensor", tensor);
    if (role == "parameter") info.role = ckpt::Role::parameter;
    else if (role == "buffer") info.role = ckpt::Role::buffer;
    else if (role == "extra") info.role = ckpt::Role::extra;
    else throw ckpt::Error(ckpt::ErrorCode::format, "", "Boost archive: unknown role '" + role + "'");
    loaded.add(std::move(info), std::move(tensor));
  }
  std::string metadata;
  if (version < 2) ar >> make_nvp("metadata", metadata);
  else metadata = ckpt::detail::load_string(ar, "metadata");
  try {
    loaded.metadata() = ckpt::Metadata::parse(metadata);
  } catch (const nlohmann::json::exception& e) {
    throw ckpt::Error(ckpt::ErrorCode::format, "", std::string("Boost archive: metadata is not JSON: ") + e.what());
  }
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
