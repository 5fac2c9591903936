"""Seeds for every fuzz target (tests/fuzz/README.md): small files of each format, the hostile
files of tests/data, and the structural bombs of issue 11 (shared pickle references, deep JSON).

Usage: make_seeds.py CHECKPOINT_CONVERT OUT_DIR  (writes OUT_DIR/TARGET/...)

Seeds are kept small: a 200 KB seed slows a target threefold.
"""
import glob
import io
import os
import random
import shutil
import struct
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
CONVERT, OUT = sys.argv[1], sys.argv[2]


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def small(path, limit=20000):
    return os.path.getsize(path) <= limit


def files(pattern):
    return [p for p in sorted(glob.glob(os.path.join(DATA, pattern))) if small(p)]


def dcp_seed(directory):
    """fuzz_dcp's input for a distributed checkpoint's directory: the lengths of .metadata and
    __0_0.distcp, then the three files."""
    parts = []
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp"):
        path = os.path.join(directory, name)
        parts.append(open(path, "rb").read() if os.path.exists(path) else b"")
    return struct.pack("<II", len(parts[0]), len(parts[1])) + b"".join(parts)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    work = os.path.join(OUT, "_work")
    os.makedirs(work)
    # A tiny model in every format ckpt writes.
    sd = {"conv.weight": torch.randn(2, 1, 3, 3), "bn.running_mean": torch.zeros(2), "bn.num_batches_tracked":
          torch.tensor(3), "fc.weight": torch.randn(3, 4).to(torch.float16), "emb": torch.arange(6).reshape(2, 3)}
    pt = os.path.join(work, "tiny.pt")
    torch.save(sd, pt)
    torch.save({"model": sd, "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}}, "epoch": 2},
               os.path.join(work, "train.pt"))
    outs = {}
    for ext, extra in ((".ckpt.h5", []), ("z.ckpt.h5", ["--compression", "zstd", "--chunk-size", "64"]),
                       (".safetensors", []), (".msgpack", []), (".npz", []), ("d.npz", ["--compression", "deflate"]),
                       (".boost.txt", []), (".boost.xml", []), (".boost.bin", []), ("x.pt", [])):
        out = os.path.join(work, "tiny" + ext)
        subprocess.run([CONVERT, "-q", "--force", *extra, pt, out], check=True)
        outs[ext] = open(out, "rb").read()
    np.save(os.path.join(work, "a.npy"), np.arange(12, dtype=np.int32).reshape(3, 4))
    outs[".npy"] = open(os.path.join(work, "a.npy"), "rb").read()

    # Structural bombs (issue 11 §7): shared references that expand exponentially, deep nesting.
    bombs = {}
    a = [0]
    for _ in range(40):
        a = [a, a]
    buf = io.BytesIO(); torch.save({"x": a}, buf); bombs["list_bomb.pt"] = buf.getvalue()
    d = {"v": 0}
    for _ in range(60):
        d = {"l": d, "r": d}
    buf = io.BytesIO(); torch.save({"x": d}, buf); bombs["dict_bomb.pt"] = buf.getvalue()
    inner = list(range(2000))
    buf = io.BytesIO(); torch.save({"x": [inner] * 2000}, buf); bombs["wide_refs.pt"] = buf.getvalue()

    deep = "[" * 5000 + "]" * 5000
    st_meta = '{"__metadata__": {"ckpt.metadata": "%s"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}' % deep
    bombs["deep_meta.safetensors"] = struct.pack("<Q", len(st_meta)) + st_meta.encode() + b"\0" * 4

    # Per target.
    for p in files("good/*.ckpt.h5") + files("bad/*.ckpt.h5"):
        put("fuzz_ckpt_h5", os.path.basename(p), open(p, "rb").read())
    put("fuzz_ckpt_h5", "tiny.ckpt.h5", outs[".ckpt.h5"])
    put("fuzz_ckpt_h5", "tinyz.ckpt.h5", outs["z.ckpt.h5"])
    for p in files("good/*.safetensors") + files("bad/st_*"):
        put("fuzz_safetensors", os.path.basename(p), open(p, "rb").read())
    put("fuzz_safetensors", "tiny.safetensors", outs[".safetensors"])
    put("fuzz_safetensors", "deep_meta.safetensors", bombs["deep_meta.safetensors"])
    for p in files("pickle/*"):
        put("fuzz_pickle", os.path.basename(p), open(p, "rb").read())
    pts = files("good/*.pt") + files("bad/pt_*")
    for p in pts:
        put("fuzz_pytorch", os.path.basename(p), open(p, "rb").read())
        put("fuzz_zip", os.path.basename(p), open(p, "rb").read())
    for name in ("list_bomb.pt", "dict_bomb.pt"):
        put("fuzz_pytorch", name, bombs[name])
        put("fuzz_pickle", name + ".pkl", bombs[name])  # the zip: the pickle is inside, found by mutation
    put("fuzz_pytorch", "tiny.pt", outs["x.pt"])
    put("fuzz_pytorch", "train.pt", open(os.path.join(work, "train.pt"), "rb").read())
    put("fuzz_flax", "tiny.msgpack", outs[".msgpack"])
    put("fuzz_numpy", "tiny.npz", outs[".npz"])
    put("fuzz_numpy", "tinyd.npz", outs["d.npz"])
    put("fuzz_numpy", "a.npy", outs[".npy"])
    put("fuzz_zip", "tiny.npz", outs[".npz"])
    put("fuzz_zip", "tinyd.npz", outs["d.npz"])
    for ext in (".boost.txt", ".boost.xml", ".boost.bin"):
        put("fuzz_boost", "tiny" + ext, outs[ext])
    put("fuzz_boost_memory", "text", b"\0" + outs[".boost.txt"])
    put("fuzz_boost_memory", "xml", b"\1" + outs[".boost.xml"])
    put("fuzz_boost_memory", "binary", b"\2" + outs[".boost.bin"])
    put("fuzz_index", "index.json", b'{"tensors": [{"name": "w", "role": "parameter", "section": "parameters", '
        b'"dtype": "float32", "shape": [2, 3], "checksum": "xxh3-64:0123456789abcdef"}], "metadata": {"a": [1]}}')
    put("fuzz_index", "deep.json", b'{"tensors": [], "metadata": ' + b"[" * 3000 + b"]" * 3000 + b"}")
    every = {"ckpt.h5": outs[".ckpt.h5"], "z.ckpt.h5": outs["z.ckpt.h5"], "st": outs[".safetensors"],
             "msgpack": outs[".msgpack"], "npz": outs[".npz"], "npy": outs[".npy"], "boost.bin": outs[".boost.bin"],
             "boost.txt": outs[".boost.txt"], "pt": outs["x.pt"], "train.pt": open(os.path.join(work, "train.pt"), "rb").read()}
    rng = random.Random(11)
    for name, data in every.items():
        put("fuzz_detect", name, data)
        put("fuzz_options", name, bytes(rng.randrange(256) for _ in range(4)) + data)
    # Sharded: 4-byte index length, the index, one shard "s.safetensors".
    index = b'{"metadata": {"total_size": 4}, "weight_map": {"w": "s.safetensors"}}'
    shard_header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    shard = struct.pack("<Q", len(shard_header)) + shard_header + b"\0" * 4
    put("fuzz_sharded", "one", struct.pack("<I", len(index)) + index + shard)
    put("fuzz_sharded", "ckpt", struct.pack("<I", 0) + outs[".safetensors"])

    # Distributed checkpoints: .metadata and two data files (the good and hostile directories).
    for directory in sorted(glob.glob(os.path.join(DATA, "good", "dcp_*")) + glob.glob(os.path.join(DATA, "bad", "dcp_*"))):
        put("fuzz_dcp", os.path.basename(directory), dcp_seed(directory))
    for target in ("fuzz_pickle_gen", "fuzz_json_gen"):
        for i in range(8):
            put(target, f"random{i}", bytes(rng.randrange(256) for _ in range(64)))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
