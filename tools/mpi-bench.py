#!/usr/bin/env python3
"""The MPI benchmark (README, "Many processes"): a sharded state of MIB MiB (32 float32 tensors,
split by rows) saved by N ranks into one ckpt-h5 file against one process saving the same bytes
with ckpt::save, and loaded on other rank counts against one process's full load, all in this run;
each figure the median of REPEAT runs, peak memory per rank against the bytes the rank holds.

    tools/mpi-bench.py BUILD_MPI_DIR WORKDIR [--mib 1024] [--ranks 2] [--repeat 3]

Files are written to WORKDIR (use a real disk, not a tmpfs, for meaningful numbers).
"""
import argparse
import json
import os
import statistics
import subprocess

parser = argparse.ArgumentParser()
parser.add_argument("build")
parser.add_argument("work")
parser.add_argument("--mib", type=int, default=1024)
parser.add_argument("--ranks", type=int, default=2)
parser.add_argument("--repeat", type=int, default=3)
args = parser.parse_args()
bench = os.path.join(args.build, "ckpt-mpi-bench")
os.makedirs(args.work, exist_ok=True)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
sharded = os.path.join(args.work, "sharded.ckpt.h5")
serial = os.path.join(args.work, "serial.ckpt.h5")
raw = os.path.join(args.work, "raw.bin")


def step(ranks, *argv):
    cmd = ([bench] if ranks == 0 else ["mpirun", "--oversubscribe", "-np", str(ranks), bench]) + list(argv)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median(ranks, *argv):
    runs = [step(ranks, *argv) for _ in range(args.repeat)]
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    best["all"] = [round(r["seconds"], 3) for r in runs]
    return best


def memory(r):
    return ", ".join(f"{p / 1024:.0f} MiB peak for {h / 1024:.0f} MiB held" for p, h in zip(r["peak_kib"], r["held_kib"]))


n = args.ranks
print(f"{args.mib} MiB, 32 float32 tensors split by rows; median of {args.repeat}")
# Interleaved, so the disk's mood affects baseline and subject alike.
raw_w = median(0, "raw-write", raw, str(args.mib))
serial_s = median(0, "serial-save", serial, str(args.mib))
par_s = median(n, "save", sharded, str(args.mib))
par_c = median(n, "save", sharded, str(args.mib), "--collective")
print(f"raw write + fsync           {raw_w['seconds']:.3f} s {raw_w['all']}")
print(f"serial ckpt::save           {serial_s['seconds']:.3f} s {serial_s['all']}   ({serial_s['seconds'] / raw_w['seconds']:.2f}x raw)")
print(f"{n}-rank mpi::save            {par_s['seconds']:.3f} s {par_s['all']}   {par_s['seconds'] / serial_s['seconds']:.2f}x serial save; {memory(par_s)}")
print(f"{n}-rank mpi::save collective {par_c['seconds']:.3f} s {par_c['all']}   {par_c['seconds'] / serial_s['seconds']:.2f}x serial save; {memory(par_c)}")
serial_l = median(0, "serial-load", sharded)
print(f"serial full load (copies)   {serial_l['seconds']:.3f} s {serial_l['all']}")
for m in sorted({1, n + 1, max(1, n - 1)} - {n}) + [n]:
    r = median(m, "load", sharded)
    print(f"{m}-rank mpi::load            {r['seconds']:.3f} s {r['all']}   {r['seconds'] / serial_l['seconds']:.2f}x serial load; {memory(r)}")
for f in (sharded, serial, raw):
    if os.path.exists(f):
        os.remove(f)
