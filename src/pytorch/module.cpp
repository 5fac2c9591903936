// A pickled nn.Module (torch.save(model)): exact roles from each module's _parameters, _buffers
// and _non_persistent_buffers_set.
#include <algorithm>
#include <array>
#include <cstring>

#include <nlohmann/json.hpp>

#include "ckpt/pytorch.h"
#include "ckpt/roles.h"
#include "pytorch/interpret.h"
#include "util/bytes.h"
#include "util/json_get.h"

namespace ckpt::detail::pytorch {

bool Interpreter::is_module(const pk::Graph& g, pk::NodeId id) {
  const pk::Node& n = g.at(id);
  return n.kind == pk::Kind::object && n.newobj && n.state != pk::kNoNode && g.at(n.state).kind == pk::Kind::dict &&
         member(g, g.at(n.state), "_parameters") != pk::kNoNode;
}

// A pickled nn.Module (torch.save(model)): exact roles from each module's _parameters,
// _buffers and _non_persistent_buffers_set, in state_dict order (a module's parameters, its
// buffers, then its children), non-persistent buffers included and marked.
void Interpreter::walk_module(const pk::Graph& g, pk::NodeId id, const std::string& prefix, std::size_t depth) {
  if (depth > 256) fail(ErrorCode::unsupported, name_, "data.pkl: modules nested too deeply");
  visit(g);
  record_module_class(prefix, g.global_name(g.at(id).first));
  const pk::Node& state = g.at(g.at(id).state);
  auto entries = [&](const char* key) -> const std::vector<std::pair<pk::NodeId, pk::NodeId>>* {
    const pk::NodeId v = member(g, state, key);
    if (v == pk::kNoNode || !is_dict(g, v)) return nullptr;
    return &g.at(v).entries;
  };
  std::vector<std::string> non_persistent;
  if (const pk::NodeId set = member(g, state, "_non_persistent_buffers_set"); set != pk::kNoNode) {
    const pk::Node& s = g.at(set);
    std::vector<pk::NodeId> items = s.items;
    if (s.kind == pk::Kind::object && s.args != pk::kNoNode) {  // set([...]) in protocol 2
      const pk::Node& args = g.at(s.args);
      if (args.kind == pk::Kind::tuple && !args.items.empty()) items = g.at(args.items[0]).items;
    }
    for (auto item : items)
      if (g.at(item).kind == pk::Kind::string) non_persistent.push_back(g.at(item).text);
  }
  for (const char* section : {"_parameters", "_buffers"}) {
    const auto* list = entries(section);
    if (!list) continue;
    for (const auto& [k, v] : *list) {
      if (g.at(v).kind == pk::Kind::none) continue;  // e.g. bias=False
      visit(g);
      const std::string key = key_text(g, k, "");
      add_tensor(g, v, prefix + key);
      TensorInfo& info = infos_.back();
      if (std::string_view(section) == "_buffers") {
        info.role = Role::buffer;
        info.collection = std::string(kDefaultBufferCollection);
        info.persistent = std::find(non_persistent.begin(), non_persistent.end(), key) == non_persistent.end();
      }
    }
  }
  if (const auto* children = entries("_modules"))
    for (const auto& [k, v] : *children) {
      if (g.at(v).kind == pk::Kind::none) continue;
      if (!is_module(g, v))
        fail(ErrorCode::unsupported, name_, "data.pkl: submodule {} is not a module", quote(prefix + key_text(g, k, "")));
      walk_module(g, v, prefix + key_text(g, k, "") + ".", depth + 1);
    }
}

// metadata[kTorchModulesKey][module path] = the class's Python name (TorchScript's generated
// names brought back to it).
void Interpreter::record_module_class(const std::string& prefix, std::string cls) {
  if (cls.starts_with("__torch__.")) cls.erase(0, std::string_view("__torch__.").size());
  for (std::size_t at; (at = cls.find("___torch_mangle_")) != std::string::npos;) {
    const auto dot = cls.find('.', at);
    cls.erase(at, dot == std::string::npos ? std::string::npos : dot - at + 1);
  }
  const std::string path = prefix.empty() ? prefix : prefix.substr(0, prefix.size() - 1);  // "a.b." -> "a.b"
  metadata_[std::string(kTorchModulesKey)][path] = cls;
}

}  // namespace ckpt::detail::pytorch
