#!/usr/bin/env python3
"""ckpt::mpi under mpirun (--oversubscribe): a model saved on 1, 2, 3 and 4 ranks (independent
and collective transfers) is loaded on every rank count, split another way, and read serially by
ckpt (every tensor verified) and by h5py (the global tensors, elements recomputed with numpy);
ranks that disagree, overlap or leave a tensor uncovered fail the save on every rank with one
message naming tensor and ranks, before any file appears; a rank whose writes fail (`ulimit -f`)
fails the whole save and leaves the old file byte for byte.

    run_mpi_tests.py MPI_CHECK CHECKPOINT_INSPECT WORKDIR
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

mpi_check, inspect, work = sys.argv[1:4]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, flush=True)


def mpirun(n, *args):
    return subprocess.run(["mpirun", "--oversubscribe", "-np", str(n), mpi_check, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def leftovers():
    return [f for f in os.listdir(work) if ".tmp-" in f]


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def expected(dtype, shape):
    """The elements mpi_check puts at each flat index (the dtypes h5py shows as numpy's)."""
    i = np.arange(int(np.prod(shape)), dtype=np.uint64)
    v = (i % 1000).astype(np.float64) * 0.25 - 100.0
    ints = ((i * 7919) % 200).astype(np.int64) - 100
    uints = (i * 7919) % 250
    table = {"float64": v, "float32": v.astype(np.float32), "float16": v.astype(np.float16),
             "int64": ints, "int32": ints.astype(np.int32), "int16": ints.astype(np.int16),
             "int8": ints.astype(np.int8), "uint64": uints, "uint32": uints.astype(np.uint32),
             "uint16": uints.astype(np.uint16), "uint8": uints.astype(np.uint8), "bool": i % 3 == 0,
             "complex64": (v - 1j * v).astype(np.complex64), "complex128": v - 1j * v}
    if dtype not in table:
        return None
    return table[dtype].reshape(shape)


# 1. Save on 1-4 ranks; 3 ranks also with collective transfers.
saved = {}
for n, extra in [(1, []), (2, []), (3, []), (4, []), (3, ["--collective"])]:
    label = f"{n}{'c' if extra else ''}"
    path = os.path.join(work, f"model-{label}.ckpt.h5")
    r = mpirun(n, "save", path, *extra)
    check(r.returncode == 0 and os.path.exists(path), f"save on {label} ranks: {r.stderr.strip()}")
    saved[label] = path
check(not leftovers(), f"no temporaries after the saves: {leftovers()}")

for label, path in saved.items():
    if not os.path.exists(path):
        continue
    # 2. Serial: ckpt reads every tensor and verifies it; checkpoint-inspect --verify.
    r = subprocess.run([mpi_check, "serial", path], capture_output=True, text=True, env=env)
    check(r.returncode == 0, f"{label}: serial read: {r.stderr.strip()}")
    r = subprocess.run([inspect, path, "--verify", "--json"], capture_output=True, text=True)
    check(r.returncode == 0, f"{label}: checkpoint-inspect --verify: {r.stderr.strip()}")
    # 3. h5py sees the global tensors.
    with h5py.File(path, "r") as f:
        index = json.loads(bytes(f["index"][()]).rstrip(b"\0"))
        version = list(f.attrs["ckpt_version"])
        check(version == [1, 1], f"{label}: ckpt_version {version}")
        for t in index["tensors"]:
            want = expected(t["dtype"], t["shape"])
            if want is None:
                continue
            group = {"parameters": "parameters", "buffers": "buffers"}.get(t["section"], "sections/" + t["section"])
            got = f[f"{group}/{t['name']}"][()]
            check(np.array_equal(np.asarray(got).reshape(t["shape"]), want),
                  f"{label}: h5py reads {t['name']} as the global tensor")
        blocked = [t["name"] for t in index["tensors"] if "blocks" in t]
        # One rank holds conv.weight and q.u8 in several pieces too.
        check({"conv.weight", "q.u8"} <= set(blocked) and (label == "1") == (blocked == ["conv.weight", "q.u8"]),
              f"{label}: tensors with per-block checksums: {blocked}")
    # 4. Load on every rank count, split another way.
    for n in (1, 2, 3, 4):
        r = mpirun(n, "load", path)
        check(r.returncode == 0, f"saved on {label}, loaded on {n}: {r.stderr.strip()}")
# Any checkpoint ckpt reads loads the same way, a PyTorch distributed checkpoint's directory too.
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "good")
for other in ("dcp_torch2", "dcp_v113"):
    for n in (1, 2, 3):
        r = mpirun(n, "load-any", os.path.join(data, other))
        check(r.returncode == 0, f"{other} loaded on {n} ranks: {r.stderr.strip()[-300:]}")
r = mpirun(3, "load-throw", saved["2"])
check(r.returncode == 0 and "rank 2: an exception that is not a std::exception" in r.stdout,
      f"a WantFn throwing on one rank fails the load on all: {r.returncode} {r.stdout} {r.stderr[-300:]}")

# 5. Ranks that disagree: one message naming tensor and ranks, on every rank; no file.
cases = {"shape": ["'embed.weight'", "[37, 16]", "[37, 17]"], "dtype": ["'fc.bias'", "float16", "float32"],
         "role": ["'embed.weight'", "parameter", "buffer"], "overlap": ["'embed.weight'", "overlaps"],
         "missing": ["'embed.weight'", "cover", "no block from"], "outside": ["'fc.bias'", "not inside"],
         "options": ["ParallelOptions::collective_io", "false", "true"],
         "checksums": ["ParallelOptions::checksums", "true", "false"], "path": ["path", ".other"]}
for n in (2, 3):
    for kind, words in cases.items():
        path = os.path.join(work, f"bad-{kind}-{n}.ckpt.h5")
        r = mpirun(n, "bad", kind, path)
        line = r.stdout.strip()
        check(r.returncode == 0 and all(w in line for w in words) and f"rank {n - 1}" in line and len(line.splitlines()) == 1,
              f"bad {kind} on {n} ranks: {r.returncode} {line!r} {r.stderr.strip()[-300:]}")
        check(not os.path.exists(path), f"bad {kind} on {n} ranks: no file")
check(not leftovers(), f"no temporaries after refused saves: {leftovers()}")

# 6. An existing file is kept unless --overwrite; a rank whose writes fail fails the save, and the
# old file stays byte for byte.
old = saved.get("2")
if old and os.path.exists(old):
    before = digest(old)
    r = mpirun(2, "save", old)
    check(r.returncode == 1 and "already exists" in r.stderr, f"no overwrite: {r.stderr.strip()}")
    r = mpirun(3, "save", old, "--overwrite", "--size", str(64 << 20), "--fsize-rank", "1", str(1 << 20))
    check(r.returncode == 1 and "rank 1: File too large: the file size limit (ulimit -f) is 1048576 bytes" in r.stderr,
          f"a rank over its file size limit fails the save: {r.returncode} {r.stderr.strip()[-400:]}")
    check(digest(old) == before, "the old file is unchanged")
    check(not leftovers(), f"no temporaries after a failed save: {leftovers()}")
    r = mpirun(2, "save", old, "--overwrite", "--many", "2000", "--fsize-rank", "1", "500000")
    check(r.returncode == 1 and "rank 1: File too large" in r.stderr and digest(old) == before,
          f"many tensors over a rank's file size limit: {r.returncode} {r.stderr.strip()[-300:]}")
    r = mpirun(2, "save", old, "--overwrite", "--collective", "--many", "300")
    check(r.returncode == 0 and digest(old) != before, f"overwrite: {r.stderr.strip()}")
    r = subprocess.run([mpi_check, "serial", old, "--many", "300"], capture_output=True, text=True, env=env)
    check(r.returncode == 0, f"300 more tensors, collective: serial read: {r.stderr.strip()}")

# 7. Killed mid-save (every rank, SIGKILL): the old file stays, and the next save removes the
# temporary the dead job left.
if old and os.path.exists(old):
    import signal
    import time
    before = digest(old)
    for delay in (0.2, 0.5, 0.9):
        job = subprocess.Popen(["mpirun", "--oversubscribe", "-np", "2", mpi_check, "save", old, "--overwrite",
                                "--size", str(256 << 20)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        subprocess.run(["pkill", "-KILL", "-f", f"{mpi_check} save {old}"])
        job.kill()
        job.wait()
        now = digest(old)
        check(now == before or subprocess.run([mpi_check, "serial", old], env=env).returncode == 0,
              f"killed after {delay} s: the file is the old one or a complete new one")
        before = digest(old)
    r = mpirun(2, "save", old, "--overwrite")
    check(r.returncode == 0 and not leftovers(), f"the next save cleans up: {r.stderr.strip()} {leftovers()}")

# 8. A full disk (root: a 40 MB tmpfs): the rank that cannot write fails the save, nothing stays.
if os.geteuid() == 0:
    mnt = os.path.join(work, "small")
    os.makedirs(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mnt]).returncode == 0:
        try:
            target = os.path.join(mnt, "m.ckpt.h5")
            r = mpirun(2, "save", target)
            check(r.returncode == 0, f"small save on the tmpfs: {r.stderr.strip()}")
            before = digest(target)
            r = mpirun(3, "save", target, "--overwrite", "--size", str(64 << 20))
            check(r.returncode == 1 and "No space left on device" in r.stderr,
                  f"full disk: {r.returncode} {r.stderr.strip()[-300:]}")
            check(digest(target) == before and os.listdir(mnt) == ["m.ckpt.h5"],
                  f"full disk: old file kept, nothing else: {os.listdir(mnt)}")
            # Many small tensors: HDF5's metadata would fill the disk mid-way (ranks then hung in
            # H5Fclose); the space is reserved first.
            for many in ("2000", "600"):
                try:
                    r = mpirun(2, "save", target, "--overwrite", "--size", str(36 << 20), "--many", many)
                    check(r.returncode == 1 and "No space left on device" in r.stderr,
                          f"full disk, {many} tensors: {r.returncode} {r.stderr.strip()[-300:]}")
                except subprocess.TimeoutExpired:
                    check(False, f"full disk, {many} tensors: the save hangs")
                    subprocess.run(["pkill", "-KILL", "-f", mpi_check])
                check(digest(target) == before and os.listdir(mnt) == ["m.ckpt.h5"],
                      f"full disk, {many} tensors: old file kept, nothing else: {os.listdir(mnt)}")
        finally:
            subprocess.run(["umount", mnt])

print(f"{len(failures)} failed" if failures else "all MPI checks passed")
sys.exit(1 if failures else 0)
