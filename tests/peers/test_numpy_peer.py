#!/usr/bin/env python3
"""numpy as the judge of ckpt's .npy/.npz reader and writer.

Files numpy writes (savez, savez_compressed, save; every dtype ckpt shares with numpy, big-endian
and Fortran-order arrays, rank 0 and empty) are read by ckpt with numpy's values; files ckpt
writes are read by numpy.load with identical dtype, shape and bytes, and ckpt reads its own roles
and metadata back (bfloat16, which numpy lacks, arrives in numpy as its uint16 bits).

    test_numpy_peer.py CHECKPOINT_CONVERT CHECKPOINT_INSPECT WORKDIR
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




def main():
    convert, inspect, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = np.random.default_rng(0)
    arrays = {
        "fc.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "f64": rng.standard_normal(3),
        "f16": rng.standard_normal(2).astype(np.float16),
        "i8": np.array([-3, 0, 7], dtype=np.int8),
        "u8": np.array([0, 255], dtype=np.uint8),
        "i16": np.array([-300], dtype=np.int16),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "flag": np.array([True, False, True]),
        "c64": np.array([1 + 2j], dtype=np.complex64),
        "c128": np.array([3 - 4j], dtype=np.complex128),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        "bn.running_mean": rng.standard_normal(4).astype(np.float32),
    }
    for label, save in [("savez", np.savez), ("savez_compressed", np.savez_compressed)]:
        path = os.path.join(work, label + ".npz")
        save(path, **arrays)
        # numpy -> ckpt-h5 -> .npz by ckpt -> numpy.load: every array as numpy had it (in native
        # byte order and C order, as ckpt stores them).
        h5 = os.path.join(work, label + ".ckpt.h5")
        out = os.path.join(work, label + ".back.npz")
        for a, b in [(path, h5), (h5, out)]:
            r = run(convert, "-q", "--force", a, b)
            check(r.returncode == 0, f"{label}: convert {a} -> {b}: {r.stderr}")
        if not os.path.exists(out):
            continue
        loaded = np.load(out)
        for name, a in arrays.items():
            got = loaded[name] if name in loaded.files else None
            want = a.astype(a.dtype.newbyteorder("="))
            check(got is not None and got.dtype == want.dtype and got.shape == want.shape and
                  got.flags["C_CONTIGUOUS"] and got.tobytes() == np.ascontiguousarray(want).tobytes(),
                  f"{label}: {name} differs")
        r = run(inspect, "--json", path)
        listing = json.loads(r.stdout) if r.returncode == 0 else {"tensors": []}
        buffers = {t["name"] for t in listing["tensors"] if t["role"] == "buffer"}
        check("bn.running_mean" in buffers and "fc.weight" not in buffers, f"{label}: inferred roles {buffers}")

    # ckpt's deflated .npz (as savez_compressed writes them) reads in numpy with the same values.
    deflated = os.path.join(work, "deflated.npz")
    r = run(convert, "-q", "--force", "--compression", "deflate", os.path.join(work, "savez.npz"), deflated)
    check(r.returncode == 0, f"deflate: {r.stderr}")
    if r.returncode == 0:
        loaded = np.load(deflated)
        check(all(np.array_equal(loaded[n], a, equal_nan=a.dtype.kind == "f") and loaded[n].dtype == a.dtype.newbyteorder("=")
                  for n, a in arrays.items()), "deflated .npz values")
        check(os.path.getsize(deflated) < os.path.getsize(os.path.join(work, "savez.npz")), "deflated is smaller")

    # A single .npy, both ways.
    npy = os.path.join(work, "one.npy")
    np.save(npy, arrays["fortran"])
    back = os.path.join(work, "one.back.npy")
    r = run(convert, "-q", "--force", npy, back)
    check(r.returncode == 0, f".npy convert: {r.stderr}")
    if r.returncode == 0:
        got = np.load(back)
        check(got.dtype == np.int32 and np.array_equal(got, arrays["fortran"]), ".npy round trip")

    # ckpt writes: a Flax file with roles, bfloat16 and metadata -> .npz -> numpy.load and ckpt.
    def ext(a, name=None):
        return msgpack.ExtType(1, msgpack.packb((a.shape, name or a.dtype.name, a.tobytes()), use_bin_type=True))
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)
    flax = {"params": {"Dense_0": {"kernel": ext(arrays["fc.weight"]), "bf16": ext(bits, "bfloat16")}},
            "batch_stats": {"BatchNorm_0": {"mean": ext(arrays["bn.running_mean"])}},
            "opt_state": {"mu": ext(arrays["f64"])}, "step": 3}
    src = os.path.join(work, "variables.msgpack")
    open(src, "wb").write(msgpack.packb(flax))
    npz = os.path.join(work, "variables.npz")
    r = run(convert, "-q", "--force", src, npz)
    check(r.returncode == 0, f"flax -> npz: {r.stderr}")
    if r.returncode == 0:
        loaded = np.load(npz)
        check(sorted(loaded.files) == sorted(["Dense_0.kernel", "Dense_0.bf16", "BatchNorm_0.mean", "opt_state/mu"]),
              f"npz keys {loaded.files}")
        check(np.array_equal(loaded["Dense_0.kernel"], arrays["fc.weight"]), "kernel values")
        check(loaded["Dense_0.bf16"].dtype == np.uint16 and np.array_equal(loaded["Dense_0.bf16"], bits),
              "bfloat16 as uint16 bits")
        check(np.array_equal(loaded["opt_state/mu"], arrays["f64"]), "extra section values")
        r = run(inspect, "--json", npz)
        listing = json.loads(r.stdout) if r.returncode == 0 else {"tensors": [], "metadata": {}}
        by_name = {t["name"]: t for t in listing["tensors"]}
        check(by_name.get("Dense_0.bf16", {}).get("dtype") == "bfloat16", "bfloat16 comes back")
        check(by_name.get("BatchNorm_0.mean", {}).get("collection") == "batch_stats", "collection comes back")
        check(by_name.get("mu", {}).get("section") == "opt_state", "section comes back")
        check(listing.get("metadata", {}).get("step") == 3, f"metadata {listing.get('metadata')}")
        check(listing.get("role_source") == "metadata", f"role source {listing.get('role_source')}")

    # Hostile files: one-line errors naming the place.
    def npy(header):
        text = header.encode() + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    hostile = {
        "bad_header.npy": npy("{'descr': <f4    "),
        "short_data.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }") + b"\0" * 8,
        "huge_shape.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
        "object.npy": npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"),
    }
    expected = {
        "bad_header.npy": "npy header at character 10: expected a quoted string",
        "short_data.npy": "npy float32 [100] needs 400 bytes, 8 follow the header",
        "huge_shape.npy": "npy shape [4294967296, 4294967296] overflows",
        "object.npy": "npy dtype '|O' is not supported",
    }
    for name, raw in hostile.items():
        path = os.path.join(work, name)
        open(path, "wb").write(raw)
        r = run(inspect, path)
        check(r.returncode == 1 and expected[name] in r.stderr and r.stderr.count("\n") == 1,
              f"hostile {name}: rc {r.returncode} {r.stderr!r}")

    return finish("numpy peer")


if __name__ == "__main__":
    sys.exit(main())
