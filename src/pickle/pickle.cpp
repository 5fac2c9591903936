#include "pickle/pickle.h"

#include <bit>
#include <cstring>
#include <unordered_map>

#include "util/bytes.h"

namespace ckpt::detail::pickle {

std::string Graph::global_name(NodeId id) const {
  if (id == kNoNode) return {};
  const Node* node = &at(id);
  if (node->kind == Kind::object && node->first != kNoNode) node = &at(node->first);
  if (node->kind != Kind::global) return {};
  std::string name = node->text;
  const auto newline = name.find('\n');
  if (newline != std::string::npos) name[newline] = '.';
  return name;
}

class Parser {
 public:
  Parser(std::span<const std::byte> data, const std::string& where, const PickleLimits& limits)
      : data_(data), where_(where), limits_(limits) {}

  Graph run(std::size_t* consumed) {
    while (true) {
      op_at_ = pos_;
      if (pos_ >= data_.size()) bad("the pickle ends without STOP");
      const auto op = static_cast<unsigned char>(data_[pos_++]);
      if (op == '.') {  // STOP
        if (stack_.size() != 1 || !marks_.empty()) bad("STOP with {} values on the stack", stack_.size());
        graph_.root_ = stack_.back();
        if (consumed) *consumed = pos_;
        return std::move(graph_);
      }
      step(op);
    }
  }

 private:
  template <typename... Args>
  [[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) {
    fail(ErrorCode::format, where_, "pickle opcode at offset {}: {}", op_at_,
         fmt::format(f, std::forward<Args>(args)...));
  }

  std::span<const std::byte> take(std::uint64_t n) {
    if (n > data_.size() - pos_) bad("needs {} bytes, {} remain", n, data_.size() - pos_);
    auto out = data_.subspan(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return out;
  }
  template <typename T>
  T take_le() {
    return load_le<T>(take(sizeof(T)).data());
  }
  std::string take_string(std::uint64_t n) {
    auto b = take(n);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  std::string take_line() {
    const auto* begin = reinterpret_cast<const char*>(data_.data()) + pos_;
    const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', data_.size() - pos_));
    if (!nl) bad("a text argument has no end of line");
    std::string line(begin, nl);
    pos_ += line.size() + 1;
    return line;
  }

  NodeId add(Node node, std::uint16_t depth = 0) {
    if (graph_.nodes_.size() >= limits_.max_nodes) bad("more than {} values", limits_.max_nodes);
    graph_.nodes_.push_back(std::move(node));
    depth_.push_back(depth);
    return static_cast<NodeId>(graph_.nodes_.size() - 1);
  }
  NodeId scalar(Kind kind, std::int64_t value = 0) {
    Node n;
    n.kind = kind;
    n.integer = value;
    return add(std::move(n));
  }
  NodeId text_node(Kind kind, std::string text) {
    Node n;
    n.kind = kind;
    n.text = std::move(text);
    return add(std::move(n));
  }
  Node& node(NodeId id) { return graph_.nodes_[id]; }

  // `parent` now contains `child`: depth grows, capped.
  void nest(NodeId parent, NodeId child) {
    const std::size_t d = static_cast<std::size_t>(depth_[child]) + 1;
    if (d > limits_.max_depth) bad("values nested deeper than {}", limits_.max_depth);
    if (d > depth_[parent]) depth_[parent] = static_cast<std::uint16_t>(d);
  }
  NodeId container(Kind kind, std::vector<NodeId> items) {
    Node n;
    n.kind = kind;
    n.items = std::move(items);
    const NodeId id = add(std::move(n));
    for (NodeId child : graph_.nodes_[id].items) nest(id, child);
    return id;
  }

  void push(NodeId id) {
    if (stack_.size() >= limits_.max_stack) bad("more than {} values on the stack", limits_.max_stack);
    stack_.push_back(id);
  }
  NodeId pop() {
    const std::size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) bad("stack underflow");
    const NodeId id = stack_.back();
    stack_.pop_back();
    return id;
  }
  NodeId& top() {
    const std::size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) bad("stack underflow");
    return stack_.back();
  }
  std::vector<NodeId> pop_mark() {
    if (marks_.empty()) bad("no MARK to pop to");
    const std::size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<NodeId> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }

  void append(NodeId target, NodeId value) {
    Node& t = node(target);
    if (t.kind != Kind::list && t.kind != Kind::object) bad("APPEND to a value that is not a list");
    t.items.push_back(value);
    nest(target, value);
  }
  void set_item(NodeId target, NodeId key, NodeId value) {
    Node& t = node(target);
    if (t.kind != Kind::dict && t.kind != Kind::object) bad("SETITEM on a value that is not a dict");
    t.entries.emplace_back(key, value);
    nest(target, key);
    nest(target, value);
  }

  void memo_put(std::uint64_t index) {
    const NodeId value = top();
    memo_[index] = value;  // a map: a huge index costs nothing
  }
  void memo_get(std::uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) bad("memo index {} was never stored", index);
    push(it->second);
  }

  NodeId object(NodeId callable, NodeId args, bool newobj) {
    Node n;
    n.kind = Kind::object;
    n.first = callable;
    n.args = args;
    n.newobj = newobj;
    const NodeId id = add(std::move(n));
    nest(id, callable);
    nest(id, args);
    return id;
  }

  NodeId integer_from_bytes(std::span<const std::byte> b) {
    if (b.size() <= 8) {
      std::uint64_t v = 0;
      for (std::size_t i = 0; i < b.size(); ++i) v |= static_cast<std::uint64_t>(b[i]) << (8 * i);
      if (!b.empty() && b.size() < 8 && (static_cast<unsigned>(b.back()) & 0x80))
        v |= ~std::uint64_t{0} << (8 * b.size());  // sign-extend
      return scalar(Kind::integer, static_cast<std::int64_t>(v));
    }
    return text_node(Kind::big_integer, std::string(reinterpret_cast<const char*>(b.data()), b.size()));
  }

  void step(unsigned char op) {
    switch (op) {
      case 0x80: take(1); return;                  // PROTO
      case 0x95: take(8); return;                  // FRAME: framing is only a hint
      case '(':                                    // MARK
        if (marks_.size() >= limits_.max_marks) bad("more than {} marks", limits_.max_marks);
        marks_.push_back(stack_.size());
        return;
      case 'N': push(scalar(Kind::none)); return;
      case 0x88: push(scalar(Kind::boolean, 1)); return;  // NEWTRUE
      case 0x89: push(scalar(Kind::boolean, 0)); return;  // NEWFALSE
      case 'J': push(scalar(Kind::integer, take_le<std::int32_t>())); return;   // BININT
      case 'K': push(scalar(Kind::integer, take_le<std::uint8_t>())); return;   // BININT1
      case 'M': push(scalar(Kind::integer, take_le<std::uint16_t>())); return;  // BININT2
      case 0x8a: push(integer_from_bytes(take(take_le<std::uint8_t>()))); return;  // LONG1
      case 0x8b: {                                                                   // LONG4
        const auto n = take_le<std::int32_t>();
        if (n < 0) bad("LONG4 with a negative length");
        push(integer_from_bytes(take(static_cast<std::uint64_t>(n))));
        return;
      }
      case 'G': {  // BINFLOAT: big-endian double
        const auto bits = __builtin_bswap64(take_le<std::uint64_t>());  // std::byteswap is C++23
        Node n;
        n.kind = Kind::floating;
        n.floating = std::bit_cast<double>(bits);
        push(add(std::move(n)));
        return;
      }
      case 'X': push(text_node(Kind::string, take_string(take_le<std::uint32_t>()))); return;  // BINUNICODE
      case 0x8c: push(text_node(Kind::string, take_string(take_le<std::uint8_t>()))); return;  // SHORT_BINUNICODE
      case 0x8d: push(text_node(Kind::string, take_string(take_le<std::uint64_t>()))); return; // BINUNICODE8
      // Python 2 str: kept as text (torch's legacy pickles use them for ASCII names).
      case 'U': push(text_node(Kind::string, take_string(take_le<std::uint8_t>()))); return;   // SHORT_BINSTRING
      case 'T': {                                                                              // BINSTRING
        const auto n = take_le<std::int32_t>();
        if (n < 0) bad("BINSTRING with a negative length");
        push(text_node(Kind::string, take_string(static_cast<std::uint64_t>(n))));
        return;
      }
      case 'B': push(text_node(Kind::bytes, take_string(take_le<std::uint32_t>()))); return;   // BINBYTES
      case 'C': push(text_node(Kind::bytes, take_string(take_le<std::uint8_t>()))); return;    // SHORT_BINBYTES
      case 0x8e:                                                                                // BINBYTES8
      case 0x96: push(text_node(Kind::bytes, take_string(take_le<std::uint64_t>()))); return;  // BYTEARRAY8
      case ']': push(container(Kind::list, {})); return;   // EMPTY_LIST
      case ')': push(container(Kind::tuple, {})); return;  // EMPTY_TUPLE
      case '}': push(container(Kind::dict, {})); return;   // EMPTY_DICT
      case 0x8f: push(container(Kind::set, {})); return;   // EMPTY_SET
      case 't': push(container(Kind::tuple, pop_mark())); return;  // TUPLE
      case 'l': push(container(Kind::list, pop_mark())); return;   // LIST
      case 0x91: push(container(Kind::set, pop_mark())); return;   // FROZENSET
      case 0x85: {  // TUPLE1
        const NodeId a = pop();
        push(container(Kind::tuple, {a}));
        return;
      }
      case 0x86: {  // TUPLE2
        const NodeId b = pop(), a = pop();
        push(container(Kind::tuple, {a, b}));
        return;
      }
      case 0x87: {  // TUPLE3
        const NodeId c = pop(), b = pop(), a = pop();
        push(container(Kind::tuple, {a, b, c}));
        return;
      }
      case 'd': {  // DICT
        const auto items = pop_mark();
        if (items.size() % 2) bad("DICT with an odd number of values");
        const NodeId d = container(Kind::dict, {});
        for (std::size_t i = 0; i < items.size(); i += 2) set_item(d, items[i], items[i + 1]);
        push(d);
        return;
      }
      case 'a': {  // APPEND
        const NodeId value = pop();
        append(top(), value);
        return;
      }
      case 'e': {  // APPENDS
        const auto items = pop_mark();
        const NodeId target = top();
        for (NodeId v : items) append(target, v);
        return;
      }
      case 's': {  // SETITEM
        const NodeId value = pop(), key = pop();
        set_item(top(), key, value);
        return;
      }
      case 'u': {  // SETITEMS
        const auto items = pop_mark();
        if (items.size() % 2) bad("SETITEMS with an odd number of values");
        const NodeId target = top();
        for (std::size_t i = 0; i < items.size(); i += 2) set_item(target, items[i], items[i + 1]);
        return;
      }
      case 0x90: {  // ADDITEMS
        const auto items = pop_mark();
        const NodeId target = top();
        if (node(target).kind != Kind::set) bad("ADDITEMS on a value that is not a set");
        for (NodeId v : items) {
          node(target).items.push_back(v);
          nest(target, v);
        }
        return;
      }
      case '0': pop(); return;       // POP
      case '1': pop_mark(); return;  // POP_MARK
      case '2': push(top()); return; // DUP
      case 'q': memo_put(take_le<std::uint8_t>()); return;   // BINPUT
      case 'r': memo_put(take_le<std::uint32_t>()); return;  // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return;             // MEMOIZE
      case 'h': memo_get(take_le<std::uint8_t>()); return;   // BINGET
      case 'j': memo_get(take_le<std::uint32_t>()); return;  // LONG_BINGET
      case 'c': {  // GLOBAL: "module\nname\n"; nothing is imported
        std::string module = take_line();
        std::string name = take_line();
        push(text_node(Kind::global, module + '\n' + name));
        return;
      }
      case 0x93: {  // STACK_GLOBAL
        const NodeId name = pop(), module = pop();
        if (node(name).kind != Kind::string || node(module).kind != Kind::string)
          bad("STACK_GLOBAL needs two strings");
        push(text_node(Kind::global, node(module).text + '\n' + node(name).text));
        return;
      }
      case 'R': {  // REDUCE: callable(*args), recorded, not called
        const NodeId args = pop(), callable = pop();
        push(object(callable, args, false));
        return;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        const NodeId args = pop(), cls = pop();
        push(object(cls, args, true));
        return;
      }
      case 0x92: {  // NEWOBJ_EX: cls, args, kwargs (kwargs kept in state)
        const NodeId kwargs = pop(), args = pop(), cls = pop();
        const NodeId id = object(cls, args, true);
        node(id).state = kwargs;
        nest(id, kwargs);
        push(id);
        return;
      }
      case 'b': {  // BUILD: obj.__setstate__(state), recorded
        const NodeId state = pop();
        const NodeId target = top();
        if (node(target).kind != Kind::object) bad("BUILD on a value that is not an object");
        node(target).state = state;
        nest(target, state);
        return;
      }
      case 'Q': {  // BINPERSID
        const NodeId pid = pop();
        Node n;
        n.kind = Kind::persistent;
        n.first = pid;
        const NodeId id = add(std::move(n));
        nest(id, pid);
        push(id);
        return;
      }
      case 'P': {  // PERSID: text id
        Node n;
        n.kind = Kind::persistent;
        n.first = text_node(Kind::string, take_line());
        push(add(std::move(n)));
        return;
      }
      default:
        bad("opcode 0x{:02x} is not supported (a data pickle does not need it)", op);
    }
  }

  std::span<const std::byte> data_;
  const std::string& where_;
  const PickleLimits& limits_;
  std::size_t pos_ = 0;
  std::size_t op_at_ = 0;
  Graph graph_;
  std::vector<std::uint16_t> depth_;  // parallel to graph_.nodes_
  std::vector<NodeId> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, NodeId> memo_;
};

Graph parse(std::span<const std::byte> data, const std::string& where, const PickleLimits& limits,
            std::size_t* consumed) {
  return Parser(data, where, limits).run(consumed);
}

namespace {

void render_into(const Graph& g, NodeId id, std::size_t depth, std::size_t max_chars, std::string& out) {
  if (out.size() > max_chars) return;  // render() cuts the text: nothing more is needed
  if (id == kNoNode) {
    out += "null";
    return;
  }
  if (depth == 0) {
    out += "...";
    return;
  }
  const Node& n = g.at(id);
  auto entries = [&](const std::vector<std::pair<NodeId, NodeId>>& items) {
    out += '{';
    for (std::size_t i = 0; i < items.size() && out.size() <= max_chars; ++i) {
      if (i) out += ", ";
      render_into(g, items[i].first, depth - 1, max_chars, out);
      out += ": ";
      render_into(g, items[i].second, depth - 1, max_chars, out);
    }
    out += '}';
  };
  auto list = [&](const std::vector<NodeId>& items, char open, char close) {
    out += open;
    for (std::size_t i = 0; i < items.size() && out.size() <= max_chars; ++i) {
      if (i) out += ", ";
      render_into(g, items[i], depth - 1, max_chars, out);
    }
    out += close;
  };
  switch (n.kind) {
    case Kind::none: out += "None"; break;
    case Kind::boolean: out += n.integer ? "True" : "False"; break;
    case Kind::integer: out += std::to_string(n.integer); break;
    case Kind::big_integer: out += fmt::format("<int of {} bytes>", n.text.size()); break;
    case Kind::floating: out += fmt::format("{}", n.floating); break;
    case Kind::string: out += quote(n.text.substr(0, max_chars)); break;
    case Kind::bytes:
      out += 'b';
      out += quote(n.text.substr(0, max_chars));
      break;
    case Kind::list: list(n.items, '[', ']'); break;
    case Kind::tuple: list(n.items, '(', ')'); break;
    case Kind::set: list(n.items, '{', '}'); break;
    case Kind::dict: entries(n.entries); break;
    case Kind::global:
      out += "<global ";
      out += g.global_name(id);
      out += '>';
      break;
    case Kind::persistent:
      out += "<persistent ";
      render_into(g, n.first, depth - 1, max_chars, out);
      out += ">";
      break;
    case Kind::object:
      out += n.newobj ? "<new " : "<call ";
      out += g.global_name(id).empty() ? "?" : g.global_name(id);
      render_into(g, n.args, depth - 1, max_chars, out);
      if (n.state != kNoNode) {
        out += " state=";
        render_into(g, n.state, depth - 1, max_chars, out);
      }
      if (!n.items.empty()) {
        out += " items=";
        list(n.items, '[', ']');
      }
      if (!n.entries.empty()) {
        out += " entries=";
        entries(n.entries);
      }
      out += ">";
      break;
  }
}

}  // namespace

std::string render(const Graph& graph, NodeId id, std::size_t max_depth, std::size_t max_chars) {
  std::string out;
  render_into(graph, id, max_depth, max_chars, out);
  if (out.size() > max_chars) {
    out.resize(max_chars);
    out += "...";
  }
  return out;
}

}  // namespace ckpt::detail::pickle
