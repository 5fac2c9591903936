// Names and encodings of the ckpt-h5 schema (format-spec/ckpt-h5.md), shared by reader and writer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ckpt/dtype.h"
#include "h5/h5.h"

namespace ckpt::detail::ckpt_h5 {

inline constexpr const char* kFormatAttribute = "ckpt_format";
inline constexpr const char* kFormatName = "ckpt-h5";
inline constexpr const char* kVersionAttribute = "ckpt_version";
inline constexpr const char* kWriterAttribute = "ckpt_writer";
inline constexpr const char* kIndexDataset = "index";
inline constexpr const char* kSectionsGroup = "sections";
inline constexpr const char* kDtypeAttribute = "ckpt_dtype";


// Spec §4: a key becomes an HDF5 link name by percent-encoding '%', '/' and NUL; the keys "" and
// "." become "%" and "%2E". Every key maps to a distinct, valid link name.
std::string encode_link_name(std::string_view key);

// Spec §5: the HDF5 type a dtype is stored as.
h5::Handle file_type(DType dtype);
// float8 types have no faithful HDF5 type: stored as uint8 with a ckpt_dtype attribute.
bool stored_as_raw_bytes(DType dtype);

}  // namespace ckpt::detail::ckpt_h5
