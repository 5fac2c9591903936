"""Faults that must never lose data (issue 11): a full file system at every free size around the
output's size, a file-size limit, kills during a write, paths that are not plain files, readers
while a writer replaces the file.

Usage: test_faults.py CONVERT INSPECT WORKDIR [SECTION...]

The full-disk cases need a small file system of their own: as root, a tmpfs is mounted under
WORKDIR (and unmounted at the end). Without root they are skipped and the script says so; the
other sections run as any user.
"""
import os
import json
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "peers"))
from peer_common import check, finish, run  # noqa: E402

CONVERT, INSPECT, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
SECTIONS = sys.argv[4:] or ["full", "fsize", "kills", "shards", "paths", "readers"]

# Every output format, as (label, file name, extra arguments).
OUTPUTS = [
    ("ckpt-h5", "out.ckpt.h5", []),
    ("ckpt-h5 zstd", "out.ckpt.h5", ["--compression", "zstd"]),
    ("pytorch", "out.pt", []),
    ("safetensors", "out.safetensors", []),
    ("sharded safetensors", "model.safetensors", ["--max-shard-size", "2MB"]),
    ("numpy", "out.npz", []),
    ("numpy deflate", "out.npz", ["--compression", "deflate"]),
    ("flax", "out.msgpack", []),
    ("boost binary", "out.boost.bin", []),
]


def make_model(path, layers, size, seed):
    """A state_dict of `layers` Linear-sized weights with BatchNorm buffers, hard to compress."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(layers):
        sd[f"l{i}.weight"] = torch.randn(size, size, generator=g)
        sd[f"bn{i}.running_mean"] = torch.randn(size, generator=g)
        sd[f"bn{i}.running_var"] = torch.rand(size, generator=g)
        sd[f"bn{i}.num_batches_tracked"] = torch.tensor(i)
    torch.save(sd, path)


def snapshot(directory):
    """Every file under `directory` (names, including hidden ones) with its bytes."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = fh.read()
    return out


def one_line_error(r, what):
    lines = r.stderr.strip().splitlines()
    check(len(lines) == 1 and "error:" in lines[0], f"{what}: expected a one-line error, got {r.stderr!r}")


def verify(path, what):
    r = run(INSPECT, "--verify", path)
    check(r.returncode == 0, f"{what}: the output does not verify: {r.stderr.strip()}")


def statvfs_free(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def section_full(source, sources_out):
    """A full file system: for every format, at free sizes stepped around what the write needs."""
    if os.geteuid() != 0:
        print("SKIP full: mounting a tmpfs needs root")
        return
    mnt = os.path.join(WORK, "small")
    os.makedirs(mnt, exist_ok=True)
    src_size = os.path.getsize(source)
    size_mb = (3 * src_size) // (1 << 20) + 4
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", mnt], check=True)
    try:
        for label, name, extra in OUTPUTS:
            need = sources_out[label]
            runs = failures_seen = 0
            # Free space beyond the old file: from well short of the output to just past it.
            for delta in (-need // 2, -(1 << 20), -65536, -8192, -4096, -1, 0, 4096, 65536, 1 << 20):
                for f in os.listdir(mnt):
                    os.unlink(os.path.join(mnt, f))
                out = os.path.join(mnt, name)
                # The old checkpoint: made by the same conversion from another model.
                r = run(CONVERT, "-q", *extra, OLD_SOURCE, out)
                check(r.returncode == 0, f"{label}: cannot write the old file: {r.stderr.strip()}")
                target_free = need + delta
                filler = statvfs_free(mnt) - target_free
                if filler < 0:
                    continue
                with open(os.path.join(mnt, "filler"), "wb") as fh:
                    fh.truncate(0)
                    if filler:
                        fh.write(b"\0" * filler)
                before = snapshot(mnt)
                r = run(CONVERT, "-q", "--force", *extra, source, out)
                runs += 1
                what = f"{label}, {target_free} bytes free for {need}"
                if r.returncode == 0:
                    verify(readable(out), what)
                    check(delta >= 0 or label.startswith("sharded") or label.endswith("zstd")
                          or label.endswith("deflate"), f"{what}: succeeded with less room than it needs?")
                else:
                    failures_seen += 1
                    check(r.returncode == 1, f"{what}: exit {r.returncode}, expected 1 ({r.stderr.strip()})")
                    one_line_error(r, what)
                    check(snapshot(mnt) == before, f"{what}: the old file changed or something was left behind: "
                          f"{sorted(set(snapshot(mnt)) ^ set(before))}")
            check(runs >= 6, f"{label}: only {runs} free sizes could be set up")
            check(failures_seen >= 3, f"{label}: only {failures_seen} runs failed: the disk was not full?")
            print(f"full: {label}: {runs} runs, {failures_seen} refused cleanly")
    finally:
        subprocess.run(["umount", mnt])


def section_fsize(source, sources_out):
    """A file-size limit (ulimit -f): EFBIG is an error, not a SIGXFSZ death with a temporary left."""
    d = os.path.join(WORK, "fsize")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for limit in (0, 65536, 1 << 20):  # all under every output, and under a shard
      for label, name, extra in OUTPUTS:
        out = os.path.join(d, name)
        r = subprocess.run([CONVERT, "-q", *extra, source, out], capture_output=True, text=True,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
        what = f"ulimit -f {limit}, {label}"
        check(r.returncode == 1, f"{what}: exit {r.returncode}, expected 1 ({r.stderr.strip()})")
        one_line_error(r, what)
        check("too large" in r.stderr, f"{what}: the error does not say the file is too large: {r.stderr.strip()}")
        left = os.listdir(d)
        check(left == [], f"{what}: left {left}")
        for f in left:
            os.unlink(os.path.join(d, f))
    print("fsize: done")


def readable(out):
    """What to read for the output `out` (sharded: the index)."""
    return out + ".index.json" if out.endswith("model.safetensors") else out


def canonical(out, work):
    """The checkpoint at `out` as one safetensors file's bytes (None if it does not read whole)."""
    r = run(INSPECT, "--verify", readable(out))
    if r.returncode != 0:
        return None
    dest = os.path.join(work, "canonical.safetensors")
    r = run(CONVERT, "-q", "--force", readable(out), dest)
    if r.returncode != 0:
        return None
    with open(dest, "rb") as fh:
        return fh.read()


def section_kills():
    """SIGKILL at random moments of a replacing write: the output is always the old checkpoint or
    the new one, whole; then one clean run, and no temporary remains. Many small tensors: sharded
    output has a dozen shards, named alike in the old and the new checkpoint."""
    source = os.path.join(WORK, "kill-new.pt")
    old_source = os.path.join(WORK, "kill-old.pt")
    make_model(source, 24, 256, 3)
    make_model(old_source, 24, 256, 4)
    d = os.path.join(WORK, "kills")
    side = os.path.join(WORK, "kills-side")
    rng = random.Random(11)
    for label, name, extra in OUTPUTS:
        if label.startswith("sharded"):
            extra = ["--max-shard-size", "600KB"]
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(side, ignore_errors=True)
        os.makedirs(d)
        os.makedirs(side)
        out = os.path.join(d, name)
        # What the old and the new checkpoint read as, and how long a write takes.
        start = time.monotonic()
        r = run(CONVERT, "-q", *extra, source, out)
        took = time.monotonic() - start
        check(r.returncode == 0, f"kills, {label}: cannot write the new file")
        new = canonical(out, side)
        shutil.rmtree(d)
        os.makedirs(d)
        r = run(CONVERT, "-q", *extra, old_source, out)
        check(r.returncode == 0, f"kills, {label}: cannot write the old file")
        old = canonical(out, side)
        bad = 0
        for _ in range(20):
            # Each kill interrupts the replacement of the old checkpoint. Temporaries stay: the clean
            # run at the end must remove what the killed writers left.
            for f in os.listdir(d):
                if ".tmp-" not in f:
                    os.unlink(os.path.join(d, f))
            run(CONVERT, "-q", *extra, old_source, out)
            p = subprocess.Popen([CONVERT, "-q", "--force", *extra, source, out], stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0, took * 1.2))
            p.send_signal(signal.SIGKILL)
            p.wait()
            got = canonical(out, side)
            if got not in (old, new) or got is None:
                bad += 1
        check(bad == 0, f"kills, {label}: {bad} of 20 kills left an output that is neither the old nor the new one")
        r = run(CONVERT, "-q", "--force", *extra, source, out)
        check(r.returncode == 0, f"kills, {label}: the clean run failed: {r.stderr.strip()}")
        check(canonical(out, side) == new, f"kills, {label}: the clean run's output is not the new checkpoint")
        left = [f for f in os.listdir(d) if ".tmp-" in f]
        check(left == [], f"kills, {label}: temporaries left after a clean run: {left}")
        print(f"kills: {label}: 20 kills, {bad} bad")


def section_shards(source):
    """Sharded safetensors: a shard of another checkpoint under the same name is caught (the index
    records each shard's size and header checksum), and a replacement that fails keeps every old
    shard."""
    d = os.path.join(WORK, "shards")
    other = os.path.join(WORK, "shards-other")
    for x in (d, other):
        shutil.rmtree(x, ignore_errors=True)
        os.makedirs(x)
    args = ["-q", "--max-shard-size", "2MB"]
    check(run(CONVERT, *args, OLD_SOURCE, os.path.join(d, "model.safetensors")).returncode == 0, "shards: write")
    check(run(CONVERT, *args, source, os.path.join(other, "model.safetensors")).returncode == 0, "shards: write other")
    index = os.path.join(d, "model.safetensors.index.json")
    check(run(INSPECT, "--verify", index).returncode == 0, "shards: the set does not verify")
    shard = sorted(f for f in os.listdir(d) if f.startswith("model-"))[1]
    saved = open(os.path.join(d, shard), "rb").read()
    shutil.copy(os.path.join(other, shard), os.path.join(d, shard))
    r = run(INSPECT, "--verify", index)
    check(r.returncode == 3 and "mix of two checkpoints" in r.stderr, f"shards: a mixed set: {r.returncode} {r.stderr!r}")
    r = run(CONVERT, "-q", "--force", index, os.path.join(other, "x.safetensors"))
    check(r.returncode == 3, f"shards: a mixed set converts: {r.returncode} {r.stderr!r}")
    open(os.path.join(d, shard), "wb").write(saved)
    # A replacement that fails on its last shard (a tensor safetensors cannot name): every old
    # shard stays, no new one is left.
    before = snapshot(d)
    bad = os.path.join(WORK, "complex.pt")
    count = len([f for f in before if f.startswith("model-")])  # the same shard names as the old set
    bad_dict = {f"t{i}": torch.randn(500, 1000) for i in range(count - 1)}  # one full shard each
    bad_dict["__metadata__"] = torch.zeros(3)
    torch.save(bad_dict, bad)
    r = run(CONVERT, *args, "--force", bad, os.path.join(d, "model.safetensors"))
    check(r.returncode == 1, f"shards: a failing replacement: {r.returncode} {r.stderr!r}")
    check(snapshot(d) == before, "shards: a failing replacement changed the old set")

    # An index that names other files (itself, a config) or that ckpt cannot parse: replacing it
    # deletes nothing but shards of this checkpoint, and nothing at all before the new index is in.
    odd = os.path.join(WORK, "shards-odd")
    shutil.rmtree(odd, ignore_errors=True)
    os.makedirs(odd)
    open(os.path.join(odd, "config.json"), "w").write("precious")
    index = os.path.join(odd, "model.safetensors.index.json")
    open(index, "w").write('{"metadata": {}, "weight_map": {"a": "config.json", "b": "model.safetensors.index.json"}}')
    r = run(CONVERT, *args, "--force", source, index)
    check(r.returncode == 0 and os.path.exists(os.path.join(odd, "config.json")) and os.path.exists(index),
          f"shards: an index naming other files: {r.returncode} {sorted(os.listdir(odd))}")
    run(CONVERT, *args, "--force", OLD_SOURCE, index)
    text = open(index).read()
    open(index, "w").write(text.replace('"weight_map": {', '"weight_map": {"bn0.running_mean": "x", ', 1))  # a duplicate
    before = {f for f in os.listdir(odd) if f.startswith("model-")}

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    r = subprocess.run([CONVERT, *args, "-q", "--force", source, index], capture_output=True, text=True, preexec_fn=limited)
    check(r.returncode == 1 and before <= set(os.listdir(odd)),
          f"shards: a failing write over an unparsable index deleted old shards: {r.returncode} {r.stderr!r}")

    # OUT named as an index is an index even when one shard holds everything.
    small_index = os.path.join(odd, "small.safetensors.index.json")
    run(CONVERT, *args, "--force", source, small_index)
    r = run(CONVERT, "-q", "--force", OLD_SOURCE, small_index)  # no --max-shard-size: one shard
    check(r.returncode == 0, f"shards: one-shard index: {r.stderr!r}")
    r = run(INSPECT, "--diff", small_index, OLD_SOURCE)
    check(r.returncode == 0, f"shards: the index does not read as what was written: {r.stdout[-300:]}")

    # Two writers replacing the same index at once, and a reader: every index it sees names shards
    # that exist, and every read succeeds.
    race = os.path.join(WORK, "shards-race")
    shutil.rmtree(race, ignore_errors=True)
    os.makedirs(race)
    index = os.path.join(race, "model.safetensors.index.json")
    run(CONVERT, *args, source, index)
    loop = 'for i in 1 2 3 4 5 6 7 8; do "{c}" -q --force --max-shard-size 2MB "{s}" "{o}" || exit 1; done'
    writers = [subprocess.Popen(["sh", "-c", loop.format(c=CONVERT, s=src, o=index)]) for src in (source, OLD_SOURCE)]
    reads = failed = 0
    while any(w.poll() is None for w in writers):
        r = run(INSPECT, "--verify", index)
        reads += 1
        failed += r.returncode != 0
    codes = [w.wait() for w in writers]
    check(codes == [0, 0], f"shards: concurrent writers failed: {codes}")
    check(failed == 0, f"shards: {failed} of {reads} reads failed while two writers replaced the set")
    r = run(INSPECT, "--verify", index)
    left = sorted(f for f in os.listdir(race) if f.startswith("model-"))
    check(r.returncode == 0 and len(left) == len(json.load(open(index))["metadata"]["ckpt.shards"]),
          f"shards: after concurrent writers: {r.returncode} {left}")
    print(f"shards: done ({reads} reads during concurrent replacement)")


def section_paths(source):
    """Inputs and outputs that are not plain files."""
    d = os.path.join(WORK, "paths")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    # A FIFO as input: refused at once, not a hang.
    fifo = os.path.join(d, "fifo.pt")
    os.mkfifo(fifo)
    for tool in (CONVERT, INSPECT):
        args = [tool, fifo] + ([os.path.join(d, "x.safetensors")] if tool == CONVERT else [])
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=20)
            check(r.returncode == 1 and "not a regular file" in r.stderr, f"FIFO input: {r.returncode} {r.stderr!r}")
            one_line_error(r, "FIFO input")
        except subprocess.TimeoutExpired:
            check(False, f"FIFO input: {os.path.basename(tool)} hangs")
    r = run(INSPECT, "/dev/zero")
    check(r.returncode == 1 and "not a regular file" in r.stderr, f"/dev/zero input: {r.returncode} {r.stderr!r}")

    # A character device as OUT is never replaced, with or without --force.
    if os.geteuid() == 0:
        dev = os.path.join(d, "null.safetensors")
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        for force in ([], ["--force"]):
            r = run(CONVERT, "-q", *force, source, dev)
            check(r.returncode == 1 and "not a regular file" in r.stderr, f"device OUT {force}: {r.returncode} {r.stderr!r}")
            check(stat.S_ISCHR(os.lstat(dev).st_mode), f"device OUT {force}: the device was replaced")
    # A FIFO as OUT likewise.
    r = run(CONVERT, "-q", "--force", source, os.path.join(d, "fifo.pt"))
    check(r.returncode == 1 and stat.S_ISFIFO(os.lstat(fifo).st_mode), f"FIFO OUT: {r.returncode} {r.stderr!r}")

    # A symbolic link as OUT: refused, the link and its target untouched.
    target = os.path.join(d, "real.safetensors")
    run(CONVERT, "-q", OLD_SOURCE, target)
    before = open(target, "rb").read()
    link = os.path.join(d, "link.safetensors")
    os.symlink("real.safetensors", link)
    for force in ([], ["--force"]):
        r = run(CONVERT, "-q", *force, source, link)
        check(r.returncode == 1 and "symbolic link" in r.stderr, f"symlink OUT {force}: {r.returncode} {r.stderr!r}")
        one_line_error(r, f"symlink OUT {force}")
        check(os.path.islink(link) and open(target, "rb").read() == before, f"symlink OUT {force}: changed")

    # A directory as OUT: one line that does not suggest --force, with or without it.
    sub = os.path.join(d, "dir.safetensors")
    os.makedirs(sub)
    for force in ([], ["--force"]):
        r = run(CONVERT, "-q", *force, source, sub)
        check(r.returncode == 1 and "is a directory" in r.stderr and "--force" not in r.stderr,
              f"directory OUT {force}: {r.returncode} {r.stderr!r}")
        one_line_error(r, f"directory OUT {force}")

    # A name longer than the file system allows: FILE: what, not std::filesystem's wording.
    long_out = os.path.join(d, "x" * 250 + ".safetensors")
    r = run(CONVERT, "-q", source, long_out)
    check(r.returncode == 1 and "filesystem error" not in r.stderr, f"long OUT: {r.returncode} {r.stderr!r}")
    one_line_error(r, "long OUT")
    # A long name that fits: the temporary's name must fit too.
    ok_out = os.path.join(d, "y" * 240 + ".pt")
    r = run(CONVERT, "-q", source, ok_out)
    check(r.returncode == 0, f"240-character OUT: {r.stderr.strip()}")
    r = run(CONVERT, "-q", "--force", source, ok_out)
    check(r.returncode == 0, f"240-character OUT, --force: {r.stderr.strip()}")

    # Output that cannot be written: stderr or stdout on a full device. An error, never an abort,
    # and never exit 0 for output that is not there.
    with open("/dev/full", "w") as full:
        r = subprocess.run([CONVERT, "-q", os.path.join(d, "missing.pt"), os.path.join(d, "m.safetensors")],
                           stdout=subprocess.PIPE, stderr=full)
        check(r.returncode == 1, f"stderr on /dev/full: exit {r.returncode}")
        r = subprocess.run([INSPECT, os.path.join(d, "missing.pt")], stdout=subprocess.PIPE, stderr=full)
        check(r.returncode == 1, f"inspect, stderr on /dev/full: exit {r.returncode}")
        r = subprocess.run([INSPECT, target], stdout=full, stderr=subprocess.PIPE, text=True)
        check(r.returncode == 1 and "cannot write the output" in r.stderr, f"stdout on /dev/full: {r.returncode} {r.stderr!r}")

    # An existing OUT's permission bits are kept.
    for mode in (0o444, 0o600, 0o640):
        out = os.path.join(d, f"mode{mode:o}.ckpt.h5")
        run(CONVERT, "-q", OLD_SOURCE, out)
        os.chmod(out, mode)
        r = run(CONVERT, "-q", "--force", source, out)
        check(r.returncode == 0, f"mode {mode:o} OUT: {r.stderr.strip()}")
        got = stat.S_IMODE(os.stat(out).st_mode)
        check(got == mode, f"mode {mode:o} OUT came back {got:o}")
    print("paths: done")


def section_readers(source):
    """Readers of a ckpt-h5 file while another process replaces it: every read succeeds."""
    d = os.path.join(WORK, "readers")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    out = os.path.join(d, "model.ckpt.h5")
    run(CONVERT, "-q", OLD_SOURCE, out)
    writer = subprocess.Popen(["sh", "-c", f'while :; do "{CONVERT}" -q --force "{source}" "{out}" || exit 1; '
                               f'"{CONVERT}" -q --force "{OLD_SOURCE}" "{out}" || exit 1; done'])
    failed = reads = 0
    deadline = time.monotonic() + 20
    errors = set()
    while time.monotonic() < deadline:
        r = run(INSPECT, "--verify", out)
        reads += 1
        if r.returncode != 0:
            failed += 1
            errors.add(r.stderr.strip()[:200])
    writer.kill()
    writer.wait()
    check(reads >= 20, f"readers: only {reads} reads")
    check(failed == 0, f"readers: {failed} of {reads} reads failed: {sorted(errors)[:3]}")
    print(f"readers: {reads} reads while replacing, {failed} failed")


def main():
    global OLD_SOURCE
    os.makedirs(WORK, exist_ok=True)
    source = os.path.join(WORK, "model.pt")
    OLD_SOURCE = os.path.join(WORK, "old.pt")
    make_model(source, 6, 512, 1)  # ~6 MB
    make_model(OLD_SOURCE, 6, 512, 2)  # the same names and shapes: shards of both share names
    # What each format's output of `source` takes.
    sizes = {}
    d = os.path.join(WORK, "sizes")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for label, name, extra in OUTPUTS:
        r = run(CONVERT, "-q", *extra, source, os.path.join(d, name))
        check(r.returncode == 0, f"{label}: {r.stderr.strip()}")
        sizes[label] = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    if "full" in SECTIONS:
        section_full(source, sizes)
    if "fsize" in SECTIONS:
        section_fsize(source, sizes)
    if "kills" in SECTIONS:
        section_kills()
    if "shards" in SECTIONS:
        section_shards(source)
    if "paths" in SECTIONS:
        section_paths(source)
    if "readers" in SECTIONS:
        section_readers(source)
    return finish("fault")


if __name__ == "__main__":
    sys.exit(main())
