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
inline constexpr unsigned kBoostTensorVersion = 1;
inline constexpr unsigned kBoostStateDictVersion = 1;

[[noreturn]] inline void boost_version_error(const char* what, unsigned found, unsigned supported) {
  throw Error(ErrorCode::unsupported, "",
              std::string("Boost archive: ") + what + " version " + std::to_string(found) +
                  " is newer than this reader (" + std::to_string(supported) + ")");
}
}  // namespace ckpt::detail

namespace boost::serialization {

template <class Archive>
void save(Archive& ar, const ckpt::Tensor& tensor, unsigned /*version*/) {
  const std::string dtype(ckpt::dtype_name(tensor.dtype()));
  const std::vector<std::int64_t>& shape = tensor.shape();
  ar << make_nvp("dtype", dtype) << make_nvp("shape", shape);
  const auto bytes = tensor.bytes();
  ar << make_nvp("data", make_binary_object(const_cast<std::byte*>(bytes.data()), bytes.size()));
}

template <class Archive>
void load(Archive& ar, ckpt::Tensor& tensor, unsigned version) {
  if (version > ckpt::detail::kBoostTensorVersion)
    ckpt::detail::boost_version_error("Tensor", version, ckpt::detail::kBoostTensorVersion);
  std::string dtype_text;
  std::vector<std::int64_t> shape;
  ar >> make_nvp("dtype", dtype_text) >> make_nvp("shape", shape);
  const auto dtype = ckpt::dtype_from_name(dtype_text);
  if (!dtype) throw ckpt::Error(ckpt::ErrorCode::unsupported, "", "Boost archive: unknown dtype '" + dtype_text + "'");
  // Sized from the shape (overflow-checked); the archive must then hold exactly that many bytes.
  ckpt::Tensor loaded = ckpt::Tensor::zeros(*dtype, std::move(shape));
  auto bytes = loaded.mutable_bytes();
  ar >> make_nvp("data", make_binary_object(bytes.data(), bytes.size()));
  tensor = std::move(loaded);
}

template <class Archive>
void save(Archive& ar, const ckpt::StateDict& state, unsigned /*version*/) {
  const std::uint64_t count = state.size();
  ar << make_nvp("count", count);
  for (const auto& e : state.entries()) {
    const std::string role = ckpt::role_name(e.role);
    ar << make_nvp("name", e.name) << make_nvp("role", role) << make_nvp("section", e.section)
       << make_nvp("collection", e.collection) << make_nvp("persistent", e.persistent)
       << make_nvp("tensor", e.tensor);
  }
  const std::string metadata = state.metadata().dump();
  ar << make_nvp("metadata", metadata);
}

template <class Archive>
void load(Archive& ar, ckpt::StateDict& state, unsigned version) {
  if (version > ckpt::detail::kBoostStateDictVersion)
    ckpt::detail::boost_version_error("StateDict", version, ckpt::detail::kBoostStateDictVersion);
  ckpt::StateDict loaded;
  std::uint64_t count = 0;
  ar >> make_nvp("count", count);
  for (std::uint64_t i = 0; i < count; ++i) {  // each iteration reads from the archive or throws
    ckpt::EntryInfo info;
    std::string role;
    ckpt::Tensor tensor;
    ar >> make_nvp("name", info.name) >> make_nvp("role", role) >> make_nvp("section", info.section) >>
        make_nvp("collection", info.collection) >> make_nvp("persistent", info.persistent) >>
        make_nvp("tensor", tensor);
    if (role == "parameter") info.role = ckpt::Role::parameter;
    else if (role == "buffer") info.role = ckpt::Role::buffer;
    else if (role == "extra") info.role = ckpt::Role::extra;
    else throw ckpt::Error(ckpt::ErrorCode::format, "", "Boost archive: unknown role '" + role + "'");
    loaded.add(std::move(info), std::move(tensor));
  }
  std::string metadata;
  ar >> make_nvp("metadata", metadata);
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
