// The restricted pickle reader against pickles Python wrote (tests/peers/make_pickles.py) and
// hand-made hostile ones: what each becomes, and that nothing runs.
#include <catch2/catch.hpp>

#include "helpers.h"
#include "pickle/pickle.h"

using namespace ckpt;
namespace pk = ckpt::detail::pickle;

namespace {

std::string render_file(const std::string& path) {
  const std::string bytes = test::read_file(path);
  const auto graph = pk::parse(std::as_bytes(std::span(bytes)), path);
  return pk::render(graph, graph.root());
}

std::string error_of(const std::string& bytes, const pk::PickleLimits& limits = {}) {
  try {
    (void)pk::parse(std::as_bytes(std::span(bytes)), "x.pkl", limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("pickle: values of protocols 2, 4 and 5 as Python wrote them", "[pickle]") {
  for (const char* file : {"pickle/values_p2.pkl", "pickle/values_p4.pkl", "pickle/values_p5.pkl"}) {
    INFO(file);
    const std::string r = render_file(file);
    CHECK_THAT(r, Catch::Matchers::StartsWith("{'a': 1, 'b': [1.5, None, True], 'c': (1, 2, 3), 'd': "));
    CHECK_THAT(r, Catch::Matchers::EndsWith(", 'big': <int of 9 bytes>, 'neg': -5, 'long': 1099511627776, "
                                            "'s': 'h\xc3\xa9llo'}"));
  }
  // Protocol 2 has no bytes opcode: b"xy" is a call of _codecs.encode, recorded, not made.
  CHECK_THAT(render_file("pickle/values_p2.pkl"), Catch::Matchers::Contains("'d': <call _codecs.encode('xy', 'latin1')>"));
  CHECK_THAT(render_file("pickle/values_p4.pkl"), Catch::Matchers::Contains("'d': b'xy'"));
}

TEST_CASE("pickle: shared values, OrderedDict, sets", "[pickle]") {
  CHECK(render_file("pickle/shared_p2.pkl") == "{'x': [1], 'y': [1]}");
  CHECK(render_file("pickle/ordered_p2.pkl") ==
        "<call collections.OrderedDict() entries={'w': 1, 'v': 2}>");
  CHECK(render_file("pickle/set_p4.pkl") == "{'s': {7}, 'f': {8}}");
  const std::string bytes = test::read_file("pickle/shared_p2.pkl");
  const auto g = pk::parse(std::as_bytes(std::span(bytes)), "shared");
  const auto& root = g.at(g.root());
  CHECK(root.entries[0].second == root.entries[1].second);  // one list, referenced twice
}

TEST_CASE("pickle: hostile globals are names, never calls", "[pickle][hostile]") {
  CHECK(render_file("pickle/hostile_system_p2.pkl") == "{'payload': <call posix.system('echo pwned')>}");
  CHECK(render_file("pickle/hostile_eval_p4.pkl") == R"([<call builtins.eval('__import__(\'os\').getcwd()')>])");
  const std::string bytes = test::read_file("pickle/hostile_system_p2.pkl");
  const auto g = pk::parse(std::as_bytes(std::span(bytes)), "hostile");
  CHECK(g.global_name(g.at(g.root()).entries[0].second) == "posix.system");
}

TEST_CASE("pickle: malformed and bomb pickles are refused with the place", "[pickle][hostile]") {
  // (Hex escapes are split from what follows: "\x02" "a", not "\x02a".)
  CHECK(error_of("\x80\x02") == "x.pkl: pickle opcode at offset 2: the pickle ends without STOP");
  CHECK(error_of(std::string("\x80\x02" "X\xff\x00\x00\x00" "ab.", 10)) ==
        "x.pkl: pickle opcode at offset 2: needs 255 bytes, 3 remain");
  CHECK(error_of("\x80\x02" "h\x05.") == "x.pkl: pickle opcode at offset 2: memo index 5 was never stored");
  CHECK(error_of("\x80\x02" "a.") == "x.pkl: pickle opcode at offset 2: stack underflow");
  CHECK(error_of("\x80\x02" "NN.") == "x.pkl: pickle opcode at offset 4: STOP with 2 values on the stack");
  CHECK(error_of("\x80\x02\x82\x01.") ==
        "x.pkl: pickle opcode at offset 2: opcode 0x82 is not supported (a data pickle does not need it)");
  CHECK(error_of("\x80\x02" "NNb.") == "x.pkl: pickle opcode at offset 4: BUILD on a value that is not an object");
  // A huge memo index costs nothing (no table sized by it).
  CHECK(error_of("\x80\x02" "Nr\xff\xff\xff\xff" "j\xff\xff\xff\xff" "0.") == "no error");
  // Nesting: 600 lists inside each other.
  const std::string deep = "\x80\x02" + std::string(600, ']') + std::string(599, 'a') + ".";
  CHECK(error_of(deep) == "x.pkl: pickle opcode at offset 1114: values nested deeper than 512");
  // A list that contains itself terminates when rendered.
  const std::string cyclic("\x80\x02" "]q\x00" "h\x00" "a.", 9);
  const auto g = pk::parse(std::as_bytes(std::span(cyclic)), "cyclic");
  CHECK(pk::render(g, g.root(), 4) == "[[[[...]]]]");
  // Stack bomb.
  pk::PickleLimits small;
  small.max_stack = 1000;
  CHECK(error_of("\x80\x02N" + std::string(2000, '2') + ".", small) ==
        "x.pkl: pickle opcode at offset 1002: more than 1000 values on the stack");
}

TEST_CASE("pickle: rendering is cut short whatever shared references expand to", "[pickle][hostile]") {
  // [inner] * 2000 where inner is one list of 2000 integers: 4 million values at depth 2, from a
  // pickle of a few kilobytes (memo gets).
  using namespace std::string_literals;
  std::string p = "\x80\x02]q\x00("s;  // inner: memo 0
  for (int i = 0; i < 2000; ++i) p += "K\x07"s;
  p += "e0]("s;  // APPENDS, POP inner, the outer list
  for (int i = 0; i < 2000; ++i) p += "h\x00"s;
  p += "e."s;
  const auto g = pk::parse(std::as_bytes(std::span(p)), "wide");
  REQUIRE(g.size() < 5000);
  const std::string text = pk::render(g, g.root(), 3);
  CHECK(text.size() == 203);
  CHECK_THAT(text, Catch::Matchers::StartsWith("[[7, 7, 7") && Catch::Matchers::EndsWith("..."));
  CHECK(pk::render(g, g.root(), 3, 20) == "[[7, 7, 7, 7, 7, 7, ...");
}
