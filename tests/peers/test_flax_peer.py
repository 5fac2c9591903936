#!/usr/bin/env python3
"""python3-msgpack and numpy as the judges of ckpt's Flax msgpack reader and writer.

Flax itself is not packaged in Debian, so this script implements its wire format
(flax.serialization: to_bytes / msgpack_restore, as documented in ../shared/reference/formats.md
§3) with msgpack and numpy: arrays as extension type 1 holding msgpack [shape, dtype name, bytes],
numpy scalars as type 3, Python complex as type 2, lists as maps keyed "0", "1", ..., arrays
over the chunk size as `__msgpack_chunked_array__` maps.

    test_flax_peer.py CHECKPOINT_CONVERT CHECKPOINT_INSPECT WORKDIR
"""
import json
import os
import shutil
import struct
import sys

import msgpack
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import check, finish, run  # noqa: E402



class BF16:
    """numpy has no bfloat16: such arrays travel as raw uint16 bits named "bfloat16"."""

    def __init__(self, bits, shape):
        self.bits, self.shape = np.asarray(bits, dtype=np.uint16).reshape(shape), shape


def ndarray_bytes(x):
    if isinstance(x, BF16):
        return msgpack.packb((x.shape, "bfloat16", x.bits.tobytes("C")), use_bin_type=True)
    return msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True)


def ext_pack(x):
    if isinstance(x, (np.ndarray, BF16)):
        return msgpack.ExtType(1, ndarray_bytes(x))
    if isinstance(x, np.generic):
        return msgpack.ExtType(3, ndarray_bytes(np.asarray(x)))
    if isinstance(x, complex):
        return msgpack.ExtType(2, msgpack.packb((x.real, x.imag)))
    return x


def chunk(arr, chunk_bytes):
    size = max(1, chunk_bytes // arr.dtype.itemsize)
    flat = arr.reshape(-1)
    return {"__msgpack_chunked_array__": True, "shape": {str(i): d for i, d in enumerate(arr.shape)},
            "chunks": {str(i): flat[s:s + size] for i, s in enumerate(range(0, flat.size, size))}}


def to_bytes(tree):
    return msgpack.packb(tree, default=ext_pack, strict_types=True)


def ext_unpack(code, data):
    if code in (1, 3):
        shape, name, buf = msgpack.unpackb(data, raw=True)
        if name == b"bfloat16":
            return ("bfloat16", tuple(shape), bytes(buf))
        arr = np.frombuffer(buf, dtype=np.dtype(name.decode()), count=-1, offset=0).reshape(shape, order="C")
        return arr if code == 1 else arr[()]
    if code == 2:
        re, im = msgpack.unpackb(data)
        return complex(re, im)
    return msgpack.ExtType(code, data)


def unchunk(d):
    if isinstance(d, dict):
        if "__msgpack_chunked_array__" in d:
            shape = tuple(d["shape"][str(i)] for i in range(len(d["shape"])))
            return np.concatenate([d["chunks"][str(i)] for i in range(len(d["chunks"]))]).reshape(shape)
        return {k: unchunk(v) for k, v in d.items()}
    return d


def msgpack_restore(raw):
    return unchunk(msgpack.unpackb(raw, ext_hook=ext_unpack, raw=False))


def same(a, b):
    """Trees equal, arrays in dtype, shape and every bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    if isinstance(a, np.generic):  # written back as a rank-0 array
        return isinstance(b, (np.ndarray, np.generic)) and np.asarray(a).tobytes() == np.asarray(b).tobytes() \
            and np.asarray(a).dtype == np.asarray(b).dtype
    return type(a) == type(b) and a == b



def main():
    convert, inspect, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731

    variables = {
        "params": {
            "Dense_0": {"kernel": f32(3, 4), "bias": f32(4)},
            "Conv_0": {"kernel": f32(3, 3, 2, 5)},
            "Embed_0": {"embedding": rng.standard_normal((10, 3)).astype(np.float16)},
            "layers": {"0": {"scale": f32(4)}, "1": {"scale": f32(4)}},  # a list, as flax stores it
            "bf16": BF16([0x3F80, 0xC000, 0x7F80], (3,)),
            "c64": (rng.standard_normal(2) + 1j * rng.standard_normal(2)).astype(np.complex64),
            "f64": rng.standard_normal(2),
            "i8": np.array([-3, 0, 7], dtype=np.int8),
            "u16": np.array([1, 65535], dtype=np.uint16),
            "flag": np.array([True, False]),
            "empty": np.zeros((0, 3), dtype=np.float32),
            "scalar": np.asarray(np.float32(2.5)),
        },
        "batch_stats": {"BatchNorm_0": {"mean": f32(5), "var": f32(5)}},
        "cache": {"Attn_0": {"index": np.int32(4), "keys": f32(2, 3)}},
        "step": 3,
        "config": {"lr": 0.25, "name": "run-1", "flags": [True, None], "z": 1 + 2j},
    }
    path = os.path.join(work, "variables.msgpack")
    open(path, "wb").write(to_bytes(variables))

    # Reading: roles from collections, names from paths, metadata from plain values.
    r = run(inspect, "--json", path)
    check(r.returncode == 0, f"inspect: {r.stderr}")
    listing = json.loads(r.stdout) if r.returncode == 0 else {"tensors": [], "metadata": {}}
    got = {t["name"]: t for t in listing["tensors"]}
    check(listing.get("format") == "flax", f"format {listing.get('format')}")
    check(got.get("Dense_0.kernel", {}).get("role") == "parameter", "Dense_0.kernel is a parameter")
    check(got.get("BatchNorm_0.mean", {}).get("collection") == "batch_stats", "BatchNorm_0.mean in batch_stats")
    check(got.get("Attn_0.index", {}).get("collection") == "cache", "Attn_0.index in cache")
    check(got.get("Attn_0.index", {}).get("shape") == [] and got["Attn_0.index"]["dtype"] == "int32",
          "numpy scalar (ext 3) is a rank-0 int32 tensor")
    check(got.get("bf16", {}).get("dtype") == "bfloat16", "bfloat16 by name")
    check(got.get("layers.1.scale", {}).get("shape") == [4], "lists as maps keyed 0, 1")
    check(listing.get("metadata", {}).get("step") == 3, f"metadata step: {listing.get('metadata')}")
    check(listing.get("metadata", {}).get("config", {}).get("z") == {"__complex__": [1.0, 2.0]},
          "complex metadata as {__complex__: [re, im]}")

    # Bytes: through safetensors (which cannot hold complex128, none here), compared with numpy.
    st = os.path.join(work, "variables.safetensors")
    r = run(convert, "-q", "--force", path, st)
    check(r.returncode == 0, f"convert to safetensors: {r.stderr}")
    if r.returncode == 0:
        raw = open(st, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        data = raw[8 + n:]

        def bytes_of(name):
            e = header[name]
            return data[e["data_offsets"][0]:e["data_offsets"][1]]
        check(bytes_of("Dense_0.kernel") == variables["params"]["Dense_0"]["kernel"].tobytes(), "kernel bytes")
        check(bytes_of("bf16") == variables["params"]["bf16"].bits.tobytes(), "bfloat16 bytes")
        check(bytes_of("batch_stats/BatchNorm_0.mean") == variables["batch_stats"]["BatchNorm_0"]["mean"].tobytes()
              if "batch_stats/BatchNorm_0.mean" in header else
              bytes_of("BatchNorm_0.mean") == variables["batch_stats"]["BatchNorm_0"]["mean"].tobytes(), "mean bytes")

    # Writing: msgpack -> ckpt-h5 -> msgpack by ckpt; msgpack_restore gives the same tree.
    h5 = os.path.join(work, "variables.ckpt.h5")
    back = os.path.join(work, "variables.back.msgpack")
    for a, b in [(path, h5), (h5, back)]:
        r = run(convert, "-q", "--force", a, b)
        check(r.returncode == 0, f"convert {a} -> {b}: {r.stderr}")
    if os.path.exists(back):
        want = msgpack_restore(open(path, "rb").read())
        restored = msgpack_restore(open(back, "rb").read())
        for collection in ("params", "batch_stats", "cache"):
            check(same(want[collection], restored.get(collection)), f"{collection} differs after the round trip")
        check(restored.get("step") == 3 and restored.get("config") == want["config"],
              f"metadata after the round trip: {restored.get('step')} {restored.get('config')}")

    # Chunked arrays (as flax writes arrays over 2**30 bytes; small chunks here) read as one.
    big = np.arange(1000, dtype=np.float32).reshape(10, 100)
    chunked = {"params": {"table": chunk(big, 1024), "w": f32(2)}}
    cpath = os.path.join(work, "chunked.msgpack")
    open(cpath, "wb").write(to_bytes(chunked))
    cback = os.path.join(work, "chunked.back.msgpack")
    r = run(convert, "-q", "--force", cpath, cback)
    check(r.returncode == 0, f"chunked convert: {r.stderr}")
    if r.returncode == 0:
        restored = msgpack_restore(open(cback, "rb").read())
        check(same(restored["params"]["table"], big), "chunked array reassembled")

    # A bare params tree (no collections) is all parameters and is written back bare.
    bare = {"Dense_0": {"kernel": f32(2, 2), "bias": f32(2)}}
    bpath = os.path.join(work, "bare.msgpack")
    open(bpath, "wb").write(to_bytes(bare))
    r = run(inspect, "--json", bpath)
    roles = {t["role"] for t in json.loads(r.stdout)["tensors"]} if r.returncode == 0 else set()
    check(roles == {"parameter"}, f"bare tree roles {roles} {r.stderr}")
    bback = os.path.join(work, "bare.back.msgpack")
    r = run(convert, "-q", "--force", bpath, bback)
    check(r.returncode == 0 and same(msgpack_restore(open(bback, "rb").read()), bare), f"bare round trip {r.stderr}")

    # Hostile files: refused with the place, never a crash.
    hostile = {
        "deep": b"\x81\xa1a" + b"\x91" * 100000 + b"\xc0",
        "truncated": to_bytes(variables)[:-100],
        "bin_claims": b"\x81\xa6params\x81\xa1w" + msgpack.packb(msgpack.ExtType(1, b"\x93\x91\x04\xa7float32\xc6\xff\xff\xff\xff")),
        "lying_shape": to_bytes({"params": {"w": msgpack.ExtType(1, msgpack.packb(((1000,), "float32", b"abcd"),
                                                                               use_bin_type=True))}}),
        "unknown_dtype": to_bytes({"params": {"w": msgpack.ExtType(1, msgpack.packb(((1,), "object", b"abcd"),
                                                                                 use_bin_type=True))}}),
        "array_root": msgpack.packb([1, 2, 3]),
    }
    expected = {
        "deep": "msgpack at offset 130: values nested deeper than 128",
        "truncated": "msgpack at offset ",
        "bin_claims": "msgpack at offset ",
        "lying_shape": "value at 'w': float32 [1000] needs 4000 bytes, the array holds 4",
        "unknown_dtype": "value at 'w': dtype 'object' is not supported",
        "array_root": "unrecognized file format",
    }
    for label, raw in hostile.items():
        hpath = os.path.join(work, f"hostile_{label}.msgpack")
        open(hpath, "wb").write(raw)
        r = run(inspect, hpath)
        check(r.returncode == 1 and expected[label] in r.stderr and r.stderr.count("\n") == 1,
              f"hostile {label}: rc {r.returncode} {r.stderr!r}")

    return finish("flax peer")


if __name__ == "__main__":
    sys.exit(main())
