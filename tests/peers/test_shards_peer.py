#!/usr/bin/env python3
"""Sharded safetensors as huggingface lays them out (model.safetensors.index.json with
{"metadata": {"total_size"}, "weight_map"} beside model-0000i-of-0000N.safetensors shards),
checked with numpy and json: shards written here are read by ckpt as one checkpoint with the
same bytes; shards ckpt writes hold every tensor once, within the size limit, as the index says.

    test_shards_peer.py CHECKPOINT_CONVERT CHECKPOINT_INSPECT WORKDIR
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import check, finish, run  # noqa: E402




CODES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("float16"): "F16"}
DTYPES = {v: k for k, v in CODES.items()}


def write_safetensors(path, tensors):
    header, data = {}, b""
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": CODES[a.dtype], "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + data)


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]], dtype=DTYPES[e["dtype"]])
            .reshape(e["shape"]) for k, e in header.items()}


def main():
    convert, inspect, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = np.random.default_rng(0)
    tensors = {f"layers.{i}.weight": rng.standard_normal((64, 32)).astype(np.float32) for i in range(6)}
    tensors["embed.weight"] = rng.standard_normal((100, 32)).astype(np.float16)
    tensors["bn.num_batches_tracked"] = np.array(5, dtype=np.int64)

    # huggingface-style shards made here -> ckpt reads one checkpoint.
    hf = os.path.join(work, "hf")
    os.makedirs(hf)
    names = list(tensors)
    parts = [names[:3], names[3:6], names[6:]]
    weight_map = {}
    for i, part in enumerate(parts):
        shard = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        write_safetensors(os.path.join(hf, shard), {n: tensors[n] for n in part})
        weight_map.update({n: shard for n in part})
    index = os.path.join(hf, "model.safetensors.index.json")
    total = sum(a.nbytes for a in tensors.values())
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, open(index, "w"))
    single = os.path.join(work, "single.safetensors")
    r = run(convert, "-q", "--force", index, single)
    check(r.returncode == 0, f"read hf shards: {r.stderr}")
    if r.returncode == 0:
        got = read_safetensors(single)
        check(list(got) == names, f"names and order {list(got)}")
        check(all(got[n].tobytes() == tensors[n].tobytes() for n in names), "bytes through the shards")
    r = run(inspect, "--json", index)
    listing = json.loads(r.stdout) if r.returncode == 0 else {}
    check(listing.get("format") == "safetensors-sharded", f"format {listing.get('format')} {r.stderr}")
    check({t["name"] for t in listing.get("tensors", []) if t["role"] == "buffer"} == {"bn.num_batches_tracked"},
          "inferred roles across shards")

    # ckpt writes shards of at most 20000 bytes -> read here by the index.
    out = os.path.join(work, "out")
    os.makedirs(out)
    r = run(convert, "-q", "--force", "--max-shard-size", "20000", single, os.path.join(out, "model.safetensors"))
    check(r.returncode == 0, f"write shards: {r.stderr}")
    if r.returncode == 0:
        idx = json.load(open(os.path.join(out, "model.safetensors.index.json")))
        check(idx["metadata"]["total_size"] == total, f"total_size {idx['metadata']}")
        shards = sorted(set(idx["weight_map"].values()))
        check(len(shards) >= 2 and all(s.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards),
              f"shard names {shards}")
        seen = {}
        for s in shards:
            part = read_safetensors(os.path.join(out, s))
            check(sum(a.nbytes for a in part.values()) <= 20000 or len(part) == 1, f"{s} exceeds the limit")
            for n, a in part.items():
                check(idx["weight_map"].get(n) == s and n not in seen, f"{n} misplaced in the index")
                seen[n] = a
        check(set(seen) == set(names) and all(seen[n].tobytes() == tensors[n].tobytes() for n in names),
              "every tensor once with its bytes")
        r = run(inspect, "--diff", single, os.path.join(out, "model.safetensors.index.json"))
        check(r.returncode == 0, f"diff single vs shards: {r.stdout} {r.stderr}")

    # An index may not reach outside its directory.
    bad = os.path.join(work, "bad.safetensors.index.json")
    json.dump({"weight_map": {"w": "../hf/model-00001-of-00003.safetensors"}}, open(bad, "w"))
    r = run(inspect, bad)
    check(r.returncode == 1 and "not a file beside the index" in r.stderr, f"path traversal: {r.stderr}")

    return finish("shard")


if __name__ == "__main__":
    sys.exit(main())
