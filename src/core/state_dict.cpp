#include "ckpt/state_dict.h"

#include <utility>

#include "core/keys.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

std::string_view model_or_section(const EntryInfo& info) {
  return info.role == Role::extra ? std::string_view(info.section) : std::string_view();
}

}  // namespace

const char* role_name(Role role) noexcept {
  switch (role) {
    case Role::parameter: return "parameter";
    case Role::buffer: return "buffer";
    case Role::extra: return "extra";
  }
  return "unknown";
}

const char* role_source_name(RoleSource source) noexcept {
  switch (source) {
    case RoleSource::stored: return "stored";
    case RoleSource::metadata: return "metadata";
    case RoleSource::heuristic: return "heuristic";
    case RoleSource::module: return "module";
    case RoleSource::torchscript: return "torchscript";
    case RoleSource::none: return "none";
  }
  return "unknown";
}

std::string_view EntryInfo::section_name() const noexcept {
  switch (role) {
    case Role::parameter: return kParametersSection;
    case Role::buffer: return kBuffersSection;
    case Role::extra: return section;
  }
  return section;
}

Entry& StateDict::add(EntryInfo info, Tensor tensor) {
  if (info.role == Role::extra) {
    if (info.section.empty() || info.section == kParametersSection || info.section == kBuffersSection)
      detail::fail(ErrorCode::invalid_argument, "", "extra section name {} is reserved or empty",
                   detail::quote(info.section));
  } else {
    info.section.clear();
  }
  if (info.role == Role::buffer && info.collection.empty())
    info.collection = kDefaultBufferCollection;
  if (info.role != Role::buffer) {
    info.collection.clear();
    info.persistent = true;
  }
  auto key = detail::entry_key(model_or_section(info), info.name);
  if (index_.count(key))
    detail::fail(ErrorCode::invalid_argument, "", "duplicate {} {}",
                 info.role == Role::extra ? "tensor in section " + detail::quote(info.section) : std::string("model key"),
                 detail::quote(info.name));
  index_.emplace(std::move(key), entries_.size());
  Entry entry;
  static_cast<EntryInfo&>(entry) = std::move(info);
  entry.tensor = std::move(tensor);
  entries_.push_back(std::move(entry));
  return entries_.back();
}

Entry& StateDict::add_parameter(std::string name, Tensor tensor) {
  EntryInfo info;
  info.name = std::move(name);
  info.role = Role::parameter;
  return add(std::move(info), std::move(tensor));
}

Entry& StateDict::add_buffer(std::string name, Tensor tensor, bool persistent, std::string collection) {
  EntryInfo info;
  info.name = std::move(name);
  info.role = Role::buffer;
  info.persistent = persistent;
  info.collection = std::move(collection);
  return add(std::move(info), std::move(tensor));
}

Entry& StateDict::add_extra(std::string section, std::string name, Tensor tensor) {
  EntryInfo info;
  info.name = std::move(name);
  info.role = Role::extra;
  info.section = std::move(section);
  return add(std::move(info), std::move(tensor));
}

const Entry* StateDict::find(std::string_view name) const { return find({}, name); }

const Entry* StateDict::find(std::string_view section, std::string_view name) const {
  if (section == kParametersSection || section == kBuffersSection) section = {};
  auto it = index_.find(detail::entry_key(section, name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Entry* StateDict::find(std::string_view name) { return find({}, name); }

Entry* StateDict::find(std::string_view section, std::string_view name) {
  return const_cast<Entry*>(std::as_const(*this).find(section, name));
}

const Tensor& StateDict::at(std::string_view name) const& {
  const Entry* e = find(name);
  if (e == nullptr) detail::fail(ErrorCode::invalid_argument, "", "no tensor named {}", detail::quote(name));
  return e->tensor;
}

Tensor& StateDict::at(std::string_view name) & { return const_cast<Tensor&>(std::as_const(*this).at(name)); }

Tensor StateDict::at(std::string_view name) && { return std::as_const(*this).at(name); }

std::size_t StateDict::count(Role role) const {
  std::size_t n = 0;
  for (const auto& e : entries_) n += e.role == role;
  return n;
}

std::vector<std::string> StateDict::extra_sections() const {
  std::vector<std::string> names;
  for (const auto& e : entries_)
    if (e.role == Role::extra && std::find(names.begin(), names.end(), e.section) == names.end())
      names.push_back(e.section);
  return names;
}

}  // namespace ckpt
