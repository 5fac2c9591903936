// A TorchScript archive (torch.jit.save): exact roles from the generated classes' __parameters__
// and __buffers__ lists, read as text from their code and never run.
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

bool Interpreter::is_torchscript(const pk::Graph& g) const {
  const pk::Node& root = g.at(g.root());
  if (!archive_ || root.kind != pk::Kind::object || !root.newobj || !g.global_name(g.root()).starts_with("__torch__."))
    return false;
  return std::any_of(archive_->entries().begin(), archive_->entries().end(),
                     [&](const auto& e) { return e.name.starts_with(prefix_ + "code/"); });
}

// The lists of a TorchScript class; nullptr when it has none (a scripted class, not a module).
const Interpreter::ScriptClass* Interpreter::script_class(const std::string& qualified) {
  if (auto it = script_classes_.find(qualified); it != script_classes_.end()) return it->second ? &*it->second : nullptr;
  const auto dot = qualified.rfind('.');
  std::string module = qualified.substr(0, dot);
  const std::string cls = qualified.substr(dot + 1);
  std::replace(module.begin(), module.end(), '.', '/');
  const std::string entry_name = prefix_ + "code/" + module + ".py";
  const auto* entry = archive_->find(entry_name);
  if (!entry) fail(ErrorCode::format, name_, "TorchScript class {} has no code entry {}", quote(qualified), quote(entry_name));
  const auto bytes = archive_->read(*entry);
  const std::string_view code(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const std::string header = "class " + cls + "(";
  std::size_t at = code.starts_with(header) ? 0 : code.find("\n" + header);
  if (at == std::string_view::npos) fail(ErrorCode::format, name_, "{} does not define class {}", quote(entry_name), quote(cls));
  ScriptClass out;
  bool seen_parameters = false, seen_buffers = false;
  // The class body: the lines after its header that are indented.
  for (std::size_t line = code.find('\n', at + 1); line != std::string_view::npos && line + 1 < code.size();) {
    const std::size_t end = std::min(code.find('\n', line + 1), code.size());
    const std::string_view text = code.substr(line + 1, end - line - 1);
    if (!text.empty() && text[0] != ' ') break;
    auto list = [&](std::string_view field, std::vector<std::string>& names, bool& seen) {
      const std::string prefix = "  " + std::string(field) + " = [";
      if (!text.starts_with(prefix)) return;
      seen = true;
      names = quoted_names(text.substr(prefix.size()), entry_name, field);
    };
    list("__parameters__", out.parameters, seen_parameters);
    list("__buffers__", out.buffers, seen_buffers);
    line = end;
  }
  auto& slot = script_classes_[qualified];
  if (seen_parameters && seen_buffers) slot = std::move(out);
  return slot ? &*slot : nullptr;
}

// The names of `"a", "b", ]`: the list as TorchScript prints it (identifiers, double quotes).
std::vector<std::string> Interpreter::quoted_names(std::string_view text, const std::string& entry, std::string_view field) {
  std::vector<std::string> names;
  for (std::size_t i = 0;;) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i < text.size() && text[i] == ']') return names;
    const std::size_t close = i < text.size() && text[i] == '"' ? text.find('"', i + 1) : std::string_view::npos;
    if (close == std::string_view::npos || text.substr(i, close - i).find('\\') != std::string_view::npos)
      fail(ErrorCode::format, name_, "{}: {} is not a list of quoted names", quote(entry), field);
    names.emplace_back(text.substr(i + 1, close - i - 1));
    i = close + 1;
  }
}

// A scripted module's tensors in state_dict order: its parameters, its buffers, then its
// submodules (attributes holding objects of TorchScript module classes) in attribute order.
void Interpreter::walk_script_module(const pk::Graph& g, pk::NodeId id, const std::string& prefix, std::size_t depth) {
  if (depth > 256) fail(ErrorCode::unsupported, name_, "data.pkl: modules nested too deeply");
  visit(g);
  const pk::Node& object = g.at(id);
  const std::string cls = g.global_name(id);
  record_module_class(prefix, cls);
  if (object.state == pk::kNoNode || g.at(object.state).kind != pk::Kind::dict)
    fail(ErrorCode::format, name_, "data.pkl: TorchScript module {} ({}) has no attribute dict", quote(prefix), quote(cls));
  const pk::Node& state = g.at(object.state);
  const ScriptClass* script = script_class(cls);
  if (!script)
    fail(ErrorCode::format, name_, "data.pkl: TorchScript class {} lists no __parameters__ and __buffers__", quote(cls));
  for (const bool buffers : {false, true})
    for (const std::string& name : buffers ? script->buffers : script->parameters) {
      const pk::NodeId v = member(g, state, name);
      if (v == pk::kNoNode) fail(ErrorCode::format, name_, "data.pkl: TorchScript module {} has no attribute {}",
                                 quote(prefix.empty() ? cls : prefix), quote(name));
      if (g.at(v).kind == pk::Kind::none) continue;  // e.g. bias=False
      visit(g);
      add_tensor(g, v, prefix + name);
      if (buffers) {
        infos_.back().role = Role::buffer;
        infos_.back().collection = std::string(kDefaultBufferCollection);
      }
    }
  for (const auto& [k, v] : state.entries) {
    const pk::Node& child = g.at(v);
    if (child.kind == pk::Kind::object && child.newobj && g.global_name(v).starts_with("__torch__.") &&
        child.state != pk::kNoNode && g.at(child.state).kind == pk::Kind::dict && script_class(g.global_name(v)))
      walk_script_module(g, v, prefix + key_text(g, k, "") + ".", depth + 1);
  }
}

}  // namespace ckpt::detail::pytorch
