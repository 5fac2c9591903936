// PyTorch checkpoints: the zip format (torch.save since 1.6; torch.jit.save) and the legacy one
// (pickles in a row, then the storages). The pickle is interpreted in interpret.h; here is where
// each storage's bytes are: a zip entry data/<key> (in place when stored, as torch.save stores
// them, 64-byte aligned; inflated when deflated) or a range after the legacy pickles. A tensor is
// a view of its storage: offset, strides and the file's byte order.
#include <cstring>

#include "ckpt/pytorch.h"
#include "core/format_reader.h"
#include "pytorch/format.h"
#include "pytorch/interpret.h"
#include "util/bytes.h"
#include "zip/zip.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
namespace pk = detail::pickle;
using detail::pytorch::Storage;
using detail::pytorch::View;

// Legacy files (before PyTorch 1.6, or _use_new_zipfile_serialization=False) start with the
// pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
constexpr unsigned char kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                          0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

bool is_legacy(std::span<const std::byte> file) {
  return file.size() >= sizeof kLegacyMagic && std::memcmp(file.data(), kLegacyMagic, sizeof kLegacyMagic) == 0;
}

class PytorchReader final : public detail::FormatReader {
 public:
  // With `object`, the file is one object torch.save wrote (open_saved_object): a tensor is
  // listed, anything else is put in *object.
  PytorchReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options,
                std::optional<Metadata>* object = nullptr, std::vector<Metadata>* tuples = nullptr)
      : FormatReader(std::move(source), options) {
    format_ = "pytorch";
    if (!object && is_legacy(source_->bytes())) {
      open_legacy();
      finish_listing();
      return;
    }
    archive_ = std::make_unique<detail::zip::Archive>(source_->bytes(), name_);
    // Every entry sits under one folder, named after the file when it was saved.
    const detail::zip::Entry* pickle_entry = nullptr;
    std::string prefix;
    for (const auto& e : archive_->entries())
      if (e.name.size() >= 9 && e.name.ends_with("/data.pkl") && e.name.find('/') == e.name.size() - 9) {
        pickle_entry = &e;
        prefix = e.name.substr(0, e.name.size() - 8);
      }
    if (!pickle_entry) fail(ErrorCode::format, name_, "zip has no <folder>/data.pkl: not a torch.save file");
    if (const auto* order = archive_->find(prefix + "byteorder")) {
      const auto bytes = archive_->read(*order);
      const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      if (text != "little" && text != "big")
        fail(ErrorCode::format, name_, "byteorder entry is {}, expected 'little' or 'big'", quote(text));
      big_endian_ = text == "big";
    }
    // One object saved in a larger checkpoint (a distributed checkpoint's item): its pickle may not
    // inflate far beyond the item's own bytes, since parsing costs memory per pickle byte (a
    // deflated run of list appends in a 40 KB item made 3.6 GB of nodes).
    if (object && pickle_entry->size > (1u << 20) + 16 * source_->size())
      fail(ErrorCode::unsupported, name_, "{} inflates to {} bytes, more than an item of {} bytes is allowed", pickle_entry->name,
           pickle_entry->size, source_->size());
    detail::pytorch::Interpreter pickle(name_, options_, archive_.get(), prefix);
    const auto pickle_bytes = archive_->read(*pickle_entry);
    const pk::Graph graph = pk::parse(pickle_bytes, name_ + ": " + pickle_entry->name);
    pickle.refuse_unsafe(graph);
    if (object) {
      *object = pickle.interpret_object(graph);
      if (tuples) *tuples = pickle.tuple_paths();
      take(std::move(pickle));
      finish_listing();
      return;
    }
    pickle.interpret(graph);
    if (const auto* roles = archive_->find(prefix + "ckpt_roles.json"); roles && pickle.role_source_ == RoleSource::heuristic)
      pickle.apply_roles(*roles);
    take(std::move(pickle));
    finish_listing();
  }

  // The tensor's storage is the stream: in place (stored entries, legacy files) or inflated.
  detail::Location locate(std::size_t index) override {
    const View& view = views_[index];
    const Storage& storage = storages_[view.storage];
    detail::Location l = location(index);
    const std::uint64_t itemsize = dtype_size(l.dtype);
    l.first = storage.root_offset + view.offset * itemsize;
    l.strides = view.stride;
    l.big_endian = big_endian_;
    if (storage.entry == nullptr) {  // legacy: data_offset includes the root offset of a view
      l.first = view.offset * itemsize;
      l.extents = {{storage.data_offset, storage.nbytes}};
    } else if (storage.entry->method == 0) {
      l.extents = {{archive_->data_offset(*storage.entry), storage.root_offset + storage.nbytes}};
      l.crc = archive_->crc_check(*storage.entry);
    } else {
      const detail::zip::Entry* entry = storage.entry;
      const detail::zip::Archive* archive = archive_.get();
      l.decoded = [archive, entry](std::uint64_t skip, std::span<std::byte> out) { archive->read_range(*entry, skip, out); };
      l.decoded_size = entry->size;
      l.crc = archive_->crc_check(*entry);
    }
    return l;
  }

 private:
  void take(detail::pytorch::Interpreter&& pickle) {
    infos_ = std::move(pickle.infos_);
    views_ = std::move(pickle.views_);
    storages_ = std::move(pickle.storages_);
    metadata_ = std::move(pickle.metadata_);
    notes_.insert(notes_.end(), pickle.notes_.begin(), pickle.notes_.end());
    role_source_ = pickle.role_source_;
    model_key_ = std::move(pickle.model_key_);
  }

  static std::size_t element_size(const Storage& s) { return s.dtype ? dtype_size(*s.dtype) : 1; }

  // The legacy format: five pickles in a row (magic number, protocol version 1001, system info,
  // the object, the list of storage keys), then per key in that order an int64 element count and
  // the storage's bytes.
  void open_legacy() {
    const auto file = source_->bytes();
    std::size_t pos = 0;
    auto next = [&](const char* what) {
      std::size_t used = 0;
      pk::Graph graph = pk::parse(file.subspan(pos), fmt::format("{}: legacy {} at offset {}", name_, what, pos), {}, &used);
      pos += used;
      return graph;
    };
    using detail::pytorch::Interpreter;
    (void)next("magic number");
    const pk::Graph version = next("protocol version");
    if (version.at(version.root()).kind != pk::Kind::integer || version.at(version.root()).integer != 1001)
      fail(ErrorCode::unsupported, name_, "legacy protocol version {} is not 1001", pk::render(version, version.root(), 1));
    const pk::Graph info = next("system info");
    if (Interpreter::is_dict(info, info.root()))
      if (const pk::NodeId little = Interpreter::member(info, info.at(info.root()), "little_endian"); little != pk::kNoNode)
        big_endian_ = info.at(little).kind == pk::Kind::boolean && info.at(little).integer == 0;
    Interpreter pickle(name_, options_, nullptr, "");
    const pk::Graph object = next("object");
    pickle.refuse_unsafe(object);
    pickle.interpret(object);
    take(std::move(pickle));
    const pk::Graph keys = next("storage keys");
    const pk::Node& list = keys.at(keys.root());
    if (list.kind != pk::Kind::list) fail(ErrorCode::format, name_, "legacy storage key list is not a list");
    std::map<std::string, std::size_t> storage_index;
    for (std::size_t i = 0; i < storages_.size(); ++i) storage_index.emplace(storages_[i].key, i);
    for (const pk::NodeId item : list.items) {
      if (keys.at(item).kind != pk::Kind::string) fail(ErrorCode::format, name_, "legacy storage key is not a string");
      const std::string& key = keys.at(item).text;
      auto it = storage_index.find(key);
      if (it == storage_index.end())
        fail(ErrorCode::format, name_, "legacy storage {} at offset {} is not used by any tensor", quote(key), pos);
      Storage& s = storages_[it->second];
      if (s.root != detail::pytorch::kNoStorage)
        fail(ErrorCode::format, name_, "legacy storage key {} names a view, not a storage", quote(key));
      if (file.size() - pos < 8) fail(ErrorCode::format, name_, "legacy storage {}: file ends at offset {}", quote(key), pos);
      std::uint64_t count = detail::load_le<std::uint64_t>(file.data() + pos);  // written in the saver's byte order
      if (big_endian_) count = __builtin_bswap64(count);
      const std::uint64_t numel = s.nbytes / element_size(s);
      if (count != numel)
        fail(ErrorCode::format, name_, "legacy storage {} at offset {} holds {} elements, the pickle says {}", quote(key),
             pos, count, numel);
      if (s.nbytes > file.size() - pos - 8)
        fail(ErrorCode::format, name_, "legacy storage {} at offset {} needs {} bytes, {} remain", quote(key), pos,
             s.nbytes, file.size() - pos - 8);
      s.data_offset = pos + 8;
      s.located = true;
      pos += 8 + static_cast<std::size_t>(s.nbytes);
    }
    for (auto& s : storages_) {
      if (s.root == detail::pytorch::kNoStorage) continue;
      const Storage& root = storages_[s.root];
      s.data_offset = root.data_offset + s.root_offset;
      s.located = root.located;
    }
    for (const auto& s : storages_)
      if (!s.located) fail(ErrorCode::format, name_, "legacy storage {} has no data", quote(s.key));
  }

  bool big_endian_ = false;
  std::unique_ptr<detail::zip::Archive> archive_;
  std::vector<Storage> storages_;
  std::vector<View> views_;  // parallel to infos_
};

}  // namespace

namespace detail::pytorch {

bool sniff(std::span<const std::byte> head, std::uint64_t) {
  if (is_legacy(head)) return true;
  if (head.size() < 30 || load_le<std::uint32_t>(head.data()) != 0x04034b50) return false;
  const auto name_len = load_le<std::uint16_t>(head.data() + 26);
  if (30u + name_len > head.size()) return false;
  // The first entry is <folder>/data.pkl in torch.save files, <folder>/data/<n> or
  // <folder>/.data/... in TorchScript archives; the folder is any name.
  const std::string_view name(reinterpret_cast<const char*>(head.data()) + 30, name_len);
  const auto slash = name.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  const std::string_view rest = name.substr(slash + 1);
  return rest == "data.pkl" || rest == "byteorder" || rest == ".format_version" || rest.starts_with("data/") ||
         rest.starts_with(".data/") || rest.starts_with("code/") || rest == "constants.pkl" || rest == "version";
}

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<PytorchReader>(std::move(source), options);
}

SavedObject open_saved_object(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  SavedObject saved;
  std::optional<Metadata> value;
  auto reader = std::make_unique<PytorchReader>(std::move(source), options, &value, &saved.tuples);
  if (value) saved.value = std::move(*value);
  else saved.tensor = std::move(reader);
  return saved;
}

}  // namespace detail::pytorch
}  // namespace ckpt
