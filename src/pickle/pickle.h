// A restricted pickle reader: it executes nothing. A pickle becomes an inert graph of nodes:
// GLOBAL is a name, REDUCE/NEWOBJ/BUILD record a call that did not happen, persistent ids are
// kept as data. Later stages (the PyTorch reader) interpret the graph against an allow-list.
//
// Protocols 0-5 as Python writes them for data (the opcodes of pickletools that build values);
// out-of-band buffers and the extension registry are refused. Every length is checked against
// the bytes that remain, memo indices are looked up, never used to size anything, and the value
// stack, mark stack and nesting depth are capped (PickleLimits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace ckpt::detail::pickle {

using NodeId = std::uint32_t;
inline constexpr NodeId kNoNode = 0xffffffffu;

enum class Kind : std::uint8_t {
  none,
  boolean,
  integer,     // fits in int64 (value)
  big_integer, // bytes: little-endian two's complement (LONG1/LONG4 beyond 64 bits)
  floating,
  string,      // text (UTF-8)
  bytes,
  list,
  tuple,
  dict,
  set,         // set and frozenset
  global,      // text = "module\nname"; nothing is imported
  object,      // callable(args) that did not run: REDUCE or NEWOBJ; BUILD state; items appended
  persistent,  // a persistent id (BINPERSID/PERSID); first = the id
};

struct Node {
  Kind kind = Kind::none;
  std::int64_t integer = 0;  // boolean (0/1) and integer
  double floating = 0;
  std::string text;                                  // string, bytes, big_integer, global
  std::vector<NodeId> items;                         // list, tuple, set; object: list items appended
  std::vector<std::pair<NodeId, NodeId>> entries;    // dict; object: dict items set on it
  NodeId first = kNoNode;                            // object: the callable; persistent: the id
  NodeId args = kNoNode;                             // object: the argument tuple
  NodeId state = kNoNode;                            // object: what BUILD gave it
  bool newobj = false;                               // object: NEWOBJ (cls.__new__) rather than REDUCE
};

struct PickleLimits {
  std::size_t max_stack = 1u << 20;      // values on the stack at once
  std::size_t max_marks = 1u << 16;
  std::size_t max_nodes = 1u << 26;      // nodes in all
  std::size_t max_depth = 512;           // container nesting
};

// The graph of one pickle; nodes refer to each other by index, so shared and cyclic structures
// (which pickles can express) need no reference counting.
class Graph {
 public:
  const Node& at(NodeId id) const { return nodes_.at(id); }
  NodeId root() const noexcept { return root_; }
  std::size_t size() const noexcept { return nodes_.size(); }
  // "module.name" of a global node, or of the callable of an object node; empty otherwise.
  std::string global_name(NodeId id) const;

 private:
  friend class Parser;
  std::deque<Node> nodes_;
  NodeId root_ = kNoNode;
};

// Parses one pickle from `data`. Throws ckpt::Error (format) naming `where` (e.g. the file and
// the archive entry) and the byte offset of the opcode at fault. `consumed`, if given, receives
// the offset just past STOP (pickles may follow each other in a file).
Graph parse(std::span<const std::byte> data, const std::string& where, const PickleLimits& limits = {},
            std::size_t* consumed = nullptr);

// A JSON-like rendering for tests and diagnostics, depth-limited (so cycles terminate) and cut
// at about `max_chars` characters (ending "..."): shared references would otherwise expand a
// small pickle into an exponentially long text.
std::string render(const Graph& graph, NodeId id, std::size_t max_depth = 64, std::size_t max_chars = 200);

}  // namespace ckpt::detail::pickle
