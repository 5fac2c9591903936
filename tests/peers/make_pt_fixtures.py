#!/usr/bin/env python3
"""Writes the .pt files of tests/data/good/pt_* and tests/data/bad/pt_*: torch.save layouts
Debian's torch 1.13 never produces (UntypedStorage with _rebuild_tensor_v3, as PyTorch >= 2 writes
float8 and uint16/32/64 tensors; _rebuild_parameter_with_state; legacy storage views from before
PyTorch 1.0) and a corpus of hostile files, each with the exact error tests/test_golden.cpp
expects.

The pickles are made by Python's own pickle module against stand-ins for torch's globals (fake
`torch` and `torch._utils` modules in this process only), so the opcodes are those torch.save
emits: protocol 2, GLOBAL, BINPERSID, REDUCE. Where torch 1.13 can load a file (legacy views) the
script asks real torch, in a child process, that it reads the values the tests expect.

    make_pt_fixtures.py DATADIR      (DATADIR = tests/data)
"""
import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile

# --- stand-ins for torch's globals: only their names reach the pickle ---------------------------
fake_torch = types.ModuleType("torch")
fake_utils = types.ModuleType("torch._utils")
fake_torch._utils = fake_utils


def _global(module, name, obj):
    obj.__module__ = module.__name__
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(module, name, obj)
    return obj


for storage in ("UntypedStorage", "FloatStorage", "LongStorage", "ShortStorage", "ComplexFloatStorage", "QInt8Storage"):
    _global(fake_torch, storage, type(storage, (), {}))
for dtype in ("float32", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "int64", "quint4x2"):
    _global(fake_torch, dtype, type(dtype, (), {}))
for fn in ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state"):
    _global(fake_utils, fn, (lambda *a: None))
sys.modules["torch"] = fake_torch
sys.modules["torch._utils"] = fake_utils
T = fake_torch
U = fake_utils


class Storage:
    """A storage reference: pickled as the persistent id torch.save writes."""

    def __init__(self, type_, key, numel, view=None, legacy=False):
        self.pid = ("storage", type_, key, "cpu", numel) + ((view,) if legacy else ())


class Call:
    """REDUCE of a global with arguments."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def v2(storage, offset, size, stride):
    return Call(U._rebuild_tensor_v2, storage, offset, size, stride, False, collections.OrderedDict())


def v3(storage, offset, size, stride, dtype):
    return Call(U._rebuild_tensor_v3, storage, offset, size, stride, False, collections.OrderedDict(), dtype)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def dumps(obj):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_zip(path, entries, deflate=()):
    """entries: name -> bytes, under archive/; stored unless named in `deflate`."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo("archive/" + name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            z.writestr(info, data)


def pt(path, obj, storages, deflate=(), byteorder=None):
    entries = {"data.pkl": dumps(obj)}
    if byteorder:
        entries["byteorder"] = byteorder.encode()
    entries.update({f"data/{k}": v for k, v in storages.items()})
    entries["version"] = b"3\n"
    write_zip(path, entries, deflate)


def legacy(path, obj, storages, little_endian=True):
    """The legacy format: magic, protocol version, sys info, the object, the storage keys, data."""
    out = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    out += pickle.dumps({"protocol_version": 1001, "little_endian": little_endian,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    out += dumps(obj) + pickle.dumps(list(storages), protocol=2)
    for key, (numel, data) in storages.items():
        out += struct.pack("<q" if little_endian else ">q", numel) + data
    open(path, "wb").write(out)


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def main():
    data = sys.argv[1]
    good, bad = os.path.join(data, "good"), os.path.join(data, "bad")

    # --- good: PyTorch >= 2 layouts -----------------------------------------------------------
    # One untyped storage of 16 bytes read as uint16[8], as float32[2] from element 2 (bytes 8..15)
    # and as float8_e4m3fn[4] with stride 2; a uint32 and a uint64 tensor; a parameter with state.
    raw = bytes(range(16))
    s0 = Storage(T.UntypedStorage, "0", 16)
    s1 = Storage(T.UntypedStorage, "1", 12)
    s2 = Storage(T.UntypedStorage, "2", 8)
    s3 = Storage(T.FloatStorage, "3", 2)
    state = collections.OrderedDict()
    state["u16"] = v3(s0, 0, (2, 4), (4, 1), T.uint16)
    state["f32_tail"] = v3(s0, 2, (2,), (1,), T.float32)
    state["f8_strided"] = v3(s0, 0, (4,), (2,), T.float8_e4m3fn)
    state["u32"] = v3(s1, 0, (3,), (1,), T.uint32)
    state["u64"] = v3(s2, 0, (), (), T.uint64)
    state["param"] = Call(U._rebuild_parameter_with_state, v2(s3, 0, (2,), (1,)), True, collections.OrderedDict(),
                          {"tag": "kept"})
    pt(os.path.join(good, "pt_v3_untyped.pt"), state,
       {"0": raw, "1": struct.pack("<3I", 1, 2**32 - 1, 7), "2": struct.pack("<Q", 2**64 - 2), "3": f32(1.5, -2)})

    # Legacy storage views (PyTorch < 1.0): storage "r" of 6 floats; view "v" = elements 2..4;
    # a tensor at offset 1 of the view, size 2 -> root elements 3 and 4. "w" is a second view of
    # the same root (element 5), and "whole" reads the root itself.
    root = f32(0, 1, 2, 3, 4, 5)
    views = collections.OrderedDict()
    views["in_view"] = v2(Storage(T.FloatStorage, "r", 6, ("v", 2, 3), legacy=True), 1, (2,), (1,))
    views["other_view"] = v2(Storage(T.FloatStorage, "r", 6, ("w", 5, 1), legacy=True), 0, (1,), (1,))
    views["whole"] = v2(Storage(T.FloatStorage, "r", 6, None, legacy=True), 0, (3, 2), (1, 3))
    legacy(os.path.join(good, "pt_legacy_views.pt"), views, {"r": (6, root)})

    # Big-endian files (saved on a big-endian machine): a `byteorder` entry of "big" in the zip
    # format, little_endian False in the legacy format's system info (whose element counts are
    # then big-endian too). A contiguous float32, an int16, a complex64 (each float swapped on
    # its own) and a transposed view. Torch 1.13 predates the byteorder entry, so the expected
    # values are checked by tests/test_pytorch.cpp alone.
    big = collections.OrderedDict()
    big["f32"] = v2(Storage(T.FloatStorage, "0", 2), 0, (2,), (1,))
    big["i16"] = v2(Storage(T.ShortStorage, "1", 2), 0, (2,), (1,))
    big["c64"] = v2(Storage(T.ComplexFloatStorage, "2", 1), 0, (1,), (1,))
    big["transposed"] = v2(Storage(T.FloatStorage, "3", 6), 0, (3, 2), (1, 3))
    big_storages = {"0": struct.pack(">2f", 1.5, -2), "1": struct.pack(">2h", -300, 7), "2": struct.pack(">2f", 1, 2),
                    "3": struct.pack(">6f", 0, 1, 2, 3, 4, 5)}
    pt(os.path.join(good, "pt_big_endian.pt"), big, big_storages, byteorder="big")
    big_legacy = collections.OrderedDict(
        (k, Call(v.fn, Storage(v.args[0].pid[1], v.args[0].pid[2], v.args[0].pid[4], None, legacy=True), *v.args[1:]))
        for k, v in big.items())
    legacy(os.path.join(good, "pt_big_endian.legacy.pt"), big_legacy,
           {k: (len(d) // (2 if k == "1" else 8 if k == "2" else 4), d) for k, d in big_storages.items()},
           little_endian=False)

    # --- bad: the hostile corpus ----------------------------------------------------------------
    ok_storage = {"0": f32(1, 2, 3, 4)}
    s = Storage(T.FloatStorage, "0", 4)

    class System:
        def __reduce__(self):
            return (os.system, ("touch /tmp/ckpt-pwned",))

    class Popen:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", "/tmp/ckpt-pwned"],))

    class Eval:
        def __reduce__(self):
            import builtins
            return (builtins.eval, ("__import__('os').getcwd()",))

    pt(os.path.join(bad, "pt_os_system.pt"), {"w": v2(s, 0, (4,), (1,)), "x": System()}, ok_storage)
    pt(os.path.join(bad, "pt_subprocess.pt"), {"w": v2(s, 0, (4,), (1,)), "x": Popen()}, ok_storage)
    pt(os.path.join(bad, "pt_eval.pt"), {"x": Eval()}, ok_storage)
    # A storage that claims far more elements than its entry holds.
    pt(os.path.join(bad, "pt_storage_claims.pt"),
       {"w": v2(Storage(T.FloatStorage, "0", 2**40), 0, (4,), (1,))}, ok_storage)
    # A view reaching past its storage; a size whose element count overflows.
    pt(os.path.join(bad, "pt_view_outside.pt"), {"w": v2(s, 3, (2,), (1,))}, ok_storage)
    pt(os.path.join(bad, "pt_size_overflow.pt"), {"w": v2(s, 0, (2**32, 2**32), (0, 0))}, ok_storage)
    # An untyped storage read through a dtype torch does not have in ckpt.
    pt(os.path.join(bad, "pt_v3_bad_dtype.pt"), {"w": v3(Storage(T.UntypedStorage, "0", 16), 0, (4,), (1,), T.quint4x2)},
       ok_storage)
    pt(os.path.join(bad, "pt_quantized_storage.pt"), {"w": v2(Storage(T.QInt8Storage, "0", 4), 0, (4,), (1,))},
       ok_storage)
    pt(os.path.join(bad, "pt_missing_storage.pt"), {"w": v2(Storage(T.FloatStorage, "7", 4), 0, (4,), (1,))},
       ok_storage)
    # Nesting 100000 lists deep; a memo index of 2**32-1 that was never stored.
    deep = b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b"."
    write_zip(os.path.join(bad, "pt_deep_nesting.pt"), {"data.pkl": deep})
    memo = b"\x80\x02}q\x00X\x01\x00\x00\x00wj\xff\xff\xff\xffs."
    write_zip(os.path.join(bad, "pt_huge_memo.pt"), {"data.pkl": memo})
    # A dict that contains itself.
    cyclic = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."
    write_zip(os.path.join(bad, "pt_cyclic.pt"), {"data.pkl": cyclic})
    # Shared references, each a copy when read: 40 levels of a = [a, a] (2**40 values) and 60 of
    # d = {"a": d, "b": d}, under 1.1 KB each.
    shared = [0]
    for _ in range(40):
        shared = [shared, shared]
    write_zip(os.path.join(bad, "pt_shared_lists.pt"), {"data.pkl": dumps({"x": shared})})
    shared = {"v": 0}
    for _ in range(60):
        shared = {"a": shared, "b": shared}
    write_zip(os.path.join(bad, "pt_shared_dicts.pt"), {"data.pkl": dumps({"x": shared})})
    # Zip entries whose sizes lie: a storage entry claiming more bytes than the file has, and a
    # deflated data.pkl claiming 1 TB from 23 compressed bytes (a zip bomb's header).
    path = os.path.join(bad, "pt_zip_size_lies.pt")
    pt(path, {"w": v2(s, 0, (4,), (1,))}, ok_storage)
    patch_sizes(path, "archive/data/0", size=1 << 30)
    path = os.path.join(bad, "pt_zip_bomb.pt")
    pt(path, {"w": v2(s, 0, (4,), (1,))}, ok_storage, deflate=("data.pkl",))
    patch_sizes(path, "archive/data.pkl", size=10**12)
    # The legacy format with a storage cut short, and a view outside its storage.
    legacy(os.path.join(bad, "pt_legacy_truncated.pt"), {"w": v2(Storage(T.FloatStorage, "r", 6, None, legacy=True), 0, (6,), (1,))},
           {"r": (6, root[:12])})
    legacy(os.path.join(bad, "pt_legacy_view_outside.pt"),
           {"w": v2(Storage(T.FloatStorage, "r", 6, ("v", 4, 3), legacy=True), 0, (3,), (1,))}, {"r": (6, root)})

    check_with_torch(good)


def patch_sizes(path, name, size):
    """Rewrites the uncompressed size of `name` in its local header and central directory."""
    raw = bytearray(open(path, "rb").read())
    encoded = name.encode()
    for sig, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = 0
        while (at := raw.find(sig, at)) >= 0:
            n = struct.unpack_from("<H", raw, at + name_at - 4 if sig == b"PK\x03\x04" else at + 28)[0]
            if raw[at + name_at:at + name_at + n] == encoded:
                struct.pack_into("<I", raw, at + size_at, size if size < 2**32 else 0xFFFFFFFE)
            at += 4
    open(path, "wb").write(bytes(raw))


def check_with_torch(good):
    """Real torch (in a child: this process has stand-ins named torch) reads the legacy views as
    the tests expect."""
    script = f"""
import os
import torch
s = torch.load({os.path.join(good, "pt_legacy_views.pt")!r})
assert s["in_view"].tolist() == [3.0, 4.0], s
assert s["other_view"].tolist() == [5.0], s
assert s["whole"].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]], s
"""
    env = dict(os.environ)
    r = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit("torch disagrees with the legacy view fixture:\n" + r.stderr)
    print("torch reads pt_legacy_views.pt as expected")


if __name__ == "__main__":
    main()
