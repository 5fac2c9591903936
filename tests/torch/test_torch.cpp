// ckpt::libtorch against real libtorch 1.13 and (the [peer] cases) real Python torch 1.13:
// tests/torch/run_torch_tests.py has Python write its files into CKPT_TORCH_WORK, runs the [peer]
// cases, which load them and write C++'s own, and then has Python judge those.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include "ckpt/ckpt.h"
#include "ckpt/convert.h"
#include "ckpt/torch.h"
#include "models.h"

// Debian's libtorch logs through glog, whose CHECK(condition) macro would replace Catch's.
#undef CHECK
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

namespace fs = std::filesystem;
namespace lt = ckpt::libtorch;

namespace {

fs::path work_dir() {
  const char* dir = std::getenv("CKPT_TORCH_WORK");
  REQUIRE(dir != nullptr);  // set by run_torch_tests.py, after Python wrote its files there
  return dir;
}

fs::path scratch(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("ckpt-torch-tests-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

// Every parameter and buffer of a module, cloned: to check that a failed load changed nothing.
std::vector<std::pair<std::string, torch::Tensor>> snapshot(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value().detach().clone());
  for (const auto& b : m.named_buffers()) out.emplace_back(b.key(), b.value().clone());
  return out;
}

bool same_as(const torch::nn::Module& m, const std::vector<std::pair<std::string, torch::Tensor>>& snap) {
  const auto now = snapshot(m);
  if (now.size() != snap.size()) return false;
  for (std::size_t i = 0; i < now.size(); ++i)
    if (now[i].first != snap[i].first || !torch::equal(now[i].second, snap[i].second)) return false;
  return true;
}

bool bit_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && torch::equal(a, b);
}

torch::Tensor value(const ckpt::StateDict& state, const std::string& name) {
  return lt::to_torch(state.at(name), /*copy=*/true);
}

void train_step(torch::nn::Module& m, torch::optim::Optimizer& opt, const std::function<torch::Tensor()>& forward) {
  m.train();
  opt.zero_grad();
  auto loss = forward().pow(2).mean();
  loss.backward();
  opt.step();
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& kind, torch::nn::Module& m) {
  if (kind == "adam")
    return std::make_unique<torch::optim::Adam>(
        m.parameters(), torch::optim::AdamOptions(1e-2).betas({0.8, 0.99}).eps(1e-6).weight_decay(1e-3));
  if (kind == "adamw")
    return std::make_unique<torch::optim::AdamW>(
        m.parameters(), torch::optim::AdamWOptions(1e-2).betas({0.85, 0.98}).eps(1e-7).weight_decay(5e-2));
  return std::make_unique<torch::optim::SGD>(
      m.parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).dampening(0.1).weight_decay(1e-3));
}

// One model of torch_models.py, through the four kinds of file Python saved.
template <typename Model>
void python_to_cxx(const std::string& name, const std::string& optimizer) {
  const auto dir = work_dir();
  const auto io = ckpt::load(dir / (name + ".io.pt"));
  const auto x_eval = value(io, "x_eval");
  const auto y_eval = value(io, "y_eval");
  lt::LoadOptions options;
  if (name == "buffer_net") options.non_persistent = {"seen"};
  for (const std::string kind : {"sd", "module", "script", "train"}) {
    for (const bool zero_copy : {false, true}) {
      DYNAMIC_SECTION(name << "." << kind << ".pt" << (zero_copy ? " zero-copy" : "")) {
        auto model = std::make_shared<Model>();
        options.zero_copy = zero_copy;
        const auto report = lt::load(*model, dir / (name + "." + kind + ".pt"), options);
        CHECK(report.ok());
        CHECK(report.loaded == model->named_parameters().size() + model->named_buffers().size() -
                                   (name == "buffer_net" && (kind == "sd" || kind == "train") ? 1 : 0));
        model->eval();
        torch::NoGradGuard no_grad;
        CHECK(bit_equal(model->forward(x_eval), y_eval));
      }
    }
  }
  // The state_dict converted by ckpt into other formats loads the same.
  for (const std::string ext : {".ckpt.h5", ".safetensors", ".npz"}) {
    DYNAMIC_SECTION(name << " through " << ext) {
      const auto out = scratch(name + ext);
      ckpt::ConvertOptions convert;
      if (ext == ".ckpt.h5") convert.write.compression = ckpt::Compression::zstd;
      ckpt::convert(dir / (name + ".sd.pt"), out, convert);
      auto model = std::make_shared<Model>();
      CHECK(lt::load(*model, out, options).ok());
      model->eval();
      torch::NoGradGuard no_grad;
      CHECK(bit_equal(model->forward(x_eval), y_eval));
    }
  }
  // The training checkpoint restores model and optimizer: one more step equals Python's.
  SECTION(name + ".train.pt: model and " + optimizer) {
    auto model = std::make_shared<Model>();
    auto opt = make_optimizer(optimizer, *model);
    // Different options here: the file's must win.
    for (auto& group : opt->param_groups()) group.options().set_lr(123.0);
    ckpt::Metadata meta;
    lt::TrainingOptions topts;
    topts.load = options;
    const auto report = lt::load_training(*model, *opt, dir / (name + ".train.pt"), topts, &meta);
    CHECK(report.ok());
    CHECK(meta["epoch"] == 2);
    const auto x_train = value(io, "x_train");
    train_step(*model, *opt, [&] { return model->forward(x_train); });
    const auto after = lt::state_dict(*model, {.non_persistent = options.non_persistent});
    std::size_t compared = 0;
    for (const auto& e : after.entries()) {
      if (e.role == ckpt::Role::buffer && !e.persistent) continue;
      INFO(e.name);
      CHECK(bit_equal(lt::to_torch(e.tensor, true), value(io, "after." + e.name)));
      ++compared;
    }
    CHECK(compared > 0);
  }
}

// The other way: C++ builds, trains two steps and saves; run_torch_tests.py has Python check.
template <typename Model>
void cxx_to_python(const std::string& name, const std::string& optimizer, std::vector<std::int64_t> shape) {
  const auto dir = work_dir();
  torch::manual_seed(1);
  auto model = std::make_shared<Model>();
  if constexpr (std::is_same_v<Model, mirror::SeqRNN>) model->sequence_length.fill_(5);
  auto opt = make_optimizer(optimizer, *model);
  const auto x_train = torch::randn(shape), x_next = torch::randn(shape), x_eval = torch::randn(shape);
  train_step(*model, *opt, [&] { return model->forward(x_train); });
  train_step(*model, *opt, [&] { return model->forward(x_next); });
  model->eval();
  torch::Tensor y_eval;
  {
    torch::NoGradGuard no_grad;
    y_eval = model->forward(x_eval);
  }
  lt::SaveOptions save;
  if (name == "buffer_net") save.non_persistent = {"seen"};
  lt::save(*model, dir / ("cxx_" + name + ".sd.pt"), save);
  lt::save_training(*model, *opt, dir / ("cxx_" + name + ".train.pt"), {{"epoch", 2}}, save);
  train_step(*model, *opt, [&] { return model->forward(x_train); });
  ckpt::StateDict io;
  io.add_parameter("x_eval", lt::from_torch(x_eval));
  io.add_parameter("y_eval", lt::from_torch(y_eval));
  io.add_parameter("x_train", lt::from_torch(x_train));
  const auto after = lt::state_dict(*model, save);
  for (const auto& e : after.entries())
    if (e.role == ckpt::Role::parameter || e.persistent) io.add_parameter("after." + e.name, e.tensor);
  ckpt::save(io, dir / ("cxx_" + name + ".io.pt"));
  // And C++ reads its own training checkpoint back the same.
  auto again = std::make_shared<Model>();
  auto opt2 = make_optimizer(optimizer, *again);
  lt::TrainingOptions topts;
  topts.load.non_persistent = save.non_persistent;
  CHECK(lt::load_training(*again, *opt2, dir / ("cxx_" + name + ".train.pt"), topts).ok());
}

}  // namespace

TEST_CASE("Python's files load into C++ modules with the same outputs", "[peer]") {
  torch::set_num_threads(1);
  python_to_cxx<mirror::BufferNet>("buffer_net", "adam");
  python_to_cxx<mirror::SeqRNN>("seq_rnn", "adam");
  python_to_cxx<mirror::LSTMInit>("lstm_init", "sgd");
  python_to_cxx<mirror::ResNetish>("resnetish", "adamw");
}

TEST_CASE("A Flax file mapped from Python's state_dict loads into the C++ module", "[peer]") {
  torch::set_num_threads(1);
  const auto dir = work_dir();
  const auto flax = scratch("resnetish.msgpack");
  ckpt::ConvertOptions convert;
  convert.layout = ckpt::LayoutOptions{};
  convert.layout->target = ckpt::Layout::flax;
  ckpt::convert(dir / "resnetish.sd.pt", flax, convert);
  auto model = std::make_shared<mirror::ResNetish>();
  const auto report = lt::load(*model, flax);
  CHECK(report.ok());
  const auto io = ckpt::load(dir / "resnetish.io.pt");
  model->eval();
  torch::NoGradGuard no_grad;
  CHECK(bit_equal(model->forward(value(io, "x_eval")), value(io, "y_eval")));
}

TEST_CASE("C++ trains and saves for Python", "[peer]") {
  torch::set_num_threads(1);
  cxx_to_python<mirror::BufferNet>("buffer_net", "adam", {5, 4});
  cxx_to_python<mirror::SeqRNN>("seq_rnn", "adam", {3, 8, 3});
  cxx_to_python<mirror::LSTMInit>("lstm_init", "sgd", {3, 7, 3});
  cxx_to_python<mirror::ResNetish>("resnetish", "adamw", {2, 3, 6, 6});
}

TEST_CASE("A strict load that fails names every problem and changes nothing", "[torch]") {
  mirror::ResNetish source;
  const auto good = lt::state_dict(source);
  ckpt::StateDict bad;
  for (const auto& e : good.entries()) {
    auto tensor = e.tensor.clone();
    if (e.name == "fc.weight") {
      bad.add_parameter("head.weight", tensor);  // a renamed layer
    } else if (e.name == "conv1.weight") {
      bad.add_parameter(e.name, ckpt::Tensor::zeros(ckpt::DType::float32, {8, 3, 5, 5}));  // a wrong shape
    } else if (e.name == "bn1.running_mean") {
      bad.add_parameter(e.name, tensor);  // a buffer saved as a parameter
    } else if (e.name == "block.bn1.running_var") {
      bad.add_buffer(e.name, ckpt::Tensor::zeros(ckpt::DType::float64, {8}));  // another dtype
    } else {
      bad.add(e, tensor);
    }
  }
  const auto path = scratch("bad.ckpt.h5");
  ckpt::save(bad, path);
  mirror::ResNetish target;
  const auto before = snapshot(target);
  const auto fc_before = target.fc->weight.detach().clone();
  try {
    lt::load(target, path);
    FAIL("the strict load did not throw");
  } catch (const ckpt::Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.code() == ckpt::ErrorCode::invalid_argument);
    CHECK(what.find(path.string() + ": cannot load into the module: 5 problems (1 missing, 1 unexpected, 1 shape, 1 dtype, 1 role): ") == 0);
    CHECK(what.find("missing 'fc.weight' (module parameter float32 [4, 8])") != std::string::npos);
    CHECK(what.find("unexpected 'head.weight' (file parameter float32 [4, 8])") != std::string::npos);
    CHECK(what.find("shape 'conv1.weight' (file [8, 3, 5, 5], module [8, 3, 3, 3])") != std::string::npos);
    CHECK(what.find("role 'bn1.running_mean' (file parameter, module buffer)") != std::string::npos);
    CHECK(what.find("dtype 'block.bn1.running_var' (file float64, module float32)") != std::string::npos);
    CHECK(what.find('\n') == std::string::npos);
  }
  CHECK(same_as(target, before));

  SECTION("non-strict: the report lists them, the rest is loaded") {
    lt::LoadOptions options;
    options.strict = false;
    const auto report = lt::load(target, path, options);
    CHECK(report.problems.size() == 5);
    CHECK(report.loaded == before.size() - 4);
    CHECK(torch::equal(target.block->bn2->weight, source.block->bn2->weight));
    CHECK(torch::equal(target.fc->weight, fc_before));  // not in the file: unchanged
  }
  SECTION("dtype conversion when allowed") {
    lt::LoadOptions options;
    options.strict = false;
    options.allow_dtype_conversion = true;
    const auto report = lt::load(target, path, options);
    CHECK(report.problems.size() == 4);
    CHECK(target.block->bn1->running_var.scalar_type() == torch::kFloat32);
    CHECK(torch::equal(target.block->bn1->running_var, torch::zeros({8})));
  }
  SECTION("a plain state_dict's roles are only inferred: a difference is a note") {
    ckpt::StateDict plain;
    for (const auto& e : good.entries()) {
      if (e.name == "bn1.running_mean") plain.add_parameter(e.name, e.tensor);
      else plain.add(e, e.tensor);
    }
    plain.set_role_source(ckpt::RoleSource::heuristic);
    const auto report = lt::load(target, plain);
    CHECK(report.ok());
    REQUIRE(report.notes.size() == 1);
    CHECK(report.notes[0].find("bn1.running_mean") != std::string::npos);
  }
}

TEST_CASE("A load whose data fails its checksum changes nothing", "[torch]") {
  mirror::BufferNet source;
  source.offset.fill_(3.0);
  const auto path = scratch("flip.ckpt.h5");
  lt::save(source, path);
  std::uint64_t offset = 0;
  {
    auto reader = ckpt::open(path);
    const auto index = reader->find("fc2.weight");
    reader->read(index);
    const auto span = reader->file_span(index);
    REQUIRE(span);
    offset = span->offset;
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.read(&c, 1);
    c ^= 1;
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(&c, 1);
  }
  mirror::BufferNet target;
  const auto before = snapshot(target);
  for (const bool zero_copy : {false, true}) {
    lt::LoadOptions options;
    options.zero_copy = zero_copy;
    try {
      lt::load(target, path, options);
      FAIL("a flipped byte was loaded");
    } catch (const ckpt::Error& e) {
      CHECK(e.code() == ckpt::ErrorCode::integrity);
    }
    CHECK(same_as(target, before));
  }
}

TEST_CASE("Tensor bridges for every dtype both sides have", "[torch]") {
  for (const auto dtype : ckpt::all_dtypes()) {
    const auto tdtype = lt::to_torch_dtype(dtype);
    auto t = ckpt::Tensor::uninitialized(dtype, {2, 3});
    for (std::size_t i = 0; i < t.nbytes(); ++i)
      t.mutable_bytes()[i] = std::byte(dtype == ckpt::DType::bool_ ? (i & 1) : (i * 37 + 11));
    if (!tdtype) {
      CHECK_THROWS_AS(lt::to_torch(t), ckpt::Error);
      continue;
    }
    CHECK(lt::from_torch_dtype(*tdtype) == dtype);
    auto shared = lt::to_torch(t);
    CHECK(shared.scalar_type() == *tdtype);
    CHECK(shared.data_ptr() == static_cast<const void*>(t.bytes().data()));  // zero-copy
    const auto back = lt::from_torch(shared);
    CHECK(back.equals(t));
    CHECK(back.bytes().data() == t.bytes().data());  // zero-copy the other way too
    auto copied = lt::to_torch(t, /*copy=*/true);
    CHECK(copied.data_ptr() != static_cast<const void*>(t.bytes().data()));
    CHECK(lt::from_torch(copied).equals(t));
  }
  SECTION("in-place writes through torch are seen by the ckpt tensor, and it keeps the memory alive") {
    auto t = ckpt::Tensor::zeros(ckpt::DType::float32, {4});
    auto x = lt::to_torch(t);
    x.add_(2.5);
    CHECK(t.as<float>()[3] == 2.5f);
    t = ckpt::Tensor();  // the torch tensor still holds the memory
    CHECK(x.sum().item<float>() == 10.0f);
  }
  SECTION("a read-only view is copied") {
    auto owner = std::make_shared<std::vector<float>>(6, 1.5f);
    const auto view = ckpt::Tensor::view(ckpt::DType::float32, {6}, reinterpret_cast<const std::byte*>(owner->data()), owner);
    auto x = lt::to_torch(view);
    CHECK(x.data_ptr() != static_cast<const void*>(owner->data()));
    x.fill_(0);
    CHECK((*owner)[0] == 1.5f);
  }
  SECTION("strides, offsets, sparse and conjugate views come out contiguous") {
    const auto base = torch::arange(24, torch::kFloat64).reshape({2, 3, 4});
    const auto strided = base.transpose(0, 2).slice(1, 1, 3);
    const auto c = lt::from_torch(strided);
    CHECK(c.shape() == ckpt::Shape{4, 2, 2});
    CHECK(torch::equal(lt::to_torch(c, true), strided));
    const auto sparse = torch::eye(3).to_sparse();
    CHECK(torch::equal(lt::to_torch(lt::from_torch(sparse), true), torch::eye(3)));
    const auto z = torch::complex(torch::ones({2}), torch::full({2}, 2.0)).conj();
    CHECK(torch::equal(lt::to_torch(lt::from_torch(z), true), z.resolve_conj()));
    CHECK(lt::from_torch(torch::ones({0, 3})).shape() == ckpt::Shape{0, 3});
    CHECK_THROWS_AS(lt::from_torch(torch::Tensor()), ckpt::Error);
  }
}

TEST_CASE("Zero-copy loads never write the file", "[torch]") {
  mirror::ResNetish source;
  const auto path = scratch("zc.ckpt.h5");
  lt::save(source, path);
  const auto read_file = [&] {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const auto bytes = read_file();
  mirror::ResNetish target;
  auto opt = torch::optim::SGD(target.parameters(), torch::optim::SGDOptions(0.1));
  lt::LoadOptions options;
  options.zero_copy = true;
  CHECK(lt::load(target, path, options).ok());
  CHECK(torch::equal(target.fc->weight, source.fc->weight));
  // The optimizer made before the load trains the loaded values.
  train_step(target, opt, [&] { return target.forward(torch::ones({1, 3, 6, 6})); });
  CHECK(!torch::equal(target.fc->weight, source.fc->weight));
  CHECK(read_file() == bytes);
}

TEST_CASE("libtorch's own torch::save archives are read with their roles and values", "[torch]") {
  mirror::ResNetish model;
  model.bn1->running_mean.fill_(0.25);
  const auto path = scratch("cxx_archive.pt");
  torch::save(std::make_shared<mirror::ResNetish>(model), path.string());
  auto reader = ckpt::open(path);
  CHECK(reader->role_source() == ckpt::RoleSource::torchscript);
  const auto expected = lt::state_dict(model);
  REQUIRE(reader->tensors().size() == expected.size());
  for (const auto& e : expected.entries()) {
    INFO(e.name);
    const auto index = reader->find(e.name);
    CHECK(reader->tensors()[index].role == e.role);
    CHECK(reader->read(index).equals(e.tensor));
  }
  // And converted to any format, they load into a module again.
  const auto st = scratch("cxx_archive.safetensors");
  ckpt::convert(path, st);
  mirror::ResNetish again;
  CHECK(lt::load(again, st).ok());
  CHECK(torch::equal(again.bn1->running_mean, model.bn1->running_mean));
  CHECK(torch::equal(again.block->conv2->weight, model.block->conv2->weight));
}

TEST_CASE("Optimizer state that cannot be mapped is refused before anything changes", "[torch]") {
  mirror::BufferNet model;
  auto adam = torch::optim::Adam(model.parameters(), torch::optim::AdamOptions(0.1));
  train_step(model, adam, [&] { return model.forward(torch::ones({2, 4})); });
  const auto path = scratch("adam.train.pt");
  lt::save_training(model, adam, path, {{"epoch", 1}}, {.non_persistent = {"seen"}});
  lt::TrainingOptions topts;
  topts.load.non_persistent = {"seen"};

  mirror::BufferNet target;
  const auto before = snapshot(target);
  auto sgd = torch::optim::SGD(target.parameters(), torch::optim::SGDOptions(0.1));
  CHECK_THROWS_WITH(lt::load_training(target, sgd, path, topts),
                    Catch::Contains("param_groups[0] has 'betas': the file's optimizer is not SGD"));
  CHECK(same_as(target, before));
  auto partial = torch::optim::Adam(std::vector<torch::Tensor>{target.fc1->weight}, torch::optim::AdamOptions(0.1));
  CHECK_THROWS_WITH(lt::load_training(target, partial, path, topts),
                    Catch::Contains("the file has 4 parameters, the optimizer 1"));
  CHECK(same_as(target, before));
  auto good = torch::optim::Adam(target.parameters(), torch::optim::AdamOptions(0.5));
  CHECK(lt::load_training(target, good, path, topts).ok());
  CHECK(static_cast<torch::optim::AdamOptions&>(good.param_groups()[0].options()).lr() == 0.1);
  CHECK(torch::equal(target.offset, model.offset));
}

TEST_CASE("load_training's metadata holds the user's entries only, and add_optimizer keeps out of the model's key", "[torch]") {
  mirror::BufferNet model;
  auto sgd = torch::optim::SGD(model.parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  train_step(model, sgd, [&] { return model.forward(torch::ones({2, 4})); });
  // A training checkpoint whose roles were inferred (as one converted from Python's plain dicts).
  auto state = lt::state_dict(model);
  lt::add_optimizer(state, sgd);
  state.metadata()["epoch"] = 4;
  state.set_role_source(ckpt::RoleSource::heuristic);
  const auto path = scratch("inferred.train.ckpt.h5");
  ckpt::save(state, path);
  REQUIRE(ckpt::open(path)->role_source() == ckpt::RoleSource::heuristic);
  mirror::BufferNet target;
  auto sgd2 = torch::optim::SGD(target.parameters(), torch::optim::SGDOptions(0.5));
  ckpt::Metadata meta;
  CHECK(lt::load_training(target, sgd2, path, {}, &meta).ok());
  CHECK(meta == ckpt::Metadata{{"epoch", 4}});

  auto again = lt::state_dict(model);
  CHECK_THROWS_WITH(lt::add_optimizer(again, sgd, "model"), Catch::Contains("'model' is the model's key"));
  CHECK(again.metadata().empty());
  again.metadata()[std::string(ckpt::kTorchCheckpointKey)] = {{"model_key", "net.weights"}};
  CHECK_THROWS_WITH(lt::add_optimizer(again, sgd, "net"), Catch::Contains("'net' is the model's key"));
  CHECK_NOTHROW(lt::add_optimizer(again, sgd, "model"));
}

TEST_CASE("An open Flax Reader is mapped to torch's layout, and option typos name the file", "[torch]") {
  mirror::ResNetish source;
  source.bn1->running_var.fill_(2.0);
  const auto pt = scratch("layout.pt");
  lt::save(source, pt);
  const auto flax = scratch("layout.msgpack");
  ckpt::ConvertOptions convert;
  convert.layout = ckpt::LayoutOptions{};
  ckpt::convert(pt, flax, convert);
  auto reader = ckpt::open(flax);
  mirror::ResNetish target;
  const auto report = lt::load(target, *reader);
  CHECK(report.ok());
  CHECK(torch::equal(target.bn1->running_var, source.bn1->running_var));
  CHECK(torch::equal(target.fc->weight, source.fc->weight));

  lt::LoadOptions typo;
  typo.non_persistent = {"nosuch"};
  CHECK_THROWS_WITH(lt::load(target, pt, typo),
                    pt.string() + ": LoadOptions::non_persistent: 'nosuch' is not a buffer of the module");
}

TEST_CASE("A wrapper's prefix: names are looked up as prefix + name", "[torch]") {
  mirror::LSTMInit source;
  source.init_cell.fill_(0.5);
  ckpt::StateDict wrapped;
  for (const auto& e : lt::state_dict(source).entries()) {
    auto info = static_cast<const ckpt::EntryInfo&>(e);
    info.name = "module." + e.name;
    wrapped.add(info, e.tensor);
  }
  const auto path = scratch("wrapped.pt");
  ckpt::save(wrapped, path);
  mirror::LSTMInit target;
  lt::LoadOptions options;
  options.prefix = "module.";
  CHECK(lt::load(target, path, options).ok());
  CHECK(torch::equal(target.init_cell, source.init_cell));
  CHECK(torch::equal(target.lstm->named_parameters()["weight_hh_l0"], source.lstm->named_parameters()["weight_hh_l0"]));
  // Without the prefix nothing matches, and the strict load names them all.
  mirror::LSTMInit other;
  CHECK_THROWS_WITH(lt::load(other, path), Catch::Contains("16 problems (8 missing, 8 unexpected)"));
}
