#!/usr/bin/env python3
"""Writes the distributed checkpoints of tests/data/good/dcp_* and tests/data/bad/dcp_*:
layouts Debian's torch 1.13 never writes (torch 2.x's module names, Metadata.version and
storage_meta, _StorageInfo.transform_descriptors with zstd, TensorProperties by _MEM_FORMAT_ENCODING,
a tensor split on a 2-D grid) and a corpus of hostile metadata, each with the exact error
tests/test_dcp.cpp expects.

The pickles are made by Python's own pickle module against stand-ins for torch's classes (fake
`torch...` modules in this process only, with the names torch 1.13 and 2.x pickle), so the opcodes
are those pickle.dump emits for the real dataclasses; each chunk is a torch.save archive built
the way torch.save lays it out (archive/data.pkl, archive/byteorder, archive/data/0,
archive/version). zstd items go through the zstd program.

    make_dcp_fixtures.py DATADIR      (DATADIR = tests/data)
"""
import collections
import enum
import io
import os
import pathlib
import pickle
import shutil
import struct
import subprocess
import sys
import types
import zipfile


def module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


def put(mod, name, obj):
    obj.__module__ = mod.__name__
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(mod, name, obj)
    return obj


T = module("torch")
U = module("torch._utils")
S = module("torch.serialization")
M2 = module("torch.distributed.checkpoint.metadata")  # torch 2.x
F2 = module("torch.distributed.checkpoint.filesystem")
M1 = module("torch.distributed._shard.checkpoint.metadata")  # torch 1.13
F1 = module("torch.distributed._shard.checkpoint.filesystem")
P1 = module("torch.distributed._shard.sharded_tensor.metadata")
OS = module("posix")
B = sys.modules["builtins"]


class Call:
    """REDUCE of a global with arguments."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


for fn in ("_rebuild_tensor_v2",):
    put(U, fn, lambda *a: None)
put(S, "_get_layout", lambda *a: None)
put(OS, "system", lambda *a: None)
for storage in ("FloatStorage", "DoubleStorage", "LongStorage", "BFloat16Storage"):
    put(T, storage, type(storage, (), {}))


class DType:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name


DType.__module__ = "torch"
for name in ("float32", "float64", "int64", "bfloat16"):
    setattr(T, name, DType(name))


class Size(tuple):
    def __reduce__(self):
        return (Size, (tuple(self),))


put(T, "Size", Size)


class MemFormat2(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


class MemFormat1(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


put(M2, "_MEM_FORMAT_ENCODING", MemFormat2)
put(P1, "MEM_FORMAT_ENCODING", MemFormat1)


def dataclass_like(mod, name, getstate=None):
    cls = type(name, (), {})
    if getstate:
        cls.__getstate__ = getstate
    return put(mod, name, cls)


def props_state(self):
    return (self.dtype, Call(S._get_layout, self.layout), False, self.mem, False)


def storage_state(self):
    return {k: v for k, v in self.__dict__.items() if v is not None}


# (torch 2.x classes, torch 1.13 classes)
CLASSES = {}
for version, (m, f, p, mem) in {2: (M2, F2, M2, MemFormat2), 1: (M1, F1, P1, MemFormat1)}.items():
    CLASSES[version] = types.SimpleNamespace(
        Metadata=dataclass_like(m, "Metadata"),
        TensorStorageMetadata=dataclass_like(m, "TensorStorageMetadata"),
        ChunkStorageMetadata=dataclass_like(m, "ChunkStorageMetadata"),
        BytesStorageMetadata=dataclass_like(m, "BytesStorageMetadata"),
        MetadataIndex=dataclass_like(m, "MetadataIndex"),
        TensorProperties=dataclass_like(p, "TensorProperties", props_state),
        StorageInfo=dataclass_like(f, "_StorageInfo", storage_state if version == 2 else None),
        mem=mem,
    )
CLASSES[2].StorageMeta = dataclass_like(M2, "StorageMeta")


def new(cls, **fields):
    obj = cls.__new__(cls)
    obj.__dict__.update(fields)
    return obj


# --- torch.save archives ---------------------------------------------------------------------

class Storage:
    def __init__(self, type_, numel):
        self.pid = ("storage", type_, "0", "cpu", numel)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


STORAGE = {"float32": ("FloatStorage", "<f", 4), "float64": ("DoubleStorage", "<d", 8), "int64": ("LongStorage", "<q", 8)}


def archive(obj_pickle, data=None):
    """A torch.save zip (stored entries) of `obj_pickle` (the pickled object) and storage 0."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        entries = [("archive/data.pkl", obj_pickle), ("archive/byteorder", b"little")]
        if data is not None:
            entries.append(("archive/data/0", data))
        entries.append(("archive/version", b"3\n"))
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            z.writestr(info, content)
    return buf.getvalue()


def tensor_archive(dtype, shape, values, stride=None):
    type_, fmt, _ = STORAGE[dtype]
    if stride is None:
        stride, n = [], 1
        for d in reversed(shape):
            stride.insert(0, n)
            n *= d
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(Call(U._rebuild_tensor_v2, Storage(getattr(T, type_), len(values)), 0, tuple(shape),
                                       tuple(stride), False, collections.OrderedDict()))
    return archive(buf.getvalue(), struct.pack(f"<{len(values)}{fmt[1]}", *values))


def value_archive(value):
    return archive(pickle.dumps(value, protocol=2))


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


# --- checkpoints -------------------------------------------------------------------------------

class Writer:
    """Collects items into data files and the metadata that describes them."""

    def __init__(self, version):
        self.c = CLASSES[version]
        self.files = collections.defaultdict(bytes)
        self.items = {}  # fqn -> TensorStorageMetadata / BytesStorageMetadata
        self.storage = {}  # MetadataIndex -> _StorageInfo
        self.paths = {}

    def _store(self, file, data, transforms=None):
        offset = len(self.files[file])
        self.files[file] += data
        info = dict(relative_path=file, offset=offset, length=len(data))
        if transforms:
            info["transform_descriptors"] = transforms
        return new(self.c.StorageInfo, **info)

    def tensor(self, fqn, dtype, size, chunks, path=None):
        """chunks: (offsets, sizes, file, values[, transforms]) per chunk."""
        c = self.c
        props = new(c.TensorProperties, dtype=getattr(T, dtype), layout="torch.strided", mem=c.mem.TORCH_CONTIGUOUS_FORMAT)
        md = new(c.TensorStorageMetadata, properties=props, size=Size(size), chunks=[])
        for i, (offsets, sizes, file, values, *rest) in enumerate(chunks):
            md.chunks.append(new(c.ChunkStorageMetadata, offsets=Size(offsets), sizes=Size(sizes)))
            data = tensor_archive(dtype, sizes, values)
            transforms = rest[0] if rest else None
            if transforms == ["stream.zstd/1"]:
                data = zstd(data)
            self.storage[new(c.MetadataIndex, fqn=fqn, offset=Size(offsets), index=i)] = self._store(file, data, transforms)
        self.items[fqn] = md
        self.paths[fqn] = path or (fqn,)
        return md

    def value(self, fqn, value, file, path=None):
        self.items[fqn] = new(self.c.BytesStorageMetadata)
        self.storage[new(self.c.MetadataIndex, fqn=fqn, index=None)] = self._store(file, value_archive(value))
        self.paths[fqn] = path or (fqn,)

    def write(self, directory, planner_data=True, **extra):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        for name, data in self.files.items():
            open(os.path.join(directory, name), "wb").write(data)
        fields = dict(state_dict_metadata=self.items, planner_data=dict(self.paths) if planner_data else None,
                      storage_data=self.storage)
        fields.update(extra)
        open(os.path.join(directory, ".metadata"), "wb").write(pickle.dumps(new(self.c.Metadata, **fields), protocol=4))


def arange(n, start=0.0):
    return [start + i for i in range(n)]


def torch2(good):
    """torch 2.x: version, storage_meta, a 2-D grid of chunks over two files, a zstd chunk, values."""
    w = Writer(2)
    full = arange(24)  # model.w = arange(24).reshape(4, 6)
    block = lambda r0, c0: [full[r * 6 + c] for r in range(r0, r0 + 2) for c in range(c0, c0 + 3)]  # noqa: E731
    w.tensor("model.w", "float32", [4, 6], [
        ([0, 0], [2, 3], "__0_0.distcp", block(0, 0)),
        ([0, 3], [2, 3], "__0_0.distcp", block(0, 3)),
        ([2, 0], [2, 3], "__1_0.distcp", block(2, 0)),
        ([2, 3], [2, 3], "__1_0.distcp", block(2, 3)),
    ], path=("model", "w"))
    w.tensor("model.b", "float32", [6], [([0], [6], "__0_0.distcp", arange(6, 0.5), ["stream.zstd/1"])],
             path=("model", "b"))
    w.tensor("optim.state.w.step", "int64", [], [([], [], "__0_0.distcp", [12])], path=("optim", "state", "w", "step"))
    w.value("optim.param_groups.0.lr", 0.25, "__0_0.distcp", path=("optim", "param_groups", 0, "lr"))
    w.value("step", 100, "__0_0.distcp", path=("step",))
    w.value("rng", Call(put(module("fractions"), "Fraction", type("Fraction", (), {})), "1/3"), "__1_0.distcp",
            path=("rng",))
    meta = new(CLASSES[2].StorageMeta, checkpoint_id=pathlib.PurePosixPath("/ckpt/step100"), save_id="2f1c", load_id=None,
               modules=[])
    w.write(os.path.join(good, "dcp_torch2"), storage_meta=meta, version="1.0.0")


def base(version=1):
    """torch 1.13's names, no planner_data: w (float32 [4, 3], rows split over two files), b, epoch."""
    w = Writer(version)
    w.tensor("model.w", "float32", [4, 3], [
        ([0, 0], [2, 3], "__0_0.distcp", arange(6)),
        ([2, 0], [2, 3], "__1_0.distcp", arange(6, 6.0)),
    ])
    w.tensor("model.b", "float32", [3], [([0], [3], "__0_0.distcp", [1.0, 2.0, 3.0])])
    w.tensor("optim.w.momentum", "float64", [4, 3], [([0, 0], [4, 3], "__1_0.distcp", arange(12, -1.0))])
    w.value("epoch", 7, "__0_0.distcp")
    return w


def edit_chunk(w, fqn, index, **fields):
    md = w.items[fqn]
    for k, v in fields.items():
        setattr(md.chunks[index], k, Size(v))


def main():
    data = sys.argv[1]
    good, bad = os.path.join(data, "good"), os.path.join(data, "bad")
    torch2(good)
    base().write(os.path.join(good, "dcp_v113"), planner_data=False)

    # Values ckpt must not take for its own or inflate without bound: a value named 'ckpt.torch'
    # (its record of a checkpoint's shape), and a 2 MB pickle of list appends deflated into a few
    # KiB (parsed, it took 90 bytes of memory per pickle byte).
    w = base()
    w.value("ckpt.torch", {"model_key": "zzz", "int_keys": [], "tuples": []}, "__0_0.distcp")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as z:
        for name, content in [("archive/data.pkl", b"\x80\x02]" + b"]a" * (1 << 20) + b"."),
                              ("archive/byteorder", b"little"), ("archive/version", b"3\n")]:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, content)
    w.items["bomb"] = new(w.c.BytesStorageMetadata)
    w.storage[new(w.c.MetadataIndex, fqn="bomb", index=None)] = w._store("__0_0.distcp", bomb.getvalue())
    w.write(os.path.join(good, "dcp_reserved_and_bomb"), planner_data=False)

    def bad_dir(name):
        return os.path.join(bad, "dcp_" + name)

    w = base()
    edit_chunk(w, "model.w", 1, sizes=[3, 3])
    w.write(bad_dir("chunk_outside"), planner_data=False)

    w = base()
    w.items["model.w"].chunks[1].offsets = Size([1, 0])
    for index, info in list(w.storage.items()):
        if index.fqn == "model.w" and index.offset == (2, 0):
            del w.storage[index]
            w.storage[new(CLASSES[1].MetadataIndex, fqn="model.w", offset=Size([1, 0]), index=1)] = info
    w.write(bad_dir("overlap"), planner_data=False)

    w = base()
    w.items["model.w"].chunks.pop()
    w.write(bad_dir("missing_chunk"), planner_data=False)

    w = base()
    for index, info in w.storage.items():
        if index.fqn == "model.w" and index.offset == (2, 0):
            info.offset = 1 << 40
    w.write(bad_dir("offset_past_file"), planner_data=False)

    w = base()
    w.items["model.w"].size = Size([1 << 40, 3])
    w.write(bad_dir("huge_size"), planner_data=False)

    w = base()
    w.items["model.w"].size = Size([1 << 62, 1 << 62])
    w.write(bad_dir("size_overflow"), planner_data=False)

    w = base()
    w.items["model.w"].size = Size([1] * 65)
    w.write(bad_dir("rank65"), planner_data=False)

    w = base()
    w.items["model.w"].size = Size([(1 << 30) + 2, 3])
    edit_chunk(w, "model.w", 1, sizes=[1 << 30, 3])
    w.write(bad_dir("chunk_claims"), planner_data=False)

    w = base()
    for index, info in w.storage.items():
        if index.fqn == "model.b":
            info.relative_path = "../dcp_v113/__0_0.distcp"
    w.write(bad_dir("path_escape"), planner_data=False)

    w = base()
    w.write(bad_dir("symlink"), planner_data=False)
    os.remove(os.path.join(bad_dir("symlink"), "__1_0.distcp"))
    os.symlink("../../good/dcp_v113/__1_0.distcp", os.path.join(bad_dir("symlink"), "__1_0.distcp"))

    w = base()
    w.items["model.w"].properties.dtype = T.float64
    w.write(bad_dir("dtype_lies"), planner_data=False)

    w = base()
    w.items["model.w"].size = Size([3, 4])
    edit_chunk(w, "model.w", 0, sizes=[2, 4], offsets=[0, 0])
    w.items["model.w"].chunks.pop()
    w.items["model.w"].size = Size([2, 4])
    for index in [i for i in w.storage if i.fqn == "model.w" and i.offset == (2, 0)]:
        del w.storage[index]
    w.write(bad_dir("shape_lies"), planner_data=False)

    w = base()
    for index, info in w.storage.items():
        if index.fqn == "model.w" and index.offset == (2, 0):
            other = [i for i in w.storage.values() if i is not info and i.relative_path == info.relative_path][0]
            info.offset, info.length = other.offset, other.length
    w.write(bad_dir("shared_bytes"), planner_data=False)

    w = base()
    for index in [i for i in w.storage if i.fqn == "model.b"]:
        del w.storage[index]
    w.write(bad_dir("no_storage_entry"), planner_data=False)

    w = base()
    w.items["model.w"].properties.layout = "torch.sparse_coo"
    w.write(bad_dir("sparse"), planner_data=False)

    w = base()
    for index, info in w.storage.items():
        if index.fqn == "model.w" and index.offset == (2, 0):
            info.transform_descriptors = ["stream.rot13/1"]
    w.write(bad_dir("unknown_transform"), planner_data=False)

    w = base(2)
    w.write(bad_dir("version2"), planner_data=False, version="2.0.0")

    w = base()
    w.write(bad_dir("unsafe"), planner_data=False, planner_data_extra=Call(OS.system, "echo owned"))

    w = base()
    w.write(bad_dir("getattr_gadget"), planner_data=False, storage_meta=Call(B.getattr, MemFormat1, "__init__"))

    w = base()
    w.write(bad_dir("crc_flipped"), planner_data=False)
    path = os.path.join(bad_dir("crc_flipped"), "__1_0.distcp")
    raw = bytearray(open(path, "rb").read())
    first = raw.index(struct.pack("<f", 7.0))  # chunk [2, 0] holds 6.0, 7.0, ...
    raw[first + 3] ^= 0x40
    open(path, "wb").write(raw)

    # Shared references: 2000 keys all naming one tensor whose chunk list holds one chunk 2000
    # times: a few KiB of pickle that would expand to 4 million chunks.
    w = base()
    md = w.items["model.w"]
    md.chunks = [md.chunks[0]] * 2000
    for i in range(2000):
        w.items[f"k{i}"] = md
    w.write(bad_dir("shared_references"), planner_data=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
