#include "h5/h5.h"

#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>

#include <pthread.h>
#include <type_traits>

#include "util/bytes.h"

namespace ckpt::detail::h5 {

static_assert(std::is_same_v<hid, hid_t>, "h5::hid must be HDF5's hid_t");

namespace {

// The serial HDF5 library is not thread-safe: every call into it goes through this file, and
// every function here holds this lock (recursive: they call each other), so a conversion may read
// on one thread and write on another (read-ahead, core/read_ahead.h).
//
// fork() (the isolation's fallback, or the user's) while another thread is inside HDF5 would give
// the child a lock that no thread of it can release, and HDF5 state caught mid-call: fork handlers
// take the lock before a fork and hand the child a fresh one.
std::recursive_mutex& library_mutex() {
  static auto* mutex = new std::recursive_mutex;  // never destroyed: used during exit
  return *mutex;
}

std::unique_lock<std::recursive_mutex> lock_library() {
  static const int registered = ::pthread_atfork([] { library_mutex().lock(); }, [] { library_mutex().unlock(); },
                                                 [] { new (&library_mutex()) std::recursive_mutex(); });
  (void)registered;
  std::unique_lock lock(library_mutex());
  // Debian's HDF5 is built thread-safe: its error stack, and whether it prints it, is per thread.
  // Printing is switched off on every thread that calls in (read-ahead, compression), not only on
  // the first: errors reach users through ours, as one line.
  static thread_local bool silenced = false;
  if (!silenced) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    silenced = true;
  }
  return lock;
}

// Errors of calls that are about no file (building types, the filter registry).
const std::string kNoFile;

void init_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (H5open() < 0) throw Error(ErrorCode::io, "", "the HDF5 library cannot start");
    // HDF5 prints its error stack to stderr by default; errors reach users through ours.
    if (H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) < 0) throw Error(ErrorCode::io, "", "cannot silence HDF5's error printing");
  });
}

// The innermost message on HDF5's error stack (the most specific), then clear the stack.
std::string hdf5_message() {
  std::string message;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
        auto* out = static_cast<std::string*>(data);
        if (n == 0 && err->desc != nullptr) *out = err->desc;
        return 0;
      },
      &message);
  H5Eclear2(H5E_DEFAULT);
  return message;
}

[[noreturn]] void raise(Where w, const std::string& what, ErrorCode code = ErrorCode::format) {
  const std::string detail = hdf5_message();
  if (detail.empty()) throw Error(code, w.file, what);
  throw Error(code, w.file, what + " (HDF5: " + detail + ")");
}

hid_t check(hid_t id, Where w, const std::string& what) {
  if (id < 0) raise(w, what);
  return id;
}
void check_status(herr_t status, Where w, const std::string& what) {
  if (status < 0) raise(w, what);
}
// For calls that signal failure with 0 (sizes) or a negative enum (classes, layouts).
std::size_t check_size(std::size_t size, Where w, const std::string& what) {
  if (size == 0) raise(w, what);
  return size;
}
H5T_class_t check_class(H5T_class_t cls, Where w) {
  if (cls == H5T_NO_CLASS) raise(w, "cannot read a type's class");
  return cls;
}

// A traversal of an external link is refused: a checkpoint's objects live in its own file.
herr_t refuse_external_link(const char*, const char*, const char*, const char*, unsigned*, hid_t, void*) { return -1; }

// Access property lists (for H5Gopen2, H5Dopen2) that refuse external links; made once.
hid_t access_list(hid_t cls) {
  static hid_t groups = -1, datasets = -1;
  hid_t& list = cls == H5P_GROUP_ACCESS ? groups : datasets;
  if (list < 0) {
    const Where w{kNoFile};
    list = check(H5Pcreate(cls), w, "cannot create an HDF5 property list");
    check_status(H5Pset_elink_cb(list, refuse_external_link, nullptr), w, "cannot refuse external links");
  }
  return list;
}

Handle property_list(hid_t cls, Where w) {
  return Handle(check(H5Pcreate(cls), w, "cannot create an HDF5 property list"));
}

// A fixed-length UTF-8 string type of `size` bytes (at least 1), NUL-padded.
Handle string_type(std::size_t size, Where w) {
  Handle type(check(H5Tcopy(H5T_C_S1), w, "cannot create a string type"));
  check_status(H5Tset_size(type.get(), std::max<std::size_t>(size, 1)), w, "cannot size a string type");
  check_status(H5Tset_cset(type.get(), H5T_CSET_UTF8), w, "cannot set a string type's character set");
  check_status(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), w, "cannot set a string type's padding");
  return type;
}

std::vector<hsize_t> to_hsize(const std::vector<std::uint64_t>& v) { return {v.begin(), v.end()}; }

}  // namespace

void Handle::reset() noexcept {
  const auto lock = lock_library();
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;  // predefined types and invalid ids
  }
  id_ = -1;
}

// --- files ---------------------------------------------------------------------------------

// In fd_driver.cpp: an access list for ckpt's descriptor driver.
hid_t fd_driver_access_list(int fd, WriteStatus* status, std::span<const std::byte> image);

namespace {
Handle fd_access_list(Where w, int fd, WriteStatus* status, std::span<const std::byte> image = {}) {
  return Handle(check(fd_driver_access_list(fd, status, image), w, "cannot set up the file driver"));
}
}  // namespace

namespace {

// The properties of every file ckpt creates, serial or parallel: set on `fapl`; the creation list.
Handle creation_properties(Where w, const Handle& fapl, std::uint64_t alignment_threshold, std::uint64_t alignment) {
  // v1.8 object formats: compact/dense link storage, so groups with many links stay fast, while
  // HDF5 1.8 tools can still read the file.
  check_status(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), w, "cannot set format bounds");
  // Aligned raw data makes zero-copy views aligned for every dtype; small-data aggregation would
  // pack small tensors at unaligned offsets, so it is switched off.
  check_status(H5Pset_alignment(fapl.get(), alignment_threshold, alignment), w, "cannot set alignment");
  check_status(H5Pset_small_data_block_size(fapl.get(), 0), w, "cannot set small data block size");
  // Everything is closed in order by the writer; a strong close degree makes a forgotten object
  // close with the file rather than keep a half-closed file alive.
  check_status(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), w, "cannot set the close degree");
  Handle fcpl = property_list(H5P_FILE_CREATE, w);
  check_status(H5Pset_link_creation_order(fcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), w,
               "cannot track creation order");
  check_status(H5Pset_file_space_strategy(fcpl.get(), H5F_FSPACE_STRATEGY_AGGR, 0, 1), w, "cannot set the file space strategy");
  return fcpl;
}

}  // namespace

Handle create_file(Where w, int fd, WriteStatus& status, const CreateSettings& settings) {
  const auto lock = lock_library();
  init_library();
  Handle fapl = fd_access_list(w, fd, &status);
  Handle fcpl = creation_properties(w, fapl, 1, settings.alignment);
  // The name is HDF5's for messages only: the driver writes to `fd`.
  return Handle(check(H5Fcreate(w.file.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), w,
                      "cannot create HDF5 file"));
}

Handle open_file_readonly(Where w, int fd) {
  const auto lock = lock_library();
  init_library();
  Handle fapl = fd_access_list(w, fd, nullptr);
  return Handle(check(H5Fopen(w.file.c_str(), H5F_ACC_RDONLY, fapl.get()), w, "cannot open as HDF5"));
}

Handle open_image_readonly(Where w, std::span<const std::byte> image) {
  const auto lock = lock_library();
  init_library();
  if (image.empty()) throw Error(ErrorCode::format, w.file, "cannot open as HDF5: the file is empty");
  Handle fapl = fd_access_list(w, -1, nullptr, image);
  return Handle(check(H5Fopen(w.file.c_str(), H5F_ACC_RDONLY, fapl.get()), w, "cannot open as HDF5"));
}

void close_file(Where w, Handle& file) {
  const auto lock = lock_library();
  const hid_t id = file.release();
  if (id >= 0) check_status(H5Fclose(id), w, "cannot finish writing the HDF5 file");
}

void close_object(Where w, Handle& object) {
  const auto lock = lock_library();
  const hid_t id = object.release();
  if (id < 0) return;
  herr_t status = 0;
  switch (H5Iget_type(id)) {
    case H5I_GROUP: status = H5Gclose(id); break;
    case H5I_DATASET: status = H5Dclose(id); break;
    case H5I_ATTR: status = H5Aclose(id); break;
    case H5I_FILE: status = H5Fclose(id); break;
    default: Handle(id).reset(); break;
  }
  check_status(status, w, "cannot close an HDF5 object");
}

std::uint64_t userblock_size(Where w, const Handle& file) {
  const auto lock = lock_library();
  Handle fcpl(check(H5Fget_create_plist(file.get()), w, "cannot query file creation properties"));
  hsize_t size = 0;
  check_status(H5Pget_userblock(fcpl.get(), &size), w, "cannot query userblock");
  return size;
}

bool has_signature(std::span<const std::byte> head) {  // no HDF5 call
  static constexpr unsigned char kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  for (std::size_t offset = 0; offset + 8 <= head.size(); offset = offset == 0 ? 512 : offset * 2)
    if (std::memcmp(head.data() + offset, kSignature, 8) == 0) return true;
  return false;
}

// --- groups --------------------------------------------------------------------------------

Handle create_group(Where w, const Handle& parent, const std::string& name) {
  const auto lock = lock_library();
  Handle gcpl = property_list(H5P_GROUP_CREATE, w);
  check_status(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), w,
               "cannot track creation order");
  Handle lcpl = property_list(H5P_LINK_CREATE, w);
  check_status(H5Pset_char_encoding(lcpl.get(), H5T_CSET_UTF8), w, "cannot set link names to UTF-8");
  return Handle(check(H5Gcreate2(parent.get(), name.c_str(), lcpl.get(), gcpl.get(), H5P_DEFAULT), w,
                      "cannot create group " + quote(name)));
}

Handle open_group(Where w, const Handle& parent, const std::string& name) {
  const auto lock = lock_library();
  return Handle(check(H5Gopen2(parent.get(), name.c_str(), access_list(H5P_GROUP_ACCESS)), w,
                      "cannot open group " + quote(name)));
}

bool link_exists(Where w, const Handle& parent, const std::string& name) {
  const auto lock = lock_library();
  const htri_t r = H5Lexists(parent.get(), name.c_str(), H5P_DEFAULT);
  if (r < 0) raise(w, "cannot look up " + quote(name));
  return r > 0;
}

bool link_is_external(Where w, const Handle& parent, const std::string& name) {
  const auto lock = lock_library();
  H5L_info_t info{};
  check_status(H5Lget_info(parent.get(), name.c_str(), &info, H5P_DEFAULT), w, "cannot look up " + quote(name));
  return info.type == H5L_TYPE_EXTERNAL;
}

// --- types ---------------------------------------------------------------------------------

Handle predefined(Predefined type) {
  const auto lock = lock_library();
  init_library();
  hid_t id = -1;
  switch (type) {
    case Predefined::f64: id = H5T_IEEE_F64LE; break;
    case Predefined::f32: id = H5T_IEEE_F32LE; break;
    case Predefined::i64: id = H5T_STD_I64LE; break;
    case Predefined::i32: id = H5T_STD_I32LE; break;
    case Predefined::i16: id = H5T_STD_I16LE; break;
    case Predefined::i8: id = H5T_STD_I8LE; break;
    case Predefined::u64: id = H5T_STD_U64LE; break;
    case Predefined::u32: id = H5T_STD_U32LE; break;
    case Predefined::u16: id = H5T_STD_U16LE; break;
    case Predefined::u8: id = H5T_STD_U8LE; break;
  }
  return Handle(H5Tcopy(id));
}

Handle custom_float(std::size_t size, std::size_t sign_pos, std::size_t exp_pos, std::size_t exp_bits,
                    std::size_t mant_bits, std::size_t ebias) {
  const auto lock = lock_library();
  init_library();
  const Where w{kNoFile};
  // The order matters: move the fields into the low bits first, then shrink (as h5py does).
  Handle t(check(H5Tcopy(H5T_IEEE_F32LE), w, "cannot copy a float type"));
  check_status(H5Tset_fields(t.get(), sign_pos, exp_pos, exp_bits, 0, mant_bits), w, "cannot set float fields");
  check_status(H5Tset_size(t.get(), size), w, "cannot size a float type");
  check_status(H5Tset_ebias(t.get(), ebias), w, "cannot set a float exponent bias");
  return t;
}

Handle bool_enum() {
  const auto lock = lock_library();
  init_library();
  const Where w{kNoFile};
  Handle t(check(H5Tenum_create(H5T_STD_I8LE), w, "cannot create an enum type"));
  const std::int8_t no = 0, yes = 1;
  check_status(H5Tenum_insert(t.get(), "FALSE", &no), w, "cannot build the bool enum");
  check_status(H5Tenum_insert(t.get(), "TRUE", &yes), w, "cannot build the bool enum");
  return t;
}

Handle complex_compound(const Handle& part) {
  const auto lock = lock_library();
  const Where w{kNoFile};
  const std::size_t size = check_size(H5Tget_size(part.get()), w, "cannot read a type's size");
  Handle t(check(H5Tcreate(H5T_COMPOUND, 2 * size), w, "cannot create a compound type"));
  check_status(H5Tinsert(t.get(), "r", 0, part.get()), w, "cannot build the complex compound");
  check_status(H5Tinsert(t.get(), "i", size, part.get()), w, "cannot build the complex compound");
  return t;
}

bool types_equal(const Handle& a, const Handle& b) {
  const auto lock = lock_library();
  const htri_t equal = H5Tequal(a.get(), b.get());
  if (equal < 0) raise({kNoFile}, "cannot compare types");
  return equal > 0;
}

namespace {

// Whether `a` and `b` hold the same values and differ at most in byte order (spec §5): integers
// of the same sign, precision and offset; floats of the same fields and exponent bias; compounds
// of the same members at the same offsets, each so; anything else only when equal.
bool same_but_order(hid_t a, hid_t b, Where w, int depth = 0) {
  const H5T_class_t cls = check_class(H5Tget_class(a), w);
  if (cls != check_class(H5Tget_class(b), w)) return false;
  if (check_size(H5Tget_size(a), w, "cannot read a type's size") != check_size(H5Tget_size(b), w, "cannot read a type's size"))
    return false;
  auto same = [&](auto get) { return get(a) == get(b); };
  switch (cls) {
    case H5T_INTEGER: {
      const H5T_sign_t sa = H5Tget_sign(a), sb = H5Tget_sign(b);
      if (sa == H5T_SGN_ERROR || sb == H5T_SGN_ERROR) raise(w, "cannot read an integer type's sign");
      return sa == sb && same(H5Tget_precision) && same(H5Tget_offset);
    }
    case H5T_FLOAT: {
      std::size_t fa[5], fb[5];
      check_status(H5Tget_fields(a, &fa[0], &fa[1], &fa[2], &fa[3], &fa[4]), w, "cannot read a float type's fields");
      check_status(H5Tget_fields(b, &fb[0], &fb[1], &fb[2], &fb[3], &fb[4]), w, "cannot read a float type's fields");
      return std::equal(fa, fa + 5, fb) && same(H5Tget_ebias) && same(H5Tget_precision) && same(H5Tget_offset) &&
             same(H5Tget_norm);
    }
    case H5T_COMPOUND: {
      const int n = H5Tget_nmembers(a);
      if (n < 0 || H5Tget_nmembers(b) != n || depth > 4) return false;
      for (unsigned k = 0; k < static_cast<unsigned>(n); ++k) {
        char* na = H5Tget_member_name(a, k);
        char* nb = H5Tget_member_name(b, k);
        const bool names = na && nb && std::strcmp(na, nb) == 0;
        H5free_memory(na);
        H5free_memory(nb);
        if (!names || H5Tget_member_offset(a, k) != H5Tget_member_offset(b, k)) return false;
        Handle ma(check(H5Tget_member_type(a, k), w, "cannot read a compound member")),
            mb(check(H5Tget_member_type(b, k), w, "cannot read a compound member"));
        if (!same_but_order(ma.get(), mb.get(), w, depth + 1)) return false;
      }
      return true;
    }
    default: {
      const htri_t equal = H5Tequal(a, b);
      if (equal < 0) raise(w, "cannot compare types");
      return equal > 0;
    }
  }
}

}  // namespace

bool types_compatible(const Handle& a, const Handle& b) {
  const auto lock = lock_library();
  return same_but_order(a.get(), b.get(), {kNoFile});
}

std::string describe_type(const Handle& type) {
  const auto lock = lock_library();
  const hid_t t = type.get();
  std::string what = "other";
  switch (H5Tget_class(t)) {
    case H5T_INTEGER: what = H5Tget_sign(t) == H5T_SGN_NONE ? "unsigned integer" : "signed integer"; break;
    case H5T_FLOAT: {
      std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
      what = H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) >= 0
                 ? fmt::format("float ({} exponent, {} mantissa bits)", esize, msize)
                 : std::string("float");
      break;
    }
    case H5T_STRING: what = "string"; break;
    case H5T_COMPOUND: what = "compound"; break;
    case H5T_ENUM: what = "enum"; break;
    case H5T_OPAQUE: what = "opaque"; break;
    case H5T_ARRAY: what = "array"; break;
    case H5T_VLEN: what = "variable-length"; break;
    default: break;
  }
  const std::size_t size = H5Tget_size(t);  // for a message: 0 if unknown
  if (size > 1 && H5Tget_order(t) == H5T_ORDER_BE) what = "big-endian " + what;
  H5Eclear2(H5E_DEFAULT);
  return fmt::format("{} of {} byte{}", what, size, size == 1 ? "" : "s");
}

// --- datasets ------------------------------------------------------------------------------

Handle create_dataset(Where w, const Handle& parent, const std::string& name, const Handle& type,
                      const std::vector<std::uint64_t>& shape, const DatasetLayout& layout) {
  const auto lock = lock_library();
  const auto dims = to_hsize(shape);
  Handle space(shape.empty() ? H5Screate(H5S_SCALAR)
                             : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  check(space.get(), w, "cannot create dataspace for " + quote(name));
  Handle dcpl = property_list(H5P_DATASET_CREATE, w);
  // Byte-identical files for identical input; no fill values written.
  check_status(H5Pset_obj_track_times(dcpl.get(), false), w, "cannot switch off modification times");
  check_status(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), w, "cannot switch off fill values");
  if (!layout.chunked && layout.allocate_early)
    check_status(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), w, "cannot set allocation time for " + quote(name));
  if (layout.chunked) {
    const auto chunk = to_hsize(layout.chunk);
    check_status(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), w,
                 "cannot set chunking for " + quote(name));
    for (const auto& f : layout.filters) {
      if (f.id == kShuffleFilter)
        check_status(H5Pset_shuffle(dcpl.get()), w, "cannot set shuffle for " + quote(name));
      else
        check_status(H5Pset_filter(dcpl.get(), f.id, H5Z_FLAG_MANDATORY, f.values.size(), f.values.data()), w,
                     fmt::format("cannot set filter {} for {}", f.id, quote(name)));
    }
  }
  Handle lcpl = property_list(H5P_LINK_CREATE, w);
  check_status(H5Pset_char_encoding(lcpl.get(), H5T_CSET_UTF8), w, "cannot set link names to UTF-8");
  return Handle(check(H5Dcreate2(parent.get(), name.c_str(), type.get(), space.get(), lcpl.get(), dcpl.get(),
                                 H5P_DEFAULT),
                      w, "cannot create dataset " + quote(name)));
}

Handle open_dataset(Where w, const Handle& parent, const std::string& name) {
  const auto lock = lock_library();
  return Handle(check(H5Dopen2(parent.get(), name.c_str(), access_list(H5P_DATASET_ACCESS)), w,
                      "cannot open dataset " + quote(name)));
}

Handle try_open_dataset(const Handle& parent, const std::string& name) {
  const auto lock = lock_library();
  Handle dataset(H5Dopen2(parent.get(), name.c_str(), access_list(H5P_DATASET_ACCESS)));
  if (!dataset.valid()) H5Eclear2(H5E_DEFAULT);
  return dataset;
}

Handle dataset_type(Where w, const Handle& dataset) {
  const auto lock = lock_library();
  return Handle(check(H5Dget_type(dataset.get()), w, "cannot read dataset type"));
}

std::vector<std::uint64_t> dataset_shape(Where w, const Handle& dataset) {
  const auto lock = lock_library();
  Handle space(check(H5Dget_space(dataset.get()), w, "cannot read dataspace"));
  const H5S_class_t cls = H5Sget_simple_extent_type(space.get());
  if (cls == H5S_NO_CLASS) raise(w, "cannot read dataspace class");
  if (cls == H5S_SCALAR) return {};
  if (cls != H5S_SIMPLE) throw Error(ErrorCode::format, w.file, "dataset has a null dataspace");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) raise(w, "cannot read dataspace rank");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0) raise(w, "cannot read dataspace dims");
  return {dims.begin(), dims.end()};
}

DatasetLayout dataset_layout(Where w, const Handle& dataset) {
  const auto lock = lock_library();
  DatasetLayout layout;
  Handle dcpl(check(H5Dget_create_plist(dataset.get()), w, "cannot read dataset properties"));
  const H5D_layout_t kind = H5Pget_layout(dcpl.get());
  if (kind == H5D_LAYOUT_ERROR) raise(w, "cannot read dataset layout");
  const int external = H5Pget_external_count(dcpl.get());
  if (external < 0) raise(w, "cannot read external storage");
  layout.external_files = static_cast<std::size_t>(external);
  switch (kind) {
    case H5D_CHUNKED: layout.kind = DatasetLayout::Kind::chunked; break;
    case H5D_COMPACT: layout.kind = DatasetLayout::Kind::compact; break;
    case H5D_VIRTUAL: layout.kind = DatasetLayout::Kind::virtual_dataset; break;
    default: layout.kind = DatasetLayout::Kind::contiguous; break;
  }
  if (kind != H5D_CHUNKED) return layout;
  layout.chunked = true;
  unsigned options = 0;
  check_status(H5Pget_chunk_opts(dcpl.get(), &options), w, "cannot read chunk options");
  layout.partial_chunks_unfiltered = (options & H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS) != 0;
  const int rank = H5Pget_chunk(dcpl.get(), 0, nullptr);
  if (rank < 0) raise(w, "cannot read chunk dims");
  std::vector<hsize_t> chunk(static_cast<std::size_t>(rank));
  if (H5Pget_chunk(dcpl.get(), rank, chunk.data()) != rank) raise(w, "cannot read chunk dims");
  layout.chunk.assign(chunk.begin(), chunk.end());
  const int nfilters = H5Pget_nfilters(dcpl.get());
  if (nfilters < 0) raise(w, "cannot read filter pipeline");
  for (int i = 0; i < nfilters; ++i) {
    unsigned flags = 0, config = 0;
    std::size_t n = 8;
    unsigned values[8] = {};
    char name[64];
    const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n, values, sizeof name,
                                           name, &config);
    if (id < 0) raise(w, "cannot read filter pipeline");
    layout.filters.push_back({id, std::vector<unsigned>(values, values + std::min<std::size_t>(n, 8))});
  }
  return layout;
}

std::optional<std::uint64_t> contiguous_offset(const Handle& dataset) {
  const auto lock = lock_library();
  const haddr_t addr = H5Dget_offset(dataset.get());
  H5Eclear2(H5E_DEFAULT);
  if (addr == HADDR_UNDEF) return std::nullopt;
  return addr;
}

std::uint64_t storage_size(const Handle& dataset) {
  const auto lock = lock_library();
  const hsize_t size = H5Dget_storage_size(dataset.get());  // 0 on failure, as for no storage
  H5Eclear2(H5E_DEFAULT);
  return size;
}

void write_all(Where w, const Handle& dataset, const Handle& mem_type, const void* data) {
  const auto lock = lock_library();
  check_status(H5Dwrite(dataset.get(), mem_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), w,
               "cannot write dataset");
}

void read_all(Where w, const Handle& dataset, const Handle& mem_type, void* data) {
  const auto lock = lock_library();
  check_status(H5Dread(dataset.get(), mem_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), w,
               "cannot read dataset");
}

void write_raw_chunk(Where w, const Handle& dataset, const std::vector<std::uint64_t>& offset,
                     std::uint32_t filter_mask, std::span<const std::byte> data) {
  const auto lock = lock_library();
  const auto off = to_hsize(offset);
  check_status(H5Dwrite_chunk(dataset.get(), H5P_DEFAULT, filter_mask, off.data(), data.size(), data.data()), w,
               "cannot write chunk");
}

ChunkInfo chunk_info(Where w, const Handle& dataset, const std::vector<std::uint64_t>& offset) {
  const auto lock = lock_library();
  const auto off = to_hsize(offset);
  unsigned mask = 0;
  haddr_t address = HADDR_UNDEF;
  hsize_t size = 0;
  check_status(H5Dget_chunk_info_by_coord(dataset.get(), off.data(), &mask, &address, &size), w, "cannot find chunk");
  ChunkInfo info;
  if (address != HADDR_UNDEF) info.address = address;
  info.size = size;
  info.filter_mask = mask;
  return info;
}

std::uint64_t allocated_chunks(Where w, const Handle& dataset) {
  const auto lock = lock_library();
  Handle space(check(H5Dget_space(dataset.get()), w, "cannot read dataspace"));
  hsize_t n = 0;
  check_status(H5Dget_num_chunks(dataset.get(), space.get(), &n), w, "cannot count chunks");
  return n;
}

void read_region(Where w, const Handle& dataset, const Handle& mem_type, const std::vector<std::uint64_t>& offsets,
                 const std::vector<std::uint64_t>& sizes, void* data) {
  const auto lock = lock_library();
  if (sizes.empty()) {  // a scalar dataset: the whole of it
    check_status(H5Dread(dataset.get(), mem_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), w, "cannot read dataset");
    return;
  }
  const auto start = to_hsize(offsets), count = to_hsize(sizes);
  Handle file_space(check(H5Dget_space(dataset.get()), w, "cannot read dataspace"));
  check_status(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), w,
               "cannot select a slice");
  Handle memory_space(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), w,
                            "cannot create a dataspace"));
  check_status(H5Dread(dataset.get(), mem_type.get(), memory_space.get(), file_space.get(), H5P_DEFAULT, data), w,
               "cannot read dataset");
}

void write_string_dataset(Where w, const Handle& parent, const std::string& name, const std::string& text) {
  const auto lock = lock_library();
  Handle type = string_type(text.size(), w);
  Handle space(check(H5Screate(H5S_SCALAR), w, "cannot create a dataspace"));
  Handle dcpl = property_list(H5P_DATASET_CREATE, w);
  check_status(H5Pset_obj_track_times(dcpl.get(), false), w, "cannot switch off modification times");
  Handle dataset(check(H5Dcreate2(parent.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, dcpl.get(),
                                  H5P_DEFAULT),
                       w, "cannot create dataset " + quote(name)));
  std::string padded = text;
  if (padded.empty()) padded.push_back('\0');
  check_status(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, padded.data()), w,
               "cannot write dataset " + quote(name));
  close_object(w, dataset);
}

std::string read_string_dataset(Where w, const Handle& parent, const std::string& name, std::uint64_t max_bytes,
                                std::uint64_t file_size) {
  const auto lock = lock_library();
  Handle dataset = open_dataset(w, parent, name);
  Handle type = dataset_type(w, dataset);
  const auto shape = dataset_shape(w, dataset);
  const H5T_class_t cls = check_class(H5Tget_class(type.get()), w);
  const htri_t variable = cls == H5T_STRING ? H5Tis_variable_str(type.get()) : 0;
  if (variable < 0) raise(w, "cannot read a string type");
  const std::size_t type_size = check_size(H5Tget_size(type.get()), w, "cannot read a type's size");
  std::uint64_t nbytes = 0;
  if (cls == H5T_STRING && shape.empty() && variable == 0) {
    nbytes = type_size;
  } else if (cls == H5T_INTEGER && type_size == 1 && shape.size() == 1) {
    nbytes = shape[0];
  } else {
    throw Error(ErrorCode::format, w.file,
                fmt::format("dataset {} is a {}, expected a scalar fixed-length string", quote(name),
                            describe_type(type)));
  }
  if (nbytes > max_bytes || nbytes > file_size)
    throw Error(ErrorCode::format, w.file,
                fmt::format("dataset {} claims {} bytes, more than the limit of {} or the file size {}", quote(name),
                            nbytes, max_bytes, file_size));
  std::string text(nbytes, '\0');
  if (nbytes > 0)
    check_status(H5Dread(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data()), w,
                 "cannot read dataset " + quote(name));
  return text;  // NUL padding and all: the caller decides what a NUL means
}

// --- attributes ----------------------------------------------------------------------------

bool attribute_exists(Where w, const Handle& object, const std::string& name) {
  const auto lock = lock_library();
  const htri_t r = H5Aexists(object.get(), name.c_str());
  if (r < 0) raise(w, "cannot look up attribute " + quote(name));
  return r > 0;
}

void write_string_attribute(Where w, const Handle& object, const std::string& name, const std::string& value) {
  const auto lock = lock_library();
  Handle type = string_type(value.size(), w);
  Handle space(check(H5Screate(H5S_SCALAR), w, "cannot create a dataspace"));
  Handle attr(check(H5Acreate2(object.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), w,
                    "cannot create attribute " + quote(name)));
  std::string padded = value;
  if (padded.empty()) padded.push_back('\0');
  check_status(H5Awrite(attr.get(), type.get(), padded.data()), w, "cannot write attribute " + quote(name));
  close_object(w, attr);
}

void write_uint_array_attribute(Where w, const Handle& object, const std::string& name,
                                const std::vector<std::uint32_t>& values) {
  const auto lock = lock_library();
  const hsize_t n = values.size();
  Handle space(check(H5Screate_simple(1, &n, nullptr), w, "cannot create a dataspace"));
  Handle attr(check(H5Acreate2(object.get(), name.c_str(), H5T_STD_U32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), w,
                    "cannot create attribute " + quote(name)));
  check_status(H5Awrite(attr.get(), H5T_NATIVE_UINT32, values.data()), w, "cannot write attribute " + quote(name));
  close_object(w, attr);
}

namespace {

// An attribute of class `cls` (else format error naming `expected`), its type and its number of
// values; nullopt when there is none.
struct OpenAttribute {
  Handle attr, type;
  hssize_t points;
};
std::optional<OpenAttribute> open_attribute(Where w, const Handle& object, const std::string& name, H5T_class_t cls,
                                            const char* expected) {
  if (!attribute_exists(w, object, name)) return std::nullopt;
  Handle attr(check(H5Aopen(object.get(), name.c_str(), H5P_DEFAULT), w, "cannot open attribute " + quote(name)));
  Handle type(check(H5Aget_type(attr.get()), w, "cannot read attribute type"));
  if (check_class(H5Tget_class(type.get()), w) != cls)
    throw Error(ErrorCode::format, w.file,
                fmt::format("attribute {} is a {}, expected {}", quote(name), describe_type(type), expected));
  Handle space(check(H5Aget_space(attr.get()), w, "cannot read attribute dataspace"));
  const hssize_t points = H5Sget_simple_extent_npoints(space.get());
  if (points < 0) raise(w, "cannot read attribute dataspace");
  return OpenAttribute{std::move(attr), std::move(type), points};
}

}  // namespace

std::optional<std::string> read_string_attribute(Where w, const Handle& object, const std::string& name) {
  const auto lock = lock_library();
  auto opened = open_attribute(w, object, name, H5T_STRING, "a string");
  if (!opened) return std::nullopt;
  const Handle& attr = opened->attr;
  const Handle& type = opened->type;
  if (opened->points != 1) throw Error(ErrorCode::format, w.file, fmt::format("attribute {} is not a single string", quote(name)));
  const htri_t variable = H5Tis_variable_str(type.get());
  if (variable < 0) raise(w, "cannot read attribute type");
  if (variable > 0) {
    const H5T_cset_t cset = H5Tget_cset(type.get());
    if (cset == H5T_CSET_ERROR) raise(w, "cannot read attribute character set");
    Handle mem(check(H5Tcopy(H5T_C_S1), w, "cannot create a string type"));
    check_status(H5Tset_size(mem.get(), H5T_VARIABLE), w, "cannot size a string type");
    check_status(H5Tset_cset(mem.get(), cset), w, "cannot set a string type's character set");
    char* text = nullptr;
    check_status(H5Aread(attr.get(), mem.get(), &text), w, "cannot read attribute " + quote(name));
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  const std::size_t size = check_size(H5Tget_size(type.get()), w, "cannot read attribute type size");
  std::string value(size, '\0');
  check_status(H5Aread(attr.get(), type.get(), value.data()), w, "cannot read attribute " + quote(name));
  value.resize(std::strlen(value.c_str()));  // NUL padding
  return value;
}

std::optional<std::vector<std::int64_t>> read_int_array_attribute(Where w, const Handle& object,
                                                                  const std::string& name) {
  const auto lock = lock_library();
  auto opened = open_attribute(w, object, name, H5T_INTEGER, "integers");
  if (!opened) return std::nullopt;
  const hssize_t n = opened->points;
  if (n > 64) throw Error(ErrorCode::format, w.file, fmt::format("attribute {} has {} values", quote(name), n));
  std::vector<std::int64_t> values(static_cast<std::size_t>(n));
  check_status(H5Aread(opened->attr.get(), H5T_NATIVE_INT64, values.data()), w, "cannot read attribute " + quote(name));
  return values;
}

}  // namespace ckpt::detail::h5

#include "h5/zstd_filter.h"

namespace ckpt::detail::h5 {
void register_zstd_filter() {
  const auto lock = lock_library();
  init_library();
  static std::once_flag once;
  std::call_once(once, [] {
    if (H5Zregister(&kZstdFilterClass) < 0) raise({kNoFile}, "cannot register the zstd filter");
  });
}

#ifdef CKPT_WITH_MPI
// --- parallel files (MPI-IO) -----------------------------------------------------------------

Handle create_file_parallel(Where w, const std::string& path, MPI_Comm comm, MPI_Info info,
                            const ParallelSettings& settings) {
  const auto lock = lock_library();
  init_library();
  Handle fapl = property_list(H5P_FILE_ACCESS, w);
  check_status(H5Pset_fapl_mpio(fapl.get(), comm, info), w, "cannot use MPI-IO");
  if (settings.collective_metadata) {
    check_status(H5Pset_all_coll_metadata_ops(fapl.get(), true), w, "cannot make metadata reads collective");
    check_status(H5Pset_coll_metadata_write(fapl.get(), true), w, "cannot make metadata writes collective");
  }
  Handle fcpl = creation_properties(w, fapl, settings.alignment_threshold, settings.alignment);
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (id < 0) raise(w, "cannot create the file with MPI-IO", ErrorCode::io);
  return Handle(id);
}

void write_region(Where w, const Handle& dataset, const Handle& mem_type, const std::vector<std::uint64_t>& offsets,
                  const std::vector<std::uint64_t>& sizes, const void* data, bool collective, bool nothing) {
  const auto lock = lock_library();
  Handle dxpl = property_list(H5P_DATASET_XFER, w);
  check_status(H5Pset_dxpl_mpio(dxpl.get(), collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT), w,
               "cannot set the transfer mode");
  Handle file_space(check(H5Dget_space(dataset.get()), w, "cannot read dataspace"));
  Handle memory_space;
  if (nothing) {
    check_status(H5Sselect_none(file_space.get()), w, "cannot select nothing");
    memory_space = Handle(check(H5Scopy(file_space.get()), w, "cannot copy a dataspace"));
  } else if (sizes.empty()) {  // a scalar dataset: all of it
    memory_space = Handle(check(H5Scopy(file_space.get()), w, "cannot copy a dataspace"));
  } else {
    const auto start = to_hsize(offsets), count = to_hsize(sizes);
    check_status(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
                 w, "cannot select a block");
    memory_space = Handle(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), w,
                                "cannot create a dataspace"));
  }
  // MPI-IO reports a short write to HDF5 without its cause ("file write failed"); the failed
  // write(2) left it in errno.
  errno = 0;
  if (H5Dwrite(dataset.get(), mem_type.get(), memory_space.get(), file_space.get(), dxpl.get(), data) < 0) {
    const int error = errno;
    const bool known = error == ENOSPC || error == EFBIG || error == EDQUOT || error == EIO || error == EROFS;
    raise(w, known ? std::string("cannot write a block: ") + std::strerror(error) : "cannot write a block", ErrorCode::io);
  }
}
#endif

}  // namespace ckpt::detail::h5
