#!/usr/bin/env python3
"""Per-block checksums (ckpt-h5 1.1, format-spec/ckpt-h5.md §7.1), judged with h5py and xxhash:
a file whose index h5py rewrites with blocks instead of whole-tensor checksums reads and verifies;
a flipped byte is caught by `--verify` and by every slice that meets its block, not by slices
that do not; hostile block lists (outside the tensor, overlapping, not covering, malformed) are
refused with one line, and an unknown algorithm leaves the tensor unverified, not corrupt.

    test_blocks_peer.py CHECKPOINT_CONVERT CHECKPOINT_INSPECT WORKDIR
"""
import json
import os
import shutil
import sys

import h5py
import numpy as np
import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import check, finish, run  # noqa: E402

convert, inspect, work = sys.argv[1:4]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)

rng = np.random.default_rng(7)
w = rng.standard_normal((10, 6)).astype(np.float32)
b = rng.integers(-5, 5, size=(7,), dtype=np.int64)
src = os.path.join(work, "src.npz")
np.savez(src, **{"fc.weight": w, "fc.bias": b})
base = os.path.join(work, "base.ckpt.h5")
r = run(convert, src, base)
check(r.returncode == 0, f"convert: {r.stderr}")


def blocks_of(arr, cuts):
    """Blocks along dimension 0 at `cuts`, each {offset, shape, checksum}."""
    out, edges = [], [0] + cuts + [arr.shape[0]]
    for lo, hi in zip(edges, edges[1:]):
        part = np.ascontiguousarray(arr[lo:hi])
        out.append({"offset": [lo] + [0] * (arr.ndim - 1), "shape": list(part.shape),
                    "checksum": "xxh3-64:" + xxhash.xxh3_64_hexdigest(part.tobytes())})
    return out


def with_index(name, edit):
    """A copy of `base` whose index `edit(index)` changed (version 1.1)."""
    path = os.path.join(work, name)
    shutil.copy(base, path)
    with h5py.File(path, "r+") as f:
        index = json.loads(bytes(f["index"][()]).rstrip(b"\0"))
        edit(index)
        del f["index"]
        f["index"] = np.bytes_(json.dumps(index).encode())
        f.attrs["ckpt_version"] = np.array([1, 1], dtype=np.uint32)
    return path


def set_blocks(index, name, blocks):
    for t in index["tensors"]:
        if t["name"] == name:
            t.pop("checksum", None)
            t["blocks"] = blocks


good = with_index("good.ckpt.h5", lambda ix: (set_blocks(ix, "fc.weight", blocks_of(w, [3, 7])),
                                              set_blocks(ix, "fc.bias", blocks_of(b, [4]))))
r = run(inspect, good, "--verify", "--json")
check(r.returncode == 0, f"good: --verify: {r.stderr}")
if r.returncode == 0:
    v = json.loads(r.stdout)["verify"]
    check(v.get("checked") == 2, f"good: both tensors counted as verified: {v}")
r = run(inspect, good, "--slice", "fc.weight[2:8]", "--json")
check(r.returncode == 0 and json.loads(r.stdout)[0]["values"] == w[2:8].tolist(),
      f"good: slice across blocks: {r.stderr}")

# One flipped byte inside block [7:10] of fc.weight.
bad = os.path.join(work, "flipped.ckpt.h5")
shutil.copy(good, bad)
with h5py.File(bad, "r") as f:
    offset = f["parameters/fc.weight"].id.get_offset()
with open(bad, "r+b") as f:
    f.seek(offset + 8 * 6 * 4 + 5)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0x10]))
r = run(inspect, bad, "--verify")
check(r.returncode == 3 and "block [7:10, 0:6]" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
      f"flipped: --verify exits 3 naming the block: {r.returncode} {r.stderr}")
r = run(inspect, bad, "--slice", "fc.weight[0:7]")
check(r.returncode == 0, f"flipped: a slice of the good blocks reads: {r.stderr}")
r = run(inspect, bad, "--slice", "fc.weight[6:8]")
check(r.returncode == 3, f"flipped: a slice meeting the bad block is refused: {r.returncode} {r.stderr}")

hostile = {
    "outside": ([{"offset": [8], "shape": [3], "checksum": "xxh3-64:" + "0" * 16}], "outside the tensor"),
    "overlap": ([{"offset": [0], "shape": [4], "checksum": "xxh3-64:" + "0" * 16},
                 {"offset": [3], "shape": [4], "checksum": "xxh3-64:" + "0" * 16}], "overlap"),
    "short": ([{"offset": [0], "shape": [4], "checksum": "xxh3-64:" + "0" * 16}], "4 of the tensor's 7"),
    "malformed": ([{"offset": [0], "shape": [7], "checksum": "xxh3-64:12"}], "ALGORITHM:DIGITS"),
    "rank": ([{"offset": [0, 0], "shape": [7, 1], "checksum": "xxh3-64:" + "0" * 16}], "array of 1"),
    "notarray": ({"offset": [0]}, "wrong type"),
}
for label, (blocks, expected) in hostile.items():
    path = with_index(f"{label}.ckpt.h5", lambda ix: set_blocks(ix, "fc.bias", blocks))
    r = run(inspect, path)
    check(r.returncode == 1 and expected in r.stderr and len(r.stderr.strip().splitlines()) == 1,
          f"{label}: refused with one line mentioning {expected!r}: {r.returncode} {r.stderr}")

# An algorithm this reader does not know: readable, not verified, not corrupt.
unknown = with_index("unknown.ckpt.h5", lambda ix: set_blocks(
    ix, "fc.bias", [{"offset": [0], "shape": [7], "checksum": "sha999:abc"}]))
r = run(inspect, unknown, "--verify", "--json")
check(r.returncode == 0 and json.loads(r.stdout)["verify"].get("checked") == 1,
      f"unknown algorithm: reads, one tensor verified: {r.stderr} {r.stdout[-200:]}")

sys.exit(finish("block checksum"))
