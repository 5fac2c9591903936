// ckpt's HDF5 file driver: HDF5 reads and writes through a descriptor that ckpt opened, never
// through a path of its own; or reads a file held in memory in place (HDF5's core driver through
// H5LTopen_file_image leaked its bookkeeping whenever the open failed, as on any corrupt image).
//
// Why not HDF5's sec2 driver (which opens the file by name):
// - A writer's file can be anonymous (O_TMPFILE: nothing is left behind when the process is
//   killed), and a reader reads the very file it checked, whatever happens to the path.
// - sec2 hands a failed write (a full disk, EFBIG under `ulimit -f`) back to HDF5, which then
//   cannot close the file: a failed flush at H5Fclose leaves objects registered that were freed,
//   and the process crashes in H5_term_library at exit (HDF5 1.10). Here a failed write is
//   recorded in the WriteStatus and reported to HDF5 as done; later writes are skipped. HDF5 stays
//   consistent and closes cleanly, and the writer, which checks the status after every step and
//   before its commit, fails with the recorded error and discards the file.
// - HDF5's advisory flock() would make a reader of a complete file fail with "unable to lock file"
//   while a writer (or another tool) holds it; ckpt never writes a file in place (writes go to a
//   temporary that is renamed over the old file), so the lock has nothing to protect.
#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <span>

#include "h5/h5.h"

namespace ckpt::detail::h5 {
namespace {

struct DriverInfo {
  int fd = -1;                    // borrowed; the driver works on its own dup
  WriteStatus* status = nullptr;  // null for files opened to read
  const std::byte* image = nullptr;  // or a file held in memory (fd -1), read in place
  std::size_t image_size = 0;
};

struct FdFile {
  H5FD_t pub;  // first: HDF5 casts between the two
  int fd;
  WriteStatus* status;
  const std::byte* image;
  std::size_t image_size;
  haddr_t eoa;
  haddr_t eof;
  dev_t device;
  ino_t inode;
};

constexpr haddr_t kMaxAddr = (static_cast<haddr_t>(1) << 62) - 1;

FdFile* file_of(H5FD_t* f) { return reinterpret_cast<FdFile*>(f); }
const FdFile* file_of(const H5FD_t* f) { return reinterpret_cast<const FdFile*>(f); }

void* info_copy(const void* info) { return new DriverInfo(*static_cast<const DriverInfo*>(info)); }
herr_t info_free(void* info) {
  delete static_cast<DriverInfo*>(info);
  return 0;
}
void* info_get(H5FD_t* f) {
  const FdFile* file = file_of(f);
  return new DriverInfo{file->fd, file->status, file->image, file->image_size};
}

H5FD_t* fd_open(const char* /*name*/, unsigned flags, hid_t fapl, haddr_t maxaddr) {
  const auto* info = static_cast<const DriverInfo*>(H5Pget_driver_info(fapl));
  if (info == nullptr || maxaddr == 0 || maxaddr > kMaxAddr) return nullptr;
  if (info->image != nullptr) {  // memory: read only, in place
    if ((flags & (H5F_ACC_RDWR | H5F_ACC_TRUNC | H5F_ACC_CREAT)) != 0) return nullptr;
    auto* file = new FdFile{};
    file->fd = -1;
    file->image = info->image;
    file->image_size = info->image_size;
    file->eof = info->image_size;
    return &file->pub;
  }
  if (info->fd < 0) return nullptr;
  const int fd = ::fcntl(info->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || ((flags & H5F_ACC_TRUNC) != 0 && ::ftruncate(fd, 0) != 0)) {
    ::close(fd);
    return nullptr;
  }
  auto* file = new FdFile{};
  file->fd = fd;
  file->status = info->status;
  file->eof = (flags & H5F_ACC_TRUNC) != 0 ? 0 : static_cast<haddr_t>(st.st_size);
  file->device = st.st_dev;
  file->inode = st.st_ino;
  return &file->pub;
}

herr_t fd_close(H5FD_t* f) {
  FdFile* file = file_of(f);
  if (file->fd >= 0 && ::close(file->fd) != 0 && file->status != nullptr) file->status->record(errno, "close");
  delete file;
  return 0;
}

int fd_cmp(const H5FD_t* a, const H5FD_t* b) {
  const FdFile* x = file_of(a);
  const FdFile* y = file_of(b);
  if (x->image != y->image) return x->image < y->image ? -1 : 1;
  if (x->device != y->device) return x->device < y->device ? -1 : 1;
  if (x->inode != y->inode) return x->inode < y->inode ? -1 : 1;
  return 0;
}

herr_t fd_query(const H5FD_t* /*f*/, unsigned long* flags) {
  // What sec2 allows: metadata and small raw data gathered into larger blocks and writes. Not
  // H5FD_FEAT_POSIX_COMPAT_HANDLE: with it HDF5 would stat the file's name (which here only
  // labels messages) to resolve symbolic links.
  *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
           H5FD_FEAT_AGGREGATE_SMALLDATA;
  return 0;
}

haddr_t fd_get_eoa(const H5FD_t* f, H5FD_mem_t) { return file_of(f)->eoa; }
herr_t fd_set_eoa(H5FD_t* f, H5FD_mem_t, haddr_t addr) {
  file_of(f)->eoa = addr;
  return 0;
}
haddr_t fd_get_eof(const H5FD_t* f, H5FD_mem_t) { return file_of(f)->eof; }

herr_t fd_get_handle(H5FD_t* f, hid_t, void** handle) {
  *handle = &file_of(f)->fd;
  return 0;
}

herr_t fd_read(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, std::size_t size, void* buffer) {
  FdFile* file = file_of(f);
  if (addr > kMaxAddr || size > kMaxAddr - addr) return -1;
  auto* out = static_cast<unsigned char*>(buffer);
  if (file->image != nullptr) {
    const std::size_t have = addr < file->image_size ? std::min<std::size_t>(size, file->image_size - addr) : 0;
    if (have > 0) std::memcpy(out, file->image + addr, have);
    if (have < size) std::memset(out + have, 0, size - have);  // past the end: zeros
    return 0;
  }
  while (size > 0) {
    const ssize_t n = ::pread(file->fd, out, std::min<std::size_t>(size, 1u << 30), static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) {  // past the end of the file: zeros, as sec2 gives
      std::memset(out, 0, size);
      break;
    }
    out += n;
    addr += static_cast<haddr_t>(n);
    size -= static_cast<std::size_t>(n);
  }
  return 0;
}

herr_t fd_write(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, std::size_t size, const void* buffer) {
  FdFile* file = file_of(f);
  if (addr > kMaxAddr || size > kMaxAddr - addr) return -1;
  const haddr_t end = addr + size;
  if (file->status == nullptr) return -1;  // opened to read
  if (!file->status->failed()) {
    const auto* in = static_cast<const unsigned char*>(buffer);
    haddr_t at = addr;
    std::size_t left = size;
    while (left > 0) {
      const ssize_t n = ::pwrite(file->fd, in, std::min<std::size_t>(left, 1u << 30), static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        file->status->record(n < 0 ? errno : ENOSPC, "write");
        break;
      }
      in += n;
      at += static_cast<haddr_t>(n);
      left -= static_cast<std::size_t>(n);
    }
  }
  if (end > file->eof) file->eof = end;
  return 0;
}

herr_t fd_truncate(H5FD_t* f, hid_t, hbool_t) {
  FdFile* file = file_of(f);
  if (file->eoa == file->eof) return 0;
  if (file->status == nullptr) return -1;
  if (!file->status->failed() && ::ftruncate(file->fd, static_cast<off_t>(file->eoa)) != 0)
    file->status->record(errno, "truncate");
  file->eof = file->eoa;
  return 0;
}

herr_t fd_lock(H5FD_t*, hbool_t) { return 0; }
herr_t fd_unlock(H5FD_t*) { return 0; }

const H5FD_class_t kDriverClass = {
    "ckpt_fd",          // name
    kMaxAddr,           // maxaddr
    H5F_CLOSE_WEAK,     // fc_degree
    nullptr,            // terminate
    nullptr,            // sb_size
    nullptr,            // sb_encode
    nullptr,            // sb_decode
    sizeof(DriverInfo), // fapl_size
    info_get,           // fapl_get
    info_copy,          // fapl_copy
    info_free,          // fapl_free
    0,                  // dxpl_size
    nullptr,            // dxpl_copy
    nullptr,            // dxpl_free
    fd_open,            // open
    fd_close,           // close
    fd_cmp,             // cmp
    fd_query,           // query
    nullptr,            // get_type_map
    nullptr,            // alloc
    nullptr,            // free
    fd_get_eoa,         // get_eoa
    fd_set_eoa,         // set_eoa
    fd_get_eof,         // get_eof
    fd_get_handle,      // get_handle
    fd_read,            // read
    fd_write,           // write
    nullptr,            // flush
    fd_truncate,        // truncate
    fd_lock,            // lock
    fd_unlock,          // unlock
    H5FD_FLMAP_DICHOTOMY,
};

}  // namespace

void WriteStatus::record(int error, const char* what) noexcept {
  const std::lock_guard lock(mutex_);
  if (error_ != 0) return;
  error_ = error == 0 ? EIO : error;
  what_ = what;
  failed_.store(true, std::memory_order_release);
}

std::string WriteStatus::message() const {
  const std::lock_guard lock(mutex_);
  if (error_ == 0) return {};
  return std::string(what_) + " failed: " + std::strerror(error_);
}

// Called with the library lock held (h5.cpp).
hid_t fd_driver_access_list(int fd, WriteStatus* status, std::span<const std::byte> image) {
  static const hid_t driver = H5FDregister(&kDriverClass);
  if (driver < 0) return -1;
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return -1;
  const DriverInfo info{fd, status, image.empty() ? nullptr : image.data(), image.size()};
  if (H5Pset_driver(fapl, driver, &info) < 0) {
    H5Pclose(fapl);
    return -1;
  }
  return fapl;
}

}  // namespace ckpt::detail::h5
