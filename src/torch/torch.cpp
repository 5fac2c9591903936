// ckpt::libtorch (include/ckpt/torch.h): modules, optimizers and tensors of libtorch to and from
// any checkpoint ckpt reads or writes. Built only against the public API of libckpt, as a
// separate library (libckpt_torch), so that libckpt itself never depends on libtorch.
#include "ckpt/torch.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

#include <c10/util/string_utils.h>
#include <fmt/format.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include "ckpt/layout.h"
#include "ckpt/pytorch.h"

namespace ckpt::libtorch {
namespace {

[[noreturn]] void fail(ErrorCode code, const std::string& file, const std::string& message) {
  throw Error(code, file, message);
}

std::string describe(DType dtype, const Shape& shape) {
  return fmt::format("{} {}", dtype_name(dtype), shape_to_string(shape));
}

Shape shape_of(const ::torch::Tensor& t) { return Shape(t.sizes().begin(), t.sizes().end()); }

// A torch dtype by ckpt's (numpy's) name where it has one: "float32", not torch's "Float".
std::string torch_dtype_name(::torch::Dtype dtype) {
  if (const auto d = from_torch_dtype(dtype)) return std::string(dtype_name(*d));
  return c10::toString(dtype);
}

// A torch tensor over a ckpt tensor's bytes, holding the ckpt tensor (and so its memory or
// mapping) alive. `tensor` must be writable unless the result is only ever read (a copy_ source).
::torch::Tensor wrap(const Tensor& tensor, ::torch::Dtype dtype) {
  const auto sizes = std::vector<std::int64_t>(tensor.shape().begin(), tensor.shape().end());
  const auto opts = ::torch::TensorOptions().dtype(dtype).device(::torch::kCPU);
  if (tensor.numel() == 0) return ::torch::empty(sizes, opts);
  auto holder = std::make_unique<Tensor>(tensor);
  void* data = const_cast<std::byte*>(tensor.bytes().data());
  auto out = ::torch::from_blob(data, sizes, [h = holder.get()](void*) { delete h; }, opts);
  holder.release();  // the torch tensor's deleter owns it now
  return out;
}

::torch::Dtype torch_dtype_or_throw(DType dtype, const std::string& file, const std::string& what) {
  const auto t = to_torch_dtype(dtype);
  if (!t) fail(ErrorCode::invalid_argument, file, fmt::format("{}: dtype {} has no libtorch 1.13 dtype", what, dtype_name(dtype)));
  return *t;
}

// A tensor of the module, in Python's state_dict order.
struct ModuleTensor {
  std::string name;
  Role role;
  ::torch::Tensor tensor;
};

// Python's Module.state_dict order: per module its parameters, its buffers, then its submodules
// in registration order. libtorch's named_parameters() lists all parameters before any buffer, so
// the tree is walked here. Undefined tensors (Linear without bias) are left out as Python leaves
// out None.
void collect(const ::torch::nn::Module& module, const std::string& prefix, std::vector<ModuleTensor>& out) {
  for (const auto& p : module.named_parameters(/*recurse=*/false))
    if (p.value().defined()) out.push_back({prefix + p.key(), Role::parameter, p.value()});
  for (const auto& b : module.named_buffers(/*recurse=*/false))
    if (b.value().defined()) out.push_back({prefix + b.key(), Role::buffer, b.value()});
  for (const auto& child : module.named_children()) collect(*child.value(), prefix + child.key() + ".", out);
}

std::vector<ModuleTensor> module_tensors(const ::torch::nn::Module& module) {
  std::vector<ModuleTensor> out;
  collect(module, "", out);
  return out;
}

// Names given in options that must be buffers of the module (a typo would silently do nothing).
std::set<std::string> buffer_names(const std::vector<ModuleTensor>& tensors, const std::vector<std::string>& names,
                                   const char* option, const std::string& file) {
  std::set<std::string> out;
  for (const auto& name : names) {
    const bool found = std::any_of(tensors.begin(), tensors.end(),
                                   [&](const ModuleTensor& t) { return t.name == name && t.role == Role::buffer; });
    if (!found) fail(ErrorCode::invalid_argument, file, fmt::format("{}: '{}' is not a buffer of the module", option, name));
    out.insert(name);
  }
  return out;
}

bool exact_roles(RoleSource source) {
  return source == RoleSource::stored || source == RoleSource::metadata || source == RoleSource::module ||
         source == RoleSource::torchscript;
}

// What a load will do, found from listings alone.
struct ModulePlan {
  struct Assign {
    ::torch::Tensor target;
    std::size_t index;  // in the source's tensors()
    bool convert;
  };
  std::vector<Assign> assigns;
  LoadReport report;
};

ModulePlan plan_module(const std::vector<ModuleTensor>& module, const std::vector<TensorInfo>& file, bool roles_exact,
                       const LoadOptions& options, const std::string& path) {
  ModulePlan plan;
  const auto non_persistent = buffer_names(module, options.non_persistent, "LoadOptions::non_persistent", path);
  std::unordered_map<std::string_view, std::size_t> by_name;
  for (std::size_t i = 0; i < file.size(); ++i)
    if (file[i].role != Role::extra) by_name.emplace(file[i].name, i);
  std::vector<bool> used(file.size(), false);
  auto& problems = plan.report.problems;
  for (const auto& m : module) {
    const auto it = by_name.find(options.prefix + m.name);
    const std::string mdesc =
        fmt::format("{} {}", torch_dtype_name(m.tensor.scalar_type()), shape_to_string(shape_of(m.tensor)));
    if (it == by_name.end()) {
      if (!non_persistent.count(m.name))
        problems.push_back({Problem::Kind::missing, m.name, fmt::format("module {} {}", role_name(m.role), mdesc)});
      continue;
    }
    const auto& f = file[it->second];
    used[it->second] = true;
    bool ok = true;
    if (f.role != m.role) {
      if (roles_exact) {
        problems.push_back({Problem::Kind::role, m.name,
                            fmt::format("file {}, module {}", role_name(f.role), role_name(m.role))});
        ok = false;
      } else {
        plan.report.notes.push_back(fmt::format("'{}' is a {} of the module; the file's role ({}) was only inferred",
                                                m.name, role_name(m.role), role_name(f.role)));
      }
    }
    if (f.shape != shape_of(m.tensor)) {
      problems.push_back({Problem::Kind::shape, m.name,
                          fmt::format("file {}, module {}", shape_to_string(f.shape), shape_to_string(shape_of(m.tensor)))});
      ok = false;
    }
    const auto ftorch = to_torch_dtype(f.dtype);
    const bool same_dtype = ftorch && *ftorch == m.tensor.scalar_type();
    if (!same_dtype && (!options.allow_dtype_conversion || !ftorch)) {
      problems.push_back({Problem::Kind::dtype, m.name,
                          fmt::format("file {}, module {}{}", dtype_name(f.dtype), mdesc.substr(0, mdesc.find(' ')),
                                      ftorch ? "" : " (libtorch lacks the file's dtype)")});
      ok = false;
    }
    if (ok) plan.assigns.push_back({m.tensor, it->second, !same_dtype});
  }
  for (std::size_t i = 0; i < file.size(); ++i) {
    const auto& f = file[i];
    if (used[i] || f.role == Role::extra) continue;
    if (f.role == Role::buffer && !f.persistent) {
      plan.report.notes.push_back(fmt::format("non-persistent buffer '{}' of the file is not in the module: skipped", f.name));
      continue;
    }
    const bool prefixed = f.name.compare(0, options.prefix.size(), options.prefix) == 0;
    problems.push_back({Problem::Kind::unexpected, prefixed ? f.name.substr(options.prefix.size()) : f.name,
                        fmt::format("file {} {}{}", role_name(f.role), describe(f.dtype, f.shape),
                                    prefixed ? "" : fmt::format(", outside prefix '{}'", options.prefix))});
  }
  return plan;
}

// Every tensor of a plan, read (and verified) before anything changes.
std::vector<Tensor> read_planned(Source& source, const std::vector<std::size_t>& indices, const std::string& file) {
  std::vector<Tensor> out;
  out.reserve(indices.size());
  for (const auto index : indices) out.push_back(source.read_checked(index, file));
  return out;
}

void apply_module(ModulePlan& plan, const std::vector<Tensor>& values, bool zero_copy) {
  ::torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < plan.assigns.size(); ++i) {
    const auto& a = plan.assigns[i];
    auto target = a.target;
    const auto& value = values[i];
    const auto dtype = *to_torch_dtype(value.dtype());
    if (zero_copy && !a.convert && target.device().is_cpu()) {
      target.set_data(to_torch(value));
    } else {
      // The source is only read: a read-only mapping may be wrapped without a copy.
      target.copy_(wrap(value, dtype));
    }
  }
  plan.report.loaded = plan.assigns.size();
}

void throw_if_strict(const LoadReport& report, const LoadOptions& options, const std::string& file) {
  if (options.strict && !report.ok())
    fail(ErrorCode::invalid_argument, file, "cannot load into the module: " + report.summary());
}

std::vector<std::size_t> plan_indices(const ModulePlan& plan) {
  std::vector<std::size_t> out;
  for (const auto& a : plan.assigns) out.push_back(a.index);
  return out;
}

ReadOptions read_options(const LoadOptions& options) {
  ReadOptions read = options.read;
  read.zero_copy = true;
  // Copying into the module needs only a read-only view; adopting the tensors needs memory the
  // module may write.
  read.writable = options.zero_copy;
  return read;
}

// A Flax file is in Flax's layout: a view of it in torch's, with the module's tensors as the
// template; nullptr for other formats.
std::unique_ptr<Source> torch_layout(const std::vector<ModuleTensor>& module, Reader& reader,
                                     std::vector<std::string>& notes) {
  if (reader.format() != "flax") return nullptr;
  LayoutOptions layout;
  layout.target = Layout::torch;
  layout.keep_unmapped = true;  // what cannot be placed is then reported missing or unexpected
  for (const auto& m : module) {
    TensorInfo info;
    info.name = m.name;
    info.role = m.role;
    info.shape = shape_of(m.tensor);
    if (auto d = from_torch_dtype(m.tensor.scalar_type())) info.dtype = *d;
    layout.template_tensors.push_back(std::move(info));
  }
  LayoutReport report;
  auto mapped = map_layout(reader, layout, reader.path().string(), &report);
  notes.push_back("a Flax file: mapped to torch's layout (ckpt/layout.h)");
  notes.insert(notes.end(), report.notes.begin(), report.notes.end());
  return mapped;
}

// The plan from the listing, with the reader's notes; throws when strict and not clean.
ModulePlan checked_plan(const std::vector<ModuleTensor>& tensors, Source& source, const std::string& file,
                        const std::vector<std::string>& notes, const LoadOptions& options) {
  auto plan = plan_module(tensors, source.tensors(), exact_roles(source.role_source()), options, file);
  plan.report.notes.insert(plan.report.notes.end(), notes.begin(), notes.end());
  throw_if_strict(plan.report, options, file);
  return plan;
}

// Plan from the listing, read everything, then change the module.
LoadReport load_module(const std::vector<ModuleTensor>& tensors, Source& source, const std::string& file,
                       const std::vector<std::string>& notes, const LoadOptions& options) {
  auto plan = checked_plan(tensors, source, file, notes, options);
  const auto values = read_planned(source, plan_indices(plan), file);
  apply_module(plan, values, options.zero_copy);
  return std::move(plan.report);
}

// ---- optimizers ----------------------------------------------------------------------------------

std::string state_key(const ::torch::Tensor& param) { return c10::guts::to_string(param.unsafeGetTensorImpl()); }

const Metadata* child(const Metadata& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(std::string(key));
  return it == object.end() ? nullptr : &*it;
}

double number(const Metadata& group, const char* key, std::size_t g, const std::string& file) {
  const auto* v = child(group, key);
  if (!v || !v->is_number())
    fail(ErrorCode::format, file, fmt::format("optimizer param_groups[{}]: '{}' is not a number", g, key));
  return v->get<double>();
}

bool boolean(const Metadata& group, const char* key, std::size_t g, const std::string& file, bool fallback) {
  const auto* v = child(group, key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_boolean()) fail(ErrorCode::format, file, fmt::format("optimizer param_groups[{}]: '{}' is not a bool", g, key));
  return v->get<bool>();
}

enum class OptimizerKind { sgd, adam, adamw };

// The optimizers whose state ckpt maps. Adam and AdamW keep the same state and options (AdamW's
// weight decay is decoupled), so one code path serves both, through these two templates.
OptimizerKind optimizer_kind(const ::torch::optim::Optimizer& optimizer, const std::string& file) {
  if (dynamic_cast<const ::torch::optim::Adam*>(&optimizer)) return OptimizerKind::adam;
  if (dynamic_cast<const ::torch::optim::AdamW*>(&optimizer)) return OptimizerKind::adamw;
  if (dynamic_cast<const ::torch::optim::SGD*>(&optimizer)) return OptimizerKind::sgd;
  fail(ErrorCode::unsupported, file, "only the state of torch::optim::SGD, Adam and AdamW can be mapped");
}

const char* optimizer_name(OptimizerKind kind) {
  return kind == OptimizerKind::sgd ? "SGD" : kind == OptimizerKind::adam ? "Adam" : "AdamW";
}

template <typename Options>
std::unique_ptr<::torch::optim::OptimizerOptions> adam_options(double lr, double beta1, double beta2, double eps,
                                                               double weight_decay, bool amsgrad) {
  auto o = std::make_unique<Options>(lr);
  o->betas({beta1, beta2});
  o->eps(eps);
  o->weight_decay(weight_decay);
  o->amsgrad(amsgrad);
  return o;
}

template <typename State>
std::unique_ptr<::torch::optim::OptimizerParamState> adam_state(std::int64_t step, ::torch::Tensor exp_avg,
                                                                ::torch::Tensor exp_avg_sq, ::torch::Tensor max_exp_avg_sq) {
  auto s = std::make_unique<State>();
  s->step(step);
  s->exp_avg(std::move(exp_avg));
  s->exp_avg_sq(std::move(exp_avg_sq));
  if (max_exp_avg_sq.defined()) s->max_exp_avg_sq(std::move(max_exp_avg_sq));
  return s;
}

// An Adam or AdamW's options and one parameter's state, whichever of the two it is.
struct AdamView {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad;
};
template <typename Options>
AdamView adam_view(const ::torch::optim::OptimizerOptions& options) {
  const auto& o = static_cast<const Options&>(options);
  return {o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()), o.eps(), o.weight_decay(), o.amsgrad()};
}
struct AdamStateView {
  std::int64_t step;
  ::torch::Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
};
template <typename State>
AdamStateView adam_state_view(const ::torch::optim::OptimizerParamState& state) {
  const auto& s = static_cast<const State&>(state);
  return {s.step(), s.exp_avg(), s.exp_avg_sq(), s.max_exp_avg_sq()};
}

struct OptimizerPlan {
  OptimizerKind kind;
  struct Group {
    std::unique_ptr<::torch::optim::OptimizerOptions> options;
    bool amsgrad = false;
  };
  std::vector<Group> groups;
  struct State {
    ::torch::Tensor param;
    std::int64_t step = 0;
    // field name -> index into the reads
    std::map<std::string, std::size_t> tensors;
  };
  std::vector<State> states;            // params with state in the file
  std::vector<::torch::Tensor> cleared;  // params without: their libtorch state is dropped
  std::vector<std::size_t> reads;        // source indices
  std::vector<std::string> notes;
};

OptimizerPlan plan_optimizer(::torch::optim::Optimizer& optimizer, Source& source, const std::string& key,
                             const std::string& file, bool allow_conversion) {
  OptimizerPlan plan;
  plan.kind = optimizer_kind(optimizer, file);
  const bool adam = plan.kind != OptimizerKind::sgd;  // Adam or AdamW
  const auto* meta = child(source.metadata(), key);
  const auto* groups = meta ? child(*meta, "param_groups") : nullptr;
  if (!groups || !groups->is_array())
    fail(ErrorCode::invalid_argument, file, fmt::format("no optimizer state: no '{}.param_groups' in the file", key));
  auto& cxx_groups = optimizer.param_groups();
  if (groups->size() != cxx_groups.size())
    fail(ErrorCode::invalid_argument, file, fmt::format("optimizer: the file has {} param groups, the optimizer {}",
                                                        groups->size(), cxx_groups.size()));
  // The file's state tensors: "state.<id>.<field>".
  std::map<std::string, std::map<std::string, std::size_t>> file_state;
  const auto& infos = source.tensors();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].role != Role::extra || infos[i].section != key) continue;
    const auto& n = infos[i].name;
    const auto dot = n.find('.', 6);
    if (n.rfind("state.", 0) != 0 || dot == std::string::npos)
      fail(ErrorCode::unsupported, file, fmt::format("optimizer tensor '{}' is not per-parameter state", n));
    file_state[n.substr(6, dot - 6)][n.substr(dot + 1)] = i;
  }
  const auto* meta_state = child(*meta, "state");
  std::set<std::string> ids_seen;
  std::set<std::string> ignored;
  for (std::size_t g = 0; g < groups->size(); ++g) {
    const auto& group = (*groups)[g];
    const auto* params = child(group, "params");
    auto& cxx_params = cxx_groups[g].params();
    if (!params || !params->is_array())
      fail(ErrorCode::format, file, fmt::format("optimizer param_groups[{}]: no 'params' list", g));
    if (params->size() != cxx_params.size())
      fail(ErrorCode::invalid_argument, file, fmt::format("optimizer param_groups[{}]: the file has {} parameters, the optimizer {}",
                                                          g, params->size(), cxx_params.size()));
    if (boolean(group, "maximize", g, file, false))
      fail(ErrorCode::unsupported, file, fmt::format("optimizer param_groups[{}]: maximize=True (libtorch's optimizers lack it)", g));
    for (const char* choice : {"foreach", "capturable", "differentiable", "fused"})
      if (const auto* v = child(group, choice); v && !v->is_null() && !(v->is_boolean() && !v->get<bool>()))
        ignored.insert(choice);
    const char* other = adam ? "momentum" : "betas";
    if (child(group, other))
      fail(ErrorCode::invalid_argument, file, fmt::format("optimizer param_groups[{}] has '{}': the file's optimizer is not {}",
                                                          g, other, optimizer_name(plan.kind)));
    OptimizerPlan::Group pg;
    if (adam) {
      const auto* betas = child(group, "betas");
      if (!betas || !betas->is_array() || betas->size() != 2 || !(*betas)[0].is_number() || !(*betas)[1].is_number())
        fail(ErrorCode::format, file, fmt::format("optimizer param_groups[{}]: 'betas' is not two numbers", g));
      const auto make = plan.kind == OptimizerKind::adam ? adam_options<::torch::optim::AdamOptions>
                                                         : adam_options<::torch::optim::AdamWOptions>;
      pg.amsgrad = boolean(group, "amsgrad", g, file, false);
      pg.options = make(number(group, "lr", g, file), (*betas)[0].get<double>(), (*betas)[1].get<double>(),
                        number(group, "eps", g, file), number(group, "weight_decay", g, file), pg.amsgrad);
    } else {
      auto o = std::make_unique<::torch::optim::SGDOptions>(number(group, "lr", g, file));
      o->momentum(number(group, "momentum", g, file));
      o->dampening(number(group, "dampening", g, file));
      o->weight_decay(number(group, "weight_decay", g, file));
      o->nesterov(boolean(group, "nesterov", g, file, false));
      pg.options = std::move(o);
    }
    plan.groups.push_back(std::move(pg));
    for (std::size_t j = 0; j < params->size(); ++j) {
      const auto& idv = (*params)[j];
      if (!idv.is_number_integer())
        fail(ErrorCode::format, file, fmt::format("optimizer param_groups[{}].params[{}] is not an integer", g, j));
      const std::string id = std::to_string(idv.get<std::int64_t>());
      if (!ids_seen.insert(id).second)
        fail(ErrorCode::format, file, fmt::format("optimizer parameter {} is in two param groups", id));
      const auto& param = cxx_params[j];
      const auto* meta_param = meta_state ? child(*meta_state, id) : nullptr;
      const auto it = file_state.find(id);
      if (it == file_state.end() && (!meta_param || !child(*meta_param, "step"))) {
        plan.cleared.push_back(param);
        continue;
      }
      OptimizerPlan::State st;
      st.param = param;
      const std::set<std::string> allowed = adam ? std::set<std::string>{"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
                                                 : std::set<std::string>{"momentum_buffer"};
      if (it != file_state.end()) {
        for (const auto& [field, index] : it->second) {
          if (!allowed.count(field))
            fail(ErrorCode::invalid_argument, file, fmt::format("optimizer state {}: '{}' is not {} state", id, field,
                                                                optimizer_name(plan.kind)));
          const auto& info = infos[index];
          if (field == "step") continue;
          const std::string where = fmt::format("optimizer state {}.{} (param_groups[{}] parameter {})", id, field, g, j);
          if (info.shape != shape_of(param))
            fail(ErrorCode::invalid_argument, file, fmt::format("{}: shape {}, the parameter's {}", where,
                                                                shape_to_string(info.shape), shape_to_string(shape_of(param))));
          const auto t = to_torch_dtype(info.dtype);
          if (!t || (*t != param.scalar_type() && !allow_conversion))
            fail(ErrorCode::invalid_argument, file, fmt::format("{}: dtype {}, the parameter's {}", where,
                                                                dtype_name(info.dtype), torch_dtype_name(param.scalar_type())));
          st.tensors[field] = plan.reads.size();
          plan.reads.push_back(index);
        }
      }
      if (adam) {
        for (const char* need : {"exp_avg", "exp_avg_sq"})
          if (!st.tensors.count(need))
            fail(ErrorCode::format, file, fmt::format("optimizer state {}: no '{}'", id, need));
        if (plan.groups.back().amsgrad && !st.tensors.count("max_exp_avg_sq"))
          fail(ErrorCode::format, file, fmt::format("optimizer state {}: amsgrad without 'max_exp_avg_sq'", id));
        // The step: a float32 scalar tensor (torch >= 1.12) or a number (older).
        double step = -1;
        if (it != file_state.end() && it->second.count("step")) {
          const auto index = it->second.at("step");
          const auto& info = infos[index];
          if (info.shape.size() != 0 && !(info.shape.size() == 1 && info.shape[0] == 1))
            fail(ErrorCode::format, file, fmt::format("optimizer state {}.step: shape {}, not a scalar", id, shape_to_string(info.shape)));
          const auto value = wrap(source.read_checked(index, file), torch_dtype_or_throw(info.dtype, file, "optimizer step"));
          step = value.to(::torch::kFloat64).item<double>();
        } else if (const auto* s = child(*meta_param, "step"); s && s->is_number()) {
          step = s->get<double>();
        }
        if (!(step >= 0 && step <= 9.007199254740992e15 && step == static_cast<double>(static_cast<std::int64_t>(step))))
          fail(ErrorCode::unsupported, file, fmt::format("optimizer state {}: step is not a whole number >= 0", id));
        st.step = static_cast<std::int64_t>(step);
      }
      plan.states.push_back(std::move(st));
    }
  }
  for (const auto& [id, fields] : file_state)
    if (!ids_seen.count(id))
      fail(ErrorCode::invalid_argument, file, fmt::format("optimizer state {} belongs to no param group", id));
  for (const auto& choice : ignored)
    plan.notes.push_back(fmt::format("optimizer option '{}' (an implementation choice of Python's) is ignored", choice));
  return plan;
}

void apply_optimizer(::torch::optim::Optimizer& optimizer, OptimizerPlan& plan, const std::vector<Tensor>& values) {
  auto& groups = optimizer.param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) groups[g].set_options(std::move(plan.groups[g].options));
  auto& state = optimizer.state();
  for (const auto& p : plan.cleared) state.erase(state_key(p));
  auto tensor = [&](const OptimizerPlan::State& st, const char* field) -> ::torch::Tensor {
    const auto it = st.tensors.find(field);
    if (it == st.tensors.end()) return {};
    const Tensor& v = values[it->second];
    // Optimizer state is updated in place: it gets memory of its own (a writable tensor is shared).
    auto t = to_torch(v.is_writable() ? v : v.clone());
    return t.to(st.param.device(), st.param.scalar_type());
  };
  for (const auto& st : plan.states) {
    if (plan.kind != OptimizerKind::sgd) {
      const auto make = plan.kind == OptimizerKind::adam ? adam_state<::torch::optim::AdamParamState>
                                                         : adam_state<::torch::optim::AdamWParamState>;
      state[state_key(st.param)] = make(st.step, tensor(st, "exp_avg"), tensor(st, "exp_avg_sq"),
                                        tensor(st, "max_exp_avg_sq"));
    } else {
      auto buffer = tensor(st, "momentum_buffer");
      if (!buffer.defined()) {
        state.erase(state_key(st.param));
        continue;
      }
      auto s = std::make_unique<::torch::optim::SGDParamState>();
      s->momentum_buffer(buffer);
      state[state_key(st.param)] = std::move(s);
    }
  }
}

}  // namespace

// ---- dtypes -------------------------------------------------------------------------------------

std::optional<::torch::Dtype> to_torch_dtype(DType dtype) noexcept {
  switch (dtype) {
    case DType::float64: return ::torch::kFloat64;
    case DType::float32: return ::torch::kFloat32;
    case DType::float16: return ::torch::kFloat16;
    case DType::bfloat16: return ::torch::kBFloat16;
    case DType::int64: return ::torch::kInt64;
    case DType::int32: return ::torch::kInt32;
    case DType::int16: return ::torch::kInt16;
    case DType::int8: return ::torch::kInt8;
    case DType::uint8: return ::torch::kUInt8;
    case DType::bool_: return ::torch::kBool;
    case DType::complex64: return ::torch::kComplexFloat;
    case DType::complex128: return ::torch::kComplexDouble;
    case DType::float8_e4m3fn:
    case DType::float8_e5m2:
    case DType::uint16:
    case DType::uint32:
    case DType::uint64: return std::nullopt;
  }
  return std::nullopt;
}

std::optional<DType> from_torch_dtype(::torch::Dtype dtype) noexcept {
  for (const auto d : all_dtypes())
    if (const auto t = to_torch_dtype(d); t && *t == dtype) return d;
  return std::nullopt;
}

// ---- tensors ------------------------------------------------------------------------------------

::torch::Tensor to_torch(const Tensor& tensor, bool copy) {
  const auto dtype = torch_dtype_or_throw(tensor.dtype(), "", "to_torch");
  if (!copy && tensor.is_writable()) return wrap(tensor, dtype);
  auto out = ::torch::empty(std::vector<std::int64_t>(tensor.shape().begin(), tensor.shape().end()),
                            ::torch::TensorOptions().dtype(dtype));
  if (tensor.nbytes()) std::memcpy(out.data_ptr(), tensor.bytes().data(), tensor.nbytes());
  return out;
}

Tensor from_torch(const ::torch::Tensor& tensor) {
  if (!tensor.defined()) fail(ErrorCode::invalid_argument, "", "from_torch: an undefined tensor");
  if (tensor.is_quantized()) fail(ErrorCode::invalid_argument, "", "from_torch: quantized tensors are not supported");
  const auto dtype = from_torch_dtype(tensor.scalar_type());
  if (!dtype)
    fail(ErrorCode::invalid_argument, "", fmt::format("from_torch: dtype {} has no ckpt dtype", c10::toString(tensor.scalar_type())));
  auto t = tensor.detach();
  if (t.layout() != ::torch::kStrided) t = t.to_dense();
  if (!t.device().is_cpu()) t = t.cpu();
  t = t.resolve_conj().resolve_neg().contiguous();
  Shape shape = shape_of(t);
  if (t.numel() == 0) return Tensor::zeros(*dtype, std::move(shape));
  auto owner = std::make_shared<::torch::Tensor>(t);
  return Tensor::writable_view(*dtype, std::move(shape), static_cast<std::byte*>(t.data_ptr()), std::move(owner));
}

// ---- loading ------------------------------------------------------------------------------------

const char* problem_kind_name(Problem::Kind kind) noexcept {
  switch (kind) {
    case Problem::Kind::missing: return "missing";
    case Problem::Kind::unexpected: return "unexpected";
    case Problem::Kind::shape: return "shape";
    case Problem::Kind::dtype: return "dtype";
    case Problem::Kind::role: return "role";
  }
  return "?";
}

std::string LoadReport::summary() const {
  if (problems.empty()) return fmt::format("{} tensors loaded", loaded);
  // The count of each kind first: a renamed wrapper makes hundreds of lines of one kind.
  std::string kinds;
  for (const auto kind : {Problem::Kind::missing, Problem::Kind::unexpected, Problem::Kind::shape, Problem::Kind::dtype,
                          Problem::Kind::role}) {
    const auto n = std::count_if(problems.begin(), problems.end(), [&](const Problem& p) { return p.kind == kind; });
    if (n) kinds += fmt::format("{}{} {}", kinds.empty() ? "" : ", ", n, problem_kind_name(kind));
  }
  std::string out = fmt::format("{} problem{} ({}): ", problems.size(), problems.size() == 1 ? "" : "s", kinds);
  for (std::size_t i = 0; i < problems.size(); ++i) {
    if (i) out += "; ";
    out += fmt::format("{} '{}' ({})", problem_kind_name(problems[i].kind), problems[i].name, problems[i].detail);
  }
  return out;
}

LoadReport load(::torch::nn::Module& module, Source& source, const LoadOptions& options) {
  if (auto* reader = dynamic_cast<Reader*>(&source)) return load(module, *reader, options);
  return load_module(module_tensors(module), source, "", {}, options);
}

LoadReport load(::torch::nn::Module& module, Reader& reader, const LoadOptions& options) {
  const auto tensors = module_tensors(module);
  auto notes = reader.notes();
  const auto mapped = torch_layout(tensors, reader, notes);
  return load_module(tensors, mapped ? *mapped : static_cast<Source&>(reader), reader.path().string(), notes,
                     options);
}

LoadReport load(::torch::nn::Module& module, const StateDict& state, const LoadOptions& options) {
  StateDictSource source(state);
  return load(module, static_cast<Source&>(source), options);
}

LoadReport load(::torch::nn::Module& module, const std::filesystem::path& path, const LoadOptions& options) {
  const auto reader = open(path, read_options(options));
  return load(module, *reader, options);
}

// ---- saving -------------------------------------------------------------------------------------

StateDict state_dict(const ::torch::nn::Module& module, const SaveOptions& options) {
  const auto tensors = module_tensors(module);
  const auto non_persistent = buffer_names(tensors, options.non_persistent, "SaveOptions::non_persistent", "");
  StateDict state;
  for (const auto& t : tensors) {
    if (t.role == Role::parameter) state.add_parameter(t.name, from_torch(t.tensor));
    else state.add_buffer(t.name, from_torch(t.tensor), !non_persistent.count(t.name));
  }
  return state;
}

void save(const ::torch::nn::Module& module, const std::filesystem::path& path, const SaveOptions& options) {
  ckpt::save(state_dict(module, options), path, options.write);
}

// ---- training state -----------------------------------------------------------------------------

LoadReport load_training(::torch::nn::Module& module, ::torch::optim::Optimizer& optimizer,
                         const std::filesystem::path& path, const TrainingOptions& options, Metadata* metadata) {
  const auto reader = open(path, read_options(options.load));
  auto plan = checked_plan(module_tensors(module), *reader, path.string(), reader->notes(), options.load);
  auto opt_plan = plan_optimizer(optimizer, *reader, options.optimizer_key, path.string(), options.load.allow_dtype_conversion);
  const auto values = read_planned(*reader, plan_indices(plan), path.string());
  const auto opt_values = read_planned(*reader, opt_plan.reads, path.string());
  apply_module(plan, values, options.load.zero_copy);
  apply_optimizer(optimizer, opt_plan, opt_values);
  plan.report.notes.insert(plan.report.notes.end(), opt_plan.notes.begin(), opt_plan.notes.end());
  if (metadata) {
    *metadata = reader->metadata();
    metadata->erase(options.optimizer_key);
    metadata->erase(std::string(kTorchCheckpointKey));
    // ckpt's record that the file's roles were inferred belongs to the file, not to the user.
    metadata->erase(std::string(kRoleSourceKey));
  }
  return std::move(plan.report);
}

void add_optimizer(StateDict& state, const ::torch::optim::Optimizer& optimizer, const std::string& optimizer_key) {
  const auto kind = optimizer_kind(optimizer, "");
  const bool adam = kind != OptimizerKind::sgd;  // Adam or AdamW
  if (optimizer_key.empty() || optimizer_key == kParametersSection || optimizer_key == kBuffersSection ||
      optimizer_key.find('.') != std::string::npos)
    fail(ErrorCode::invalid_argument, "", fmt::format("add_optimizer: '{}' cannot be the optimizer's key", optimizer_key));
  // The optimizer's dict in the model's place would mix its "state" and "param_groups" into the
  // model's state_dict in a .pt (or put the model inside the optimizer's dict): refused.
  {
    const auto& meta = state.metadata();
    std::string model_key = "model";
    if (const auto* record = child(meta, kTorchCheckpointKey); record && record->is_object())
      if (const auto* mk = child(*record, "model_key"); mk && mk->is_string()) model_key = mk->get<std::string>();
    if (model_key == optimizer_key || model_key.rfind(optimizer_key + ".", 0) == 0)
      fail(ErrorCode::invalid_argument, "",
           fmt::format("add_optimizer: '{}' is the model's key (ckpt/pytorch.h kTorchCheckpointKey)", optimizer_key));
  }
  Metadata groups = Metadata::array();
  std::int64_t id = 0;
  const auto& cxx_state = optimizer.state();
  for (const auto& group : optimizer.param_groups()) {
    Metadata g = Metadata::object();
    Metadata ids = Metadata::array();
    if (adam) {
      // The keys torch 1.13 writes for each (AdamW's groups lack 'differentiable' and 'fused').
      const auto o = kind == OptimizerKind::adam ? adam_view<::torch::optim::AdamOptions>(group.options())
                                                 : adam_view<::torch::optim::AdamWOptions>(group.options());
      g["lr"] = o.lr;
      g["betas"] = {o.beta1, o.beta2};
      g["eps"] = o.eps;
      g["weight_decay"] = o.weight_decay;
      g["amsgrad"] = o.amsgrad;
      g["maximize"] = false;
      g["foreach"] = nullptr;
      g["capturable"] = false;
      if (kind == OptimizerKind::adam) {
        g["differentiable"] = false;
        g["fused"] = false;
      }
    } else {
      const auto& o = static_cast<const ::torch::optim::SGDOptions&>(group.options());
      g["lr"] = o.lr();
      g["momentum"] = o.momentum();
      g["dampening"] = o.dampening();
      g["weight_decay"] = o.weight_decay();
      g["nesterov"] = o.nesterov();
      g["maximize"] = false;
      g["foreach"] = nullptr;
      g["differentiable"] = false;
    }
    for (const auto& p : group.params()) {
      const auto name = std::to_string(id);
      ids.push_back(id++);
      const auto it = cxx_state.find(state_key(p));
      if (it == cxx_state.end()) continue;
      auto add = [&](const char* field, const ::torch::Tensor& t) {
        if (t.defined()) state.add_extra(optimizer_key, fmt::format("state.{}.{}", name, field), from_torch(t));
      };
      if (adam) {
        const auto s = kind == OptimizerKind::adam ? adam_state_view<::torch::optim::AdamParamState>(*it->second)
                                                   : adam_state_view<::torch::optim::AdamWParamState>(*it->second);
        // As torch 1.13 saves it: a float32 scalar.
        add("step", ::torch::tensor(static_cast<float>(s.step)));
        add("exp_avg", s.exp_avg);
        add("exp_avg_sq", s.exp_avg_sq);
        add("max_exp_avg_sq", s.max_exp_avg_sq);
      } else {
        add("momentum_buffer", static_cast<const ::torch::optim::SGDParamState&>(*it->second).momentum_buffer());
      }
    }
    g["params"] = std::move(ids);
    groups.push_back(std::move(g));
  }
  auto& meta = state.metadata();
  // Python's optimizer.load_state_dict needs the "state" dict even when it is empty.
  meta[optimizer_key] = {{"state", Metadata::object()}, {"param_groups", std::move(groups)}};
  auto& record = meta[std::string(kTorchCheckpointKey)];
  if (!record.is_object()) record = Metadata::object();
  if (!record.contains("model_key")) record["model_key"] = "model";
  auto& int_keys = record["int_keys"];
  if (!int_keys.is_array()) int_keys = Metadata::array();
  int_keys.push_back({optimizer_key, "state"});
  auto& tuples = record["tuples"];
  if (!tuples.is_array()) tuples = Metadata::array();
  if (adam)
    for (std::size_t g = 0; g < optimizer.param_groups().size(); ++g) tuples.push_back({optimizer_key, "param_groups", g, "betas"});
}

void save_training(const ::torch::nn::Module& module, const ::torch::optim::Optimizer& optimizer,
                   const std::filesystem::path& path, const Metadata& metadata, const SaveOptions& options) {
  auto state = state_dict(module, options);
  if (!metadata.is_object()) fail(ErrorCode::invalid_argument, path.string(), "save_training: metadata is not an object");
  for (const auto& [k, v] : metadata.items()) state.metadata()[k] = v;
  add_optimizer(state, optimizer, options.optimizer_key);
  ckpt::save(state, path, options.write);
}

}  // namespace ckpt::libtorch
