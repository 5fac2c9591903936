#!/usr/bin/env python3
"""Real tools as judges of ckpt-h5.

1. h5py and numpy read files ckpt wrote (uncompressed and zstd, through ckpt's filter plugin on
   HDF5_PLUGIN_PATH) and find exactly the values, shapes and dtypes ckpt wrote.
2. h5dump prints a zstd dataset through the plugin.
3. ckpt reads files that h5py writes here and now by the spec.

    test_h5py_peer.py CKPT_TESTS CHECKPOINT_INSPECT WORKDIR
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_spec_files import SpecWriter  # noqa: E402  (one link-name encoder for both scripts)

link = SpecWriter.link

HERE = os.path.dirname(os.path.abspath(__file__))
NUMPY_DTYPES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4", "int16": "<i2",
    "int8": "i1", "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "u1", "bool": "?",
    "complex64": "<c8", "complex128": "<c16",
}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def dataset(f, section, name):
    group = f[section] if section in ("parameters", "buffers") else f["sections"][link(section)]
    return group[link(name)]


def check_file(path, expected):
    with h5py.File(path, "r") as f:
        check(f.attrs["ckpt_format"] == b"ckpt-h5" or f.attrs["ckpt_format"] == "ckpt-h5", f"{path}: ckpt_format")
        check(list(f.attrs["ckpt_version"]) == [1, 0], f"{path}: ckpt_version")
        index = json.loads(f["index"][()])
        check([t["name"] for t in index["tensors"]] == [e["name"] for e in expected], f"{path}: index order")
        check(index["metadata"]["config"]["widths"] == [64, 128], f"{path}: metadata")
        for e in expected:
            label = f"{path}: {e['name'][:30]!r} ({e['dtype']})"
            d = dataset(f, e["section"], e["name"])
            raw = bytes.fromhex(e["hex"])
            value = d[()]
            check(list(d.shape) == e["shape"], f"{label}: shape {d.shape}")
            if e["dtype"] == "bfloat16":
                # h5py reads the custom float as float32: the same values, exactly.
                want = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4").reshape(e["shape"])
                check(value.dtype == np.float32, f"{label}: h5py dtype {value.dtype}")
                check(np.array_equal(value.view("<u4"), want.view("<u4")), f"{label}: values")
            elif e["dtype"].startswith("float8"):
                check(d.attrs["ckpt_dtype"] in (e["dtype"], e["dtype"].encode()), f"{label}: ckpt_dtype attribute")
                check(np.asarray(value).tobytes() == raw, f"{label}: bytes")
            else:
                want = np.frombuffer(raw, NUMPY_DTYPES[e["dtype"]]).reshape(e["shape"])
                check(value.dtype == want.dtype, f"{label}: h5py dtype {value.dtype}, expected {want.dtype}")
                check(np.asarray(value).tobytes() == want.tobytes(), f"{label}: bytes")


def check_any_chunking(convert, work):
    """ckpt reads back exactly every chunking HDF5 can write: h5py files with shuffle + zstd at 20
    random chunk shapes (most are not contiguous runs of the tensor) and h5py's own automatic
    chunking, with and without a checksum in the index, converted on 1, 2 and 4 threads."""
    rng = np.random.default_rng(20261201)
    cases = [((64, 32), (64, 16)), ((64, 32), (5, 7)), ((10, 10), (3, 3)), ((4, 8, 16), (4, 8, 8)),
             ((768, 3072), True)]
    while len(cases) < 25:
        rank = int(rng.integers(1, 5))
        shape = tuple(int(rng.integers(1, 24)) for _ in range(rank))
        cases.append((shape, tuple(int(rng.integers(1, d + 1)) for d in shape)))
    dtypes = ["<f4", "<f2", "<i8", "u1", "<f8"]
    for i, (shape, chunks) in enumerate(cases):
        dtype = np.dtype(dtypes[i % len(dtypes)])
        a = (rng.standard_normal(shape) * 100).astype(dtype)
        name = {"<f4": "float32", "<f2": "float16", "<i8": "int64", "|u1": "uint8", "<f8": "float64"}[dtype.str]
        for with_checksum in (True, False):
            path = os.path.join(work, f"chunks{i}_{int(with_checksum)}.ckpt.h5")
            with h5py.File(path, "w") as f:
                f.attrs["ckpt_format"] = np.bytes_("ckpt-h5")
                f.attrs["ckpt_version"] = np.array([1, 0], dtype="<u4")
                f.create_group("buffers")
                d = f.create_group("parameters").create_dataset(
                    "t", data=a, chunks=chunks, shuffle=dtype.itemsize > 1, compression=32015,
                    compression_opts=(1,))
                entry = {"name": "t", "section": "parameters", "dtype": name, "shape": list(shape)}
                if with_checksum:
                    import xxhash  # noqa: E402
                    entry["checksum"] = "xxh3-64:" + xxhash.xxh3_64_hexdigest(a.tobytes())
                label = f"chunks {d.chunks} of {name} {list(shape)}, checksum {with_checksum}"
                f["index"] = np.frombuffer(json.dumps({"tensors": [entry]}).encode(), dtype=np.uint8)
            for threads in (1, 2, 4):
                out = os.path.join(work, f"chunks{i}.npz")
                r = subprocess.run([convert, path, out, "--force", "--quiet", "--threads", str(threads)],
                                   capture_output=True, text=True)
                check(r.returncode == 0, f"{label}, {threads} threads: {r.stderr.strip()}")
                if r.returncode == 0:
                    got = np.load(out)["t"]
                    check(got.dtype == a.dtype and got.tobytes() == a.tobytes(),
                          f"{label}, {threads} threads: {np.mean(got != a):.0%} of the values differ")


def main():
    tests, inspect, work = sys.argv[1:4]
    convert = os.path.join(os.path.dirname(inspect), "checkpoint-convert")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ, CKPT_FIXTURE_OUT=work)
    subprocess.run([tests, "[.fixture]"], check=True, env=env, stdout=subprocess.DEVNULL)
    expected = json.load(open(os.path.join(work, "sink.expected.json")))
    check_file(os.path.join(work, "sink.ckpt.h5"), expected)
    check_file(os.path.join(work, "sink.zstd.ckpt.h5"), expected)

    # h5dump through the plugin
    out = subprocess.run(["h5dump", "-d", "/parameters/big.weight", "-s", "0,0", "-c", "1,4",
                          os.path.join(work, "sink.zstd.ckpt.h5")], capture_output=True, text=True)
    check(out.returncode == 0 and "DATA" in out.stdout and "32015" not in out.stderr,
          f"h5dump of a zstd dataset: rc {out.returncode} {out.stderr[-300:]}")
    with h5py.File(os.path.join(work, "sink.zstd.ckpt.h5"), "r") as f:
        d = f["parameters"]["big.weight"]
        # cd_values[0]: the level, 1 by default (WriteOptions::zstd_level)
        check("32015" in d._filters and d._filters["32015"] == (1,), f"zstd filter recorded: {d._filters}")
        check(d.shuffle, "shuffle filter recorded")

    # ckpt reads what h5py writes now, by the spec.
    subprocess.run([sys.executable, os.path.join(HERE, "make_spec_files.py"), os.path.join(work, "spec")],
                   check=True)
    spec = os.path.join(work, "spec", "good", "h5py_spec.ckpt.h5")
    out = subprocess.run([inspect, "--json", "--verify", spec], capture_output=True, text=True)
    check(out.returncode == 0, f"checkpoint-inspect on the h5py file: {out.stderr}")
    if out.returncode == 0:
        listing = json.loads(out.stdout)
        with h5py.File(spec, "r") as f:
            index = json.loads(f["index"][()])
        check([t["name"] for t in listing["tensors"]] == [t["name"] for t in index["tensors"]], "names")
        check([t["dtype"] for t in listing["tensors"]] == [t["dtype"] for t in index["tensors"]], "dtypes")
        check([t["shape"] for t in listing["tensors"]] == [t["shape"] for t in index["tensors"]], "shapes")
        check(listing["verify"] == {"ok": True, "checked": 12}, f"verify {listing.get('verify')}")
        check(listing["buffers"]["count"] == 4 and listing["parameters"]["count"] == 7, "role counts")
        check(listing["metadata"] == {"epoch": 3, "lr": 0.01, "framework": "h5py", "flags": [True, None],
                                      "config": {"depth": 18}}, "metadata")
    for name in sorted(os.listdir(os.path.join(work, "spec", "bad"))):
        out = subprocess.run([inspect, "--verify", os.path.join(work, "spec", "bad", name)],
                             capture_output=True, text=True, errors="replace")
        check(out.returncode in (1, 3) and out.stderr.count("\n") == 1 and "error:" in out.stderr,
              f"bad file {name}: rc {out.returncode}, stderr {out.stderr!r}")

    check_any_chunking(convert, work)

    print(f"{len(failures)} failed" if failures else "all peer checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
