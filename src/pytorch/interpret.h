// Interpreting the pickle of a .pt file (an inert graph: pickle/pickle.h, nothing is ever run)
// against an allow-list of callables: its tensors (each a view of a storage), their roles and the
// metadata. A state_dict or training checkpoint (state.cpp), a pickled nn.Module (module.cpp), a
// TorchScript module tree (torchscript.cpp). reader.cpp finds where the storages' bytes are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/io.h"
#include "ckpt/roles.h"
#include "pickle/pickle.h"
#include "zip/zip.h"

namespace ckpt::detail::pytorch {

namespace pk = detail::pickle;

inline constexpr std::size_t kNoStorage = static_cast<std::size_t>(-1);

// The dtype a GLOBAL names (torch.float32, torch.float8_e4m3fn, ...), if ckpt has it.
std::optional<DType> torch_dtype(std::string_view global_name);

struct Storage {
  std::string key;  // data/<key> in the zip; the key in the legacy format's list
  std::optional<DType> dtype;  // a typed storage; none for UntypedStorage (bytes)
  std::uint64_t nbytes = 0;
  const zip::Entry* entry = nullptr;  // zip format
  std::uint64_t data_offset = 0;      // legacy format: of the bytes in the file
  bool located = false;
  // A legacy storage view: a slice of another storage (root), starting root_offset bytes in.
  std::size_t root = kNoStorage;
  std::uint64_t root_offset = 0;
};

// Where a tensor's elements are in its storage.
struct View {
  std::size_t storage;   // index into storages
  std::uint64_t offset;  // in elements
  std::vector<std::uint64_t> stride;
};

class Interpreter {
 public:
  // `archive`: the zip and its folder ("archive/"), or null for the legacy format. `name` names
  // the file in errors.
  Interpreter(std::string name, const ReadOptions& options, const zip::Archive* archive, std::string prefix)
      : name_(std::move(name)), options_(options), archive_(archive), prefix_(std::move(prefix)) {}

  // Throws unsupported if the pickle calls anything but the allow-listed callables.
  void refuse_unsafe(const pk::Graph& graph);
  // Lists the pickle's tensors with roles, and its other values as metadata.
  void interpret(const pk::Graph& g);
  // The pickle's root as one object (an item of a distributed checkpoint): a tensor, listed as
  // the one tensor, named "" (returns nullopt); or a value holding no tensor, returned as metadata.
  // Throws unsupported for anything else, saying what it holds.
  std::optional<Metadata> interpret_object(const pk::Graph& g);
  // The key paths (dict keys, list indices) of the metadata arrays that were tuples.
  const std::vector<Metadata>& tuple_paths() const noexcept { return tuple_paths_; }
  // Roles, metadata and non-persistent buffers ckpt wrote beside the pickle (ckpt_roles.json,
  // format-spec/conventions.md §4).
  void apply_roles(const zip::Entry& entry);

  static bool is_dict(const pk::Graph& g, pk::NodeId id);
  static bool is_tensor(const pk::Graph& g, pk::NodeId id);
  // A module's __dict__ entry `key`, or kNoNode.
  static pk::NodeId member(const pk::Graph& g, const pk::Node& state, std::string_view key);

  // Values reached through shared references (memo gets) are read as copies, one per reference,
  // as Python's unpickler gives them; a few hundred bytes of pickle can so reach 2^40 values. The
  // walk over the pickle's values (tensors, metadata, modules) visits at most this many per
  // node of the pickle's graph, plus kBaseVisits, and then refuses the file.
  static constexpr std::size_t kVisitsPerNode = 4;
  static constexpr std::size_t kBaseVisits = 1u << 16;

  // What the pickle says.
  std::vector<TensorInfo> infos_;
  std::vector<View> views_;  // parallel to infos_
  std::vector<Storage> storages_;
  std::map<std::string, std::size_t> storage_index_;
  Metadata metadata_ = Metadata::object();
  // What was left out, one line each (Reader::notes()).
  std::vector<std::string> notes_;
  RoleSource role_source_ = RoleSource::heuristic;
  std::string model_key_;

 private:
  // Counts one visit of a value against the budget set from the graph's size.
  void visit(const pk::Graph& g);
  std::size_t visits_ = 0;

  // state.cpp: containers, tensors and storages, values.
  [[noreturn]] void bad(const std::string& key, const std::string& what);
  std::int64_t integer(const pk::Graph& g, pk::NodeId id, const std::string& key, const char* what);
  std::vector<std::int64_t> integers(const pk::Graph& g, pk::NodeId id, const std::string& key, const char* what);
  std::size_t storage(const pk::Graph& g, pk::NodeId id, const std::string& key);
  std::size_t find_or_add_storage(const std::string& storage_key, std::optional<DType> dtype, std::uint64_t nbytes,
                                  const std::string& key);
  void add_tensor(const pk::Graph& g, pk::NodeId id, const std::string& key);
  void add_non_persistent(const Metadata& listed, const std::string& where);
  std::string key_text(const pk::Graph& g, pk::NodeId id, const std::string& where);
  static std::size_t direct_tensors(const pk::Graph& g, pk::NodeId dict);
  Metadata to_metadata(const pk::Graph& g, pk::NodeId id, const std::string& path, Metadata& where, std::size_t depth);
  void walk(const pk::Graph& g, pk::NodeId dict, const std::vector<std::string>& path, pk::NodeId model,
            Metadata& metadata, const BufferRule& is_buffer);

  // module.cpp: a pickled nn.Module.
  static bool is_module(const pk::Graph& g, pk::NodeId id);
  void walk_module(const pk::Graph& g, pk::NodeId id, const std::string& prefix, std::size_t depth);
  void record_module_class(const std::string& prefix, std::string cls);

  // torchscript.cpp: a TorchScript archive.
// TorchScript (torch.jit.save): data.pkl holds the module tree as objects of generated classes
// (__torch__.<module path>.<Class>) whose BUILD state maps attribute names to values. Which
// attributes are parameters and buffers is written only in the generated code,
// code/__torch__/<module path>.py:
//     class Linear(Module):
//       __parameters__ = ["weight", "bias", ]
//       __buffers__ = []
// That code is read as text for these two lines and never run. TorchScript does not record
// whether a buffer is persistent; its state_dict() holds them all, so all are marked persistent.
  struct ScriptClass {
    std::vector<std::string> parameters, buffers;
  };
  bool is_torchscript(const pk::Graph& g) const;
  const ScriptClass* script_class(const std::string& qualified);
  std::vector<std::string> quoted_names(std::string_view text, const std::string& entry, std::string_view field);
  void walk_script_module(const pk::Graph& g, pk::NodeId id, const std::string& prefix, std::size_t depth);

  std::string name_;
  ReadOptions options_;
  const zip::Archive* archive_;
  std::string prefix_;  // "<folder>/"
  std::map<std::string, std::optional<ScriptClass>> script_classes_;
  std::vector<std::vector<std::string>> int_key_paths_;
  std::vector<Metadata> tuple_paths_;  // key paths of metadata arrays that were tuples
};

}  // namespace ckpt::detail::pytorch
