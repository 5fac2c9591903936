// ckpt::mpi (include/ckpt/mpi.h): one ckpt-h5 file written by the ranks of an MPI job through
// parallel HDF5, and read back on any number of ranks.
//
// save(), in phases; after each, every rank learns whether any rank failed (agree()) and then all
// throw the first failing rank's error together, so no rank is ever left waiting in a collective
// call of a phase the others have left:
//   1. each rank checks its own blocks and describes them (JSON); rank 0 gathers the descriptions,
//      merges them into one plan (tensor order: rank 0's, then what later ranks add), checks that
//      the ranks agree and that the blocks tile every tensor, and broadcasts the plan (tensors
//      only: no rank but 0 ever holds another rank's blocks);
//   2. rank 0 makes the temporary file beside the target (util/atomic_file.h: named, locked);
//   3. every rank opens it with MPI-IO and creates the groups and datasets collectively;
//   4. every rank writes its blocks from where they are in its memory, hashing each;
//   5. rank 0 gathers the hashes, builds the index, and broadcasts it; all write it collectively
//      and close the file;
//   6. rank 0 reopens the file, reads the index back, then fsyncs and renames it into place.
#include "ckpt/mpi.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ckpt/ckpt_h5.h"
#include "ckpt/version.h"
#include "ckpt_h5/index.h"
#include "ckpt_h5/schema.h"
#include "core/blocks.h"
#include "core/byte_source.h"
#include "core/format_reader.h"
#include "core/keys.h"
#include "h5/h5.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt::mpi {
namespace {

using detail::fail;
using detail::quote;
using json = nlohmann::ordered_json;
namespace h5 = detail::h5;
namespace schema = detail::ckpt_h5;

int rank_of(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  return rank;
}

int size_of(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  return size;
}

// --- moving bytes between ranks ----------------------------------------------------------------

// MPI counts are ints: `fn(offset, count)` for the pieces of `n` bytes.
template <typename Fn>
void in_pieces(unsigned long long n, Fn&& fn) {
  for (unsigned long long done = 0; done < n;) {
    const int part = static_cast<int>(std::min<unsigned long long>(n - done, INT_MAX / 2));
    fn(done, part);
    done += part;
  }
}

void broadcast(MPI_Comm comm, std::string& text, int root = 0) {
  unsigned long long n = text.size();
  MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm);
  text.resize(n);
  in_pieces(n, [&](unsigned long long at, int part) { MPI_Bcast(text.data() + at, part, MPI_CHAR, root, comm); });
}

// Every rank's `text`, on rank 0 (empty elsewhere).
std::vector<std::string> gather(MPI_Comm comm, const std::string& text) {
  const int size = size_of(comm), rank = rank_of(comm);
  unsigned long long n = text.size();
  std::vector<unsigned long long> sizes(rank == 0 ? size : 0);
  MPI_Gather(&n, 1, MPI_UNSIGNED_LONG_LONG, sizes.data(), 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
  if (rank != 0) {
    in_pieces(n, [&](unsigned long long at, int part) { MPI_Send(text.data() + at, part, MPI_CHAR, 0, 0, comm); });
    return {};
  }
  std::vector<std::string> out(size);
  out[0] = text;
  for (int r = 1; r < size; ++r) {
    out[r].resize(sizes[r]);
    in_pieces(sizes[r], [&](unsigned long long at, int part) {
      MPI_Recv(out[r].data() + at, part, MPI_CHAR, r, 0, comm, MPI_STATUS_IGNORE);
    });
  }
  return out;
}

// --- agreeing on failure ---------------------------------------------------------------------

// Runs `step` on this rank, then learns whether any rank failed; if one did, every rank throws
// the error of the lowest failing rank, prefixed "rank R: ". Collective.
template <typename Fn>
void agree(MPI_Comm comm, const std::string& file, Fn&& step, bool name_rank = true) {
  int failed = 0;
  ErrorCode code = ErrorCode::io;
  std::string message;
  try {
    step();
  } catch (const Error& e) {
    failed = 1, code = e.code(), message = e.message();
  } catch (const std::bad_alloc&) {
    failed = 1, message = "out of memory";
  } catch (const std::exception& e) {
    failed = 1, message = e.what();
  } catch (...) {
    failed = 1, message = "an exception that is not a std::exception";
  }
  const int rank = rank_of(comm);
  int mine = failed ? rank : INT_MAX, first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == INT_MAX) return;
  int code_number = static_cast<int>(code);
  MPI_Bcast(&code_number, 1, MPI_INT, first, comm);
  broadcast(comm, message, first);
  // Rank 0's checks of all ranks' descriptions name the ranks themselves.
  if (name_rank && size_of(comm) > 1) message = fmt::format("rank {}: {}", first, message);
  throw Error(static_cast<ErrorCode>(code_number), file, message);
}

// --- describing tensors ----------------------------------------------------------------------

json describe_info(const TensorInfo& info) {
  json t = {{"name", info.name}, {"section", std::string(info.section_name())}, {"dtype", dtype_name(info.dtype)},
            {"shape", info.shape}};
  if (info.role == Role::buffer) t["collection"] = info.collection, t["persistent"] = info.persistent;
  return t;
}

TensorInfo info_from(const json& t) {
  TensorInfo info;
  info.name = t.at("name").get<std::string>();
  const std::string section = t.at("section").get<std::string>();
  if (section == kParametersSection) {
    info.role = Role::parameter;
  } else if (section == kBuffersSection) {
    info.role = Role::buffer;
    info.collection = t.at("collection").get<std::string>();
    info.persistent = t.at("persistent").get<bool>();
  } else {
    info.role = Role::extra;
    info.section = section;
  }
  info.dtype = *dtype_from_name(t.at("dtype").get<std::string>());
  info.shape = t.at("shape").get<Shape>();
  return info;
}

// Parameters and buffers share one namespace (a name is one or the other); extra sections each
// have their own.
std::string key_of(const TensorInfo& info) {
  return detail::entry_key(info.role == Role::extra ? std::string_view(info.section) : std::string_view(), info.name);
}

// This rank's tensors checked on their own: names, shapes, blocks inside their tensors and
// holding data of the block's shape and the tensor's dtype.
void check_local(const LocalShards& local) {
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < local.tensors.size(); ++i) {
    const auto& t = local.tensors[i];
    const TensorInfo& info = t.info;
    if (info.role == Role::extra && (info.section.empty() || info.section == kParametersSection ||
                                     info.section == kBuffersSection))
      fail(ErrorCode::invalid_argument, "", "tensor {}: an extra section needs a name of its own", quote(info.name));
    if (!seen.emplace(key_of(info), i).second)
      fail(ErrorCode::invalid_argument, "", "tensor {} is listed twice", quote(info.name));
    for (auto d : info.shape)
      if (d < 0) fail(ErrorCode::invalid_argument, "", "tensor {}: negative dimension in {}", quote(info.name), shape_to_string(info.shape));
    (void)shape_nbytes(info.dtype, info.shape);  // overflow
    for (const auto& b : t.blocks) {
      const detail::Box box{b.box.offsets, b.box.sizes};
      if (!detail::box_inside(box, info.shape))
        fail(ErrorCode::invalid_argument, "", "tensor {}: block {} is not inside its shape {}", quote(info.name),
             detail::box_to_string(box), shape_to_string(info.shape));
      if (b.data.dtype() != info.dtype)
        fail(ErrorCode::invalid_argument, "", "tensor {}: block {} holds {}, the tensor is {}", quote(info.name),
             detail::box_to_string(box), dtype_name(b.data.dtype()), dtype_name(info.dtype));
      const Shape want(b.box.sizes.begin(), b.box.sizes.end());
      if (b.data.shape() != want)
        fail(ErrorCode::invalid_argument, "", "tensor {}: block {} holds data of shape {}, expected {}", quote(info.name),
             detail::box_to_string(box), shape_to_string(b.data.shape()), shape_to_string(want));
    }
  }
}

// What every rank must pass alike: a rank with other options would take other collective steps
// (and hang the others) or write another index.
json describe_options(const std::filesystem::path& path, const ParallelOptions& o) {
  return {{"path", path.string()},
          {"overwrite", o.overwrite},
          {"checksums", o.checksums},
          {"collective_io", o.collective_io},
          {"collective_metadata", o.collective_metadata},
          {"alignment", o.alignment},
          {"alignment_threshold", o.alignment_threshold},
          {"hints", o.hints}};
}

std::string describe_local(const std::filesystem::path& path, const LocalShards& local, const ParallelOptions& options) {
  json out = json::array();
  for (const auto& t : local.tensors) {
    json d = describe_info(t.info);
    json blocks = json::array();
    for (const auto& b : t.blocks) blocks.push_back({b.box.offsets, b.box.sizes});
    d["blocks"] = std::move(blocks);
    out.push_back(std::move(d));
  }
  return json{{"options", describe_options(path, options)}, {"tensors", std::move(out)}}.dump();
}

// One tensor of the merged plan.
struct Planned {
  TensorInfo info;
  int first_rank = 0;           // the rank that described it first
  std::uint64_t rounds = 0;     // most blocks any one rank holds (collective transfers)
  std::uint64_t blocks = 0;     // blocks of all ranks
};

std::string_view collection_of(const TensorInfo& info) {
  return info.collection.empty() ? kDefaultBufferCollection : std::string_view(info.collection);
}

bool same_role(const TensorInfo& a, const TensorInfo& b) {
  return a.role == b.role && a.section == b.section &&
         (a.role != Role::buffer || (collection_of(a) == collection_of(b) && a.persistent == b.persistent));
}

std::string role_text(const TensorInfo& info) {
  if (info.role == Role::buffer)
    return fmt::format("buffer ({}{})", collection_of(info), info.persistent ? "" : ", not persistent");
  if (info.role == Role::extra) return "section " + quote(info.section);
  return "parameter";
}

// Rank 0: every rank's description merged and checked. Throws naming tensor and ranks.
std::vector<Planned> merge(const std::vector<std::string>& descriptions) {
  std::vector<Planned> plan;
  std::map<std::string, std::size_t> by_key;
  struct Owned {
    std::vector<detail::Box> boxes;
    std::vector<int> ranks;
  };
  std::vector<Owned> owned;
  json options0;
  for (int r = 0; r < static_cast<int>(descriptions.size()); ++r) {
    const json description = json::parse(descriptions[r]);
    const json& options = description.at("options");
    if (r == 0) options0 = options;
    for (const auto& [key, value] : options0.items())
      if (options.at(key) != value)
        fail(ErrorCode::invalid_argument, "", "the ranks must save alike: rank 0 has {} {}, rank {} has {}",
             key == "path" ? "path" : "ParallelOptions::" + key, value.dump(), r, options.at(key).dump());
    for (const auto& d : description.at("tensors")) {
      const TensorInfo info = info_from(d);
      const std::string key = key_of(info);
      auto [it, fresh] = by_key.emplace(key, plan.size());
      if (fresh) {
        plan.push_back({info, r, 0, 0});
        owned.emplace_back();
      }
      Planned& p = plan[it->second];
      if (p.info.dtype != info.dtype || p.info.shape != info.shape)
        fail(ErrorCode::invalid_argument, "", "tensor {}: rank {} has {} {}, rank {} has {} {}", quote(info.name),
             p.first_rank, dtype_name(p.info.dtype), shape_to_string(p.info.shape), r, dtype_name(info.dtype),
             shape_to_string(info.shape));
      if (!same_role(p.info, info))
        fail(ErrorCode::invalid_argument, "", "tensor {}: rank {} has it as a {}, rank {} as a {}", quote(info.name),
             p.first_rank, role_text(p.info), r, role_text(info));
      const auto& blocks = d.at("blocks");
      p.rounds = std::max<std::uint64_t>(p.rounds, blocks.size());
      p.blocks += blocks.size();
      for (const auto& b : blocks) {
        owned[it->second].boxes.push_back({b.at(0).get<std::vector<std::uint64_t>>(), b.at(1).get<std::vector<std::uint64_t>>()});
        owned[it->second].ranks.push_back(r);
      }
    }
  }
  // The reader's bound on overlap checks, for the whole file: a file ckpt writes, it reads.
  std::uint64_t budget = detail::kOverlapBudget;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const TensorInfo& info = plan[i].info;
    const auto& o = owned[i];
    bool exhausted = false;
    if (const auto pair = detail::find_overlap(o.boxes, budget, exhausted))
      fail(ErrorCode::invalid_argument, "", "tensor {}: block {} of rank {} overlaps block {} of rank {}", quote(info.name),
           detail::box_to_string(o.boxes[pair->first]), o.ranks[pair->first], detail::box_to_string(o.boxes[pair->second]),
           o.ranks[pair->second]);
    if (exhausted)
      fail(ErrorCode::invalid_argument, "", "tensor {}: too many blocks in too irregular a layout to check for overlaps "
           "(readers give up past {} comparisons per file)", quote(info.name), detail::kOverlapBudget);
    std::uint64_t covered = 0;
    for (const auto& b : o.boxes) covered += *detail::box_volume(b);
    const std::uint64_t numel = shape_numel(info.shape);
    if (covered != numel) {
      // The ranks that gave no block of it are the likely culprits: named (the first ten).
      const std::set<int> holding(o.ranks.begin(), o.ranks.end());
      std::vector<int> without;
      for (int r = 0; r < static_cast<int>(descriptions.size()); ++r)
        if (!holding.count(r)) without.push_back(r);
      std::string none;
      for (std::size_t k = 0; k < without.size() && k < 10; ++k) none += (k ? ", " : "") + std::to_string(without[k]);
      if (without.size() > 10) none += fmt::format(" and {} more", without.size() - 10);
      fail(ErrorCode::invalid_argument, "", "tensor {} {}: the ranks' blocks cover {} of its {} elements{}", quote(info.name),
           shape_to_string(info.shape), covered, numel,
           without.empty() ? std::string() : fmt::format(" (no block from rank{} {})", without.size() > 1 ? "s" : "", none));
    }
  }
  return plan;
}

std::string plan_text(const std::vector<Planned>& plan) {
  json out = json::array();
  for (const auto& p : plan) {
    json d = describe_info(p.info);
    d["rounds"] = p.rounds;
    d["blocks"] = p.blocks;
    out.push_back(std::move(d));
  }
  return out.dump();
}

std::vector<Planned> plan_from(const std::string& text) {
  std::vector<Planned> plan;
  for (const auto& d : json::parse(text)) plan.push_back({info_from(d), 0, d.at("rounds").get<std::uint64_t>(), d.at("blocks").get<std::uint64_t>()});
  return plan;
}

// --- the file --------------------------------------------------------------------------------

struct MpiInfo {
  MPI_Info info = MPI_INFO_NULL;
  explicit MpiInfo(const std::vector<std::pair<std::string, std::string>>& hints) {
    if (hints.empty()) return;
    MPI_Info_create(&info);
    for (const auto& [k, v] : hints) MPI_Info_set(info, k.c_str(), v.c_str());
  }
  ~MpiInfo() {
    if (info != MPI_INFO_NULL) MPI_Info_free(&info);
  }
  MpiInfo(const MpiInfo&) = delete;
  MpiInfo& operator=(const MpiInfo&) = delete;
};

// The objects of the file being written, closed groups first and the file last on every rank
// alike, whether the save succeeds (close_all, checked) or every rank throws at the same phase
// (the members are declared in creation order, so they are destroyed in reverse).
struct OpenFile {
  h5::Handle file;
  h5::Handle sections;
  std::map<std::string, h5::Handle> groups;

  void close_all(const h5::Where& w) {
    for (auto& [name, g] : groups) h5::close_object(w, g);
    groups.clear();
    if (sections.valid()) h5::close_object(w, sections);
    h5::close_file(w, file);
  }
};

const h5::Handle& group_for(OpenFile& f, const h5::Where& w, const TensorInfo& info) {
  const std::string section(info.section_name());
  if (auto it = f.groups.find(section); it != f.groups.end()) return it->second;
  if (!f.sections.valid()) f.sections = h5::create_group(w, f.file, schema::kSectionsGroup);
  return f.groups.emplace(section, h5::create_group(w, f.sections, schema::encode_link_name(section))).first->second;
}

// Why a write may have failed, when MPI-IO did not say (it reports a short write to HDF5 without
// its errno): the file size limit below the data's end, or less free space than the data needs.
std::string diagnose(const std::string& temp, std::uint64_t end, std::uint64_t bytes) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && end > limit.rlim_cur)
    return fmt::format("File too large (the file size limit, ulimit -f, is {} bytes)", limit.rlim_cur);
  struct statvfs fs {};
  const auto dir = std::filesystem::path(temp).parent_path();
  if (::statvfs(dir.empty() ? "." : dir.c_str(), &fs) == 0 &&
      static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize < bytes)
    return fmt::format("No space left on device ({} bytes free, {} to write)",
                       static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize, bytes);
  return {};
}

// An upper bound of the file's size: the data, each dataset's header, link and alignment padding
// (2 KiB and two alignments; measured: 870-950 bytes per tensor for 2,000 and 20,000 tensors), the
// index (the plan's text plus each block's entry), and 4 MiB for HDF5's own structures.
std::uint64_t estimate_size(const std::vector<Planned>& plan, std::size_t plan_bytes, std::uint64_t alignment) {
  std::uint64_t total = (4u << 20) + 4 * static_cast<std::uint64_t>(plan_bytes);
  for (const auto& p : plan) {
    const std::uint64_t data = p.info.nbytes();
    total += (data + alignment - 1) / alignment * alignment + 2 * alignment + 2048 + 160 * p.blocks;
  }
  return total;
}

struct Written {
  std::size_t tensor;
  detail::Box box;
  std::uint64_t xxh3;
};

}  // namespace

void save(MPI_Comm comm, const std::filesystem::path& path, const LocalShards& local, const ParallelOptions& options) {
  const std::string name = path.string();
  const h5::Where w{name};
  const int rank = rank_of(comm);
  detail::ignore_file_size_limit_signal();
  h5::register_zstd_filter();

  // 1. The plan.
  std::string description;
  agree(comm, name, [&] {
    if (options.alignment == 0) fail(ErrorCode::invalid_argument, "", "alignment must be positive");
    check_local(local);
    description = describe_local(path, local, options);
  });
  const std::vector<std::string> all = gather(comm, description);
  std::string plan_json;
  agree(
      comm, name, [&] {
        if (rank == 0) plan_json = plan_text(merge(all));
      },
      false);
  broadcast(comm, plan_json);
  const std::vector<Planned> plan = plan_from(plan_json);
  bool blocked = false;  // any tensor in more than one block: version 1.1
  for (const auto& p : plan) blocked = blocked || p.blocks > 1;

  // 2. Room for the file, before anything is written: a write that fails inside HDF5's parallel
  // I/O leaves the ranks' HDF5 states apart, and closing the file could then hang (HDF5 1.10
  // cannot abandon a file). Each rank's file size limit must allow the file; rank 0 makes the
  // temporary (an existing target is refused here unless overwrite) and reserves its blocks
  // (fallocate, the size unchanged), so a full disk is found now.
  const std::uint64_t room = estimate_size(plan, plan_json.size(), options.alignment);
  agree(comm, name, [&] {
    rlimit limit{};
    if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < room)
      fail(ErrorCode::io, name, "File too large: the file size limit (ulimit -f) is {} bytes, the checkpoint may take {}",
           limit.rlim_cur, room);
  });
  std::unique_ptr<detail::AtomicFile> target;
  std::string temp;
  agree(comm, name, [&] {
    if (rank != 0) return;
    target = std::make_unique<detail::AtomicFile>(path, options.overwrite, detail::AtomicFile::Naming::named);
    temp = target->temp_path().string();
    if (::fallocate(target->fd(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(room)) != 0 &&
        (errno == ENOSPC || errno == EDQUOT || errno == EFBIG))
      fail(ErrorCode::io, name, "{}: the checkpoint may take {} bytes", std::strerror(errno), room);
  });
  broadcast(comm, temp);

  // 3. The file, and for each tensor: its dataset created (collectively), this rank's blocks
  // written from where they are and hashed, the dataset closed. A rank whose write fails goes on
  // taking part in every collective step, writing nothing, and reports after the last.
  OpenFile f;
  const MpiInfo hints(options.hints);
  agree(comm, name, [&] {
    f.file = h5::create_file_parallel(w, temp, comm, hints.info,
                                      {options.alignment, options.alignment_threshold, options.collective_metadata});
    h5::write_string_attribute(w, f.file, schema::kFormatAttribute, schema::kFormatName);
    h5::write_uint_array_attribute(w, f.file, schema::kVersionAttribute,
                                   {kCkptH5VersionMajor, blocked ? 1u : kCkptH5VersionMinor});
    h5::write_string_attribute(w, f.file, schema::kWriterAttribute, "ckpt " CKPT_VERSION " (MPI)");
    f.groups.emplace(std::string(kParametersSection), h5::create_group(w, f.file, std::string(kParametersSection)));
    f.groups.emplace(std::string(kBuffersSection), h5::create_group(w, f.file, std::string(kBuffersSection)));
  });
  std::map<std::string, const ShardedTensor*> mine;
  for (const auto& t : local.tensors) mine.emplace(key_of(t.info), &t);
  std::vector<Written> written;
  std::optional<Error> failed;  // this rank's first failed write
  agree(comm, name, [&] {
    const std::vector<Block> none;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const TensorInfo& info = plan[i].info;
      const h5::Handle& group = group_for(f, w, info);
      h5::DatasetLayout layout;  // contiguous, allocated at creation (MPI-IO's rule), never filled
      layout.allocate_early = true;
      h5::Handle type = schema::file_type(info.dtype);
      h5::Handle dataset = h5::create_dataset(w, group, schema::encode_link_name(info.name), type,
                                              {info.shape.begin(), info.shape.end()}, layout);
      if (schema::stored_as_raw_bytes(info.dtype))
        h5::write_string_attribute(w, dataset, schema::kDtypeAttribute, std::string(dtype_name(info.dtype)));
      const auto it = mine.find(key_of(info));
      const auto& blocks = it == mine.end() ? none : it->second->blocks;
      for (const auto& b : blocks)
        written.push_back({i, {b.box.offsets, b.box.sizes}, options.checksums ? detail::xxh3_64(b.data.bytes()) : 0});
      // An empty tensor has nothing to write (its storage is never allocated).
      const std::uint64_t rounds = info.nbytes() == 0 ? 0 : options.collective_io ? plan[i].rounds : blocks.size();
      for (std::uint64_t round = 0; round < rounds; ++round) {
        const bool has = !failed && round < blocks.size() && blocks[round].data.nbytes() > 0;
        if (!has && !options.collective_io) continue;
        try {
          // Collective: every rank takes part in every round (nothing to write: an empty selection).
          h5::write_region(w, dataset, type, has ? blocks[round].box.offsets : std::vector<std::uint64_t>{},
                           has ? blocks[round].box.sizes : std::vector<std::uint64_t>{},
                           has ? blocks[round].data.bytes().data() : nullptr, options.collective_io, !has);
        } catch (const Error& e) {
          std::string message = e.message();
          if (message.find("File too large") == std::string::npos && message.find("No space left") == std::string::npos) {
            const auto offset = h5::contiguous_offset(dataset);
            const std::string why = diagnose(temp, offset.value_or(0) + info.nbytes(), blocks[round].data.nbytes());
            if (!why.empty()) message += ": " + why;
          }
          failed.emplace(e.code(), name, fmt::format("tensor {}: {}", quote(info.name), message));
        }
      }
      h5::close_object(w, dataset);
    }
    if (failed) throw *failed;
  });

  // 5. The index: the hashes gathered on rank 0, the text broadcast and written by every rank.
  json hashes = json::array();
  for (const auto& x : written) hashes.push_back({x.tensor, x.box.offsets, x.box.sizes, x.xxh3});
  const std::vector<std::string> all_hashes = gather(comm, hashes.dump());
  std::string index_text;
  agree(comm, name, [&] {
    if (rank != 0) return;
    std::vector<std::vector<detail::BlockChecksum>> per(plan.size());
    for (const auto& text : all_hashes)
      for (const auto& x : json::parse(text))
        per[x.at(0).get<std::size_t>()].push_back(
            {{x.at(1).get<std::vector<std::uint64_t>>(), x.at(2).get<std::vector<std::uint64_t>>()}, x.at(3).get<std::uint64_t>()});
    schema::IndexWriter index;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      auto& blocks = per[i];
      std::sort(blocks.begin(), blocks.end(), [](const auto& a, const auto& b) { return a.box.offsets < b.box.offsets; });
      if (!options.checksums) index.add(plan[i].info, std::nullopt);
      // One block is the whole tensor (they tile it): its checksum is the tensor's (1.0).
      else if (blocks.size() == 1) index.add(plan[i].info, blocks[0].xxh3);
      else if (blocks.empty()) index.add(plan[i].info, detail::xxh3_64({}));  // an empty tensor
      else index.add(plan[i].info, std::nullopt, blocks);
    }
    index_text = index.finish(local.metadata);
  });
  broadcast(comm, index_text);
  agree(comm, name, [&] {
    h5::write_string_dataset(w, f.file, schema::kIndexDataset, index_text);
    f.close_all(w);
  });

  // 6. Rank 0 checks the file reads back, then puts it in place.
  agree(comm, name, [&] {
    if (rank != 0) return;
    // The blocks reserved past the file's end are given back.
    struct stat st {};
    if (::fstat(target->fd(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) < room)
      (void)::fallocate(target->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size,
                        static_cast<off_t>(room - st.st_size));
    try {
      const h5::Handle again = h5::open_file_readonly(w, target->fd());
      const std::string read = h5::read_string_dataset(w, again, schema::kIndexDataset, index_text.size() + 1,
                                                        std::numeric_limits<std::uint64_t>::max());
      if (read != index_text) fail(ErrorCode::io, name, "the index read back differs from the one written");
    } catch (const Error& e) {
      throw Error(ErrorCode::io, name, "the written file does not read back: " + e.message());
    }
    target->commit();
  });
}

LocalShards load(MPI_Comm comm, const std::filesystem::path& path, const WantFn& want, const ReadOptions& options) {
  const std::string name = path.string();
  const int rank = rank_of(comm);
  // Rank 0 opens the file first and has the HDF5 structure of all of it checked in the isolation
  // helper; the other ranks skip that check for the very same file (device, inode, size,
  // modification and change times), not for another one put at the path or written meanwhile.
  auto identity = [](const detail::ByteSource& source) {
    struct stat st {};
    if (::fstat(source.fd(), &st) != 0) return std::string();
    // The change time too: a file rewritten in place may keep its size and get its old
    // modification time back (rsync --inplace -t), but no one can set the change time.
    return fmt::format("{}:{}:{}:{}.{}:{}.{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                       st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
  };
  std::unique_ptr<Reader> reader;
  std::string checked;
  agree(comm, name, [&] {
    if (rank != 0) return;
    auto source = detail::ByteSource::open_file(detail::checkpoint_file(path));
    checked = identity(*source);
    reader = detail::open_source(std::move(source), options);
    reader->expect_full_read();
  });
  broadcast(comm, checked);
  LocalShards out;
  agree(comm, name, [&] {
    if (rank != 0) {
      auto source = detail::ByteSource::open_file(detail::checkpoint_file(path));
      ReadOptions mine = options;
      if (!checked.empty() && identity(*source) == checked) mine.isolate_hdf5 = false;
      reader = detail::open_source(std::move(source), mine);
    }
    const auto& infos = reader->tensors();
    for (std::size_t i = 0; i < infos.size(); ++i) {
      const std::vector<Box> boxes = want(infos[i]);
      if (boxes.empty()) continue;
      ShardedTensor t{infos[i], {}};
      for (const auto& box : boxes) t.blocks.push_back({box, reader->read_slice(i, box.offsets, box.sizes)});
      out.tensors.push_back(std::move(t));
    }
    out.metadata = reader->metadata();
    // Roles the reader inferred (a distributed checkpoint's) stay inferred through mpi::save.
    if (reader->role_source() == RoleSource::heuristic && out.metadata.is_object())
      out.metadata[std::string(kRoleSourceKey)] = "heuristic";
  });
  return out;
}

std::pair<std::uint64_t, std::uint64_t> even_range(std::uint64_t extent, int part, int parts) {
  if (parts <= 0 || part < 0 || part >= parts)
    fail(ErrorCode::invalid_argument, "", "part {} of {} does not exist", part, parts);
  const std::uint64_t p = static_cast<std::uint64_t>(part), n = static_cast<std::uint64_t>(parts);
  const std::uint64_t base = extent / n, extra = extent % n;
  const std::uint64_t begin = p * base + std::min(p, extra);
  return {begin, begin + base + (p < extra ? 1 : 0)};
}

std::vector<Box> even_split(const Shape& shape, std::size_t dim, int part, int parts) {
  Box box;
  for (auto d : shape) box.offsets.push_back(0), box.sizes.push_back(static_cast<std::uint64_t>(d));
  if (dim >= shape.size()) {
    (void)even_range(1, part, parts);  // checks the part
    if (part != 0) return {};
    return {box};
  }
  const auto [begin, end] = even_range(box.sizes[dim], part, parts);
  if (begin == end && shape_numel(shape) != 0) return {};
  // An empty tensor is held by part 0, as one empty box.
  if (shape_numel(shape) == 0) return part == 0 ? std::vector<Box>{box} : std::vector<Box>{};
  box.offsets[dim] = begin;
  box.sizes[dim] = end - begin;
  return {box};
}

}  // namespace ckpt::mpi
