#!/usr/bin/env python3
"""Write ckpt-h5 files with h5py, following format-spec/ckpt-h5.md, plus safetensors files, with
plain Python: a good file of each, and one corrupt file per kind of corruption.

    make_spec_files.py OUTDIR

Writes OUTDIR/good/*.ckpt.h5 and OUTDIR/bad/*. The zstd dataset needs ckpt's filter plugin:
run with HDF5_PLUGIN_PATH=<build>/plugins. tests/data holds the committed output; the golden
tests check the exact error each bad file gets.
"""
import json
import os
import shutil
import struct
import sys

import h5py
import numpy as np
import xxhash

ZSTD = 32015


def checksum(arr_bytes):
    return "xxh3-64:" + xxhash.xxh3_64_hexdigest(arr_bytes)


def custom_float(sign, epos, esize, msize, ebias):
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(sign, epos, esize, 0, msize)
    t.set_size(2)
    t.set_ebias(ebias)
    return t


def bool_type():
    return h5py.h5t.py_create(np.dtype("bool"))


class SpecWriter:
    """Writes tensors the way the spec says; records index entries."""

    def __init__(self, path):
        self.f = h5py.File(path, "w")
        self.f.attrs["ckpt_format"] = np.bytes_("ckpt-h5")
        self.f.attrs["ckpt_version"] = np.array([1, 0], dtype="<u4")
        self.entries = []

    @staticmethod
    def link(name):
        if name == "":
            return "%"
        if name == ".":
            return "%2E"
        return name.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")

    def group(self, section):
        if section in ("parameters", "buffers"):
            return self.f.require_group(section)
        return self.f.require_group("sections").require_group(self.link(section))

    def add(self, section, name, dtype, array, raw_type=None, **extra):
        g = self.group(section)
        entry = {"name": name, "section": section}
        entry.update(extra)
        entry["dtype"] = dtype
        entry["shape"] = list(array.shape)
        entry["checksum"] = checksum(array.tobytes())
        if raw_type is not None:  # bfloat16 / float16 given as uint16 bits
            space = h5py.h5s.create_simple(array.shape) if array.shape else h5py.h5s.create(h5py.h5s.SCALAR)
            d = h5py.h5d.create(g.id, self.link(name).encode(), raw_type, space)
            d.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(array), mtype=raw_type)
        elif dtype.startswith("float8"):
            d = g.create_dataset(self.link(name), data=array.view(np.uint8))
            d.attrs["ckpt_dtype"] = np.bytes_(dtype)
        elif extra.pop("_zstd", False):
            pass
        else:
            g.create_dataset(self.link(name), data=array)
        self.entries.append(entry)
        return entry

    def add_zstd(self, section, name, dtype, array):
        g = self.group(section)
        g.create_dataset(self.link(name), data=array, chunks=True, shuffle=True, compression=ZSTD,
                         compression_opts=(5,))
        entry = {"name": name, "section": section, "dtype": dtype, "shape": list(array.shape),
                 "checksum": checksum(array.tobytes())}
        self.entries.append(entry)

    def close(self, metadata, index_override=None):
        index = {"tensors": self.entries, "metadata": metadata}
        text = index_override if index_override is not None else json.dumps(index)
        self.f.create_dataset("index", data=np.bytes_(text.encode("utf-8")))
        self.f.close()


METADATA = {"epoch": 3, "lr": 0.01, "framework": "h5py", "flags": [True, None], "config": {"depth": 18}}


def write_good(path, tweak=None):
    w = SpecWriter(path)
    w.add("parameters", "conv.weight", "float32", (np.arange(24, dtype="<f4") * 0.5).reshape(2, 3, 4))
    w.add("parameters", "a/b", "float64", np.array([-1.5, 2.25], dtype="<f8"))
    w.add("parameters", "half", "float16", np.array([1, -2, 0.5], dtype="<f2"))
    w.add("parameters", "bf", "bfloat16", np.array([0x3F80, 0xC000, 0x4060], dtype="<u2"),
          raw_type=custom_float(15, 7, 8, 7, 127))
    w.add("parameters", "cplx", "complex64", np.array([1 + 2j, -3 + 0.5j], dtype="<c8"))
    w.add("parameters", "empty", "float32", np.zeros((0, 3), dtype="<f4"))
    w.add_zstd("parameters", "zstd.weight", "float32", np.arange(33 * 65, dtype="<f4").reshape(33, 65))
    w.add("buffers", "bn.running_mean", "float32", np.array([0.1, 0.2], dtype="<f4"), collection="batch_stats",
          persistent=True)
    w.add("buffers", "bn.num_batches_tracked", "int64", np.array(7, dtype="<i8"), collection="batch_stats",
          persistent=True)
    w.add("buffers", "mask", "bool", np.array([True, False, True]), collection="buffers", persistent=False)
    w.add("buffers", "f8", "float8_e4m3fn", np.array([0x38, 0xB8], dtype=np.uint8), collection="buffers",
          persistent=True)
    w.add("optimizer", "state.0.step", "int64", np.array(5, dtype="<i8"))
    if tweak:
        tweak(w)
    w.close(METADATA)


def write_safetensors(path, tensors, metadata=None, raw_header=None, tail=b""):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    offset = 0
    for name, (code, arr) in tensors.items():
        data = arr.tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs) + tail)


def main():
    out = sys.argv[1]
    good = os.path.join(out, "good")
    bad = os.path.join(out, "bad")
    os.makedirs(good, exist_ok=True)
    os.makedirs(bad, exist_ok=True)

    spec = os.path.join(good, "h5py_spec.ckpt.h5")
    write_good(spec)

    # A newer minor version with things this reader does not know: must still read.
    def newer_minor(w):
        w.f.attrs["ckpt_version"] = np.array([1, 7], dtype="<u4")
        w.f.attrs["ckpt_future"] = np.bytes_("ignored")
        w.entries[0]["future_field"] = {"x": 1}
    write_good(os.path.join(good, "minor_newer.ckpt.h5"), newer_minor)

    data = open(spec, "rb").read()
    with open(os.path.join(bad, "truncated.ckpt.h5"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(bad, "wrong_magic.ckpt.h5"), "wb") as f:
        f.write(b"NOTHDF5!" + data[8:])

    def major2(w):
        w.f.attrs["ckpt_version"] = np.array([2, 0], dtype="<u4")
    write_good(os.path.join(bad, "major2.ckpt.h5"), major2)

    def not_ckpt(w):
        w.f.attrs["ckpt_format"] = np.bytes_("something-else")
    write_good(os.path.join(bad, "wrong_format.ckpt.h5"), not_ckpt)

    def lying_shape(w):
        w.entries[0]["shape"] = [2, 3, 5]
    write_good(os.path.join(bad, "lying_shape.ckpt.h5"), lying_shape)

    def lying_dtype(w):
        w.entries[1]["dtype"] = "int8"  # the dataset holds float64
    write_good(os.path.join(bad, "lying_dtype.ckpt.h5"), lying_dtype)

    def unknown_dtype(w):
        w.entries[0]["dtype"] = "float4_e2m1"
    write_good(os.path.join(bad, "unknown_dtype.ckpt.h5"), unknown_dtype)

    def missing_dataset(w):
        del w.f["parameters"]["half"]
    write_good(os.path.join(bad, "missing_dataset.ckpt.h5"), missing_dataset)

    # One data byte of 'conv.weight' flipped: the checksum must catch it.
    flipped = os.path.join(bad, "flipped_byte.ckpt.h5")
    shutil.copy(spec, flipped)
    with h5py.File(flipped, "r") as f:
        offset = f["parameters"]["conv.weight"].id.get_offset()
    with open(flipped, "r+b") as f:
        f.seek(offset + 5)
        b = f.read(1)
        f.seek(offset + 5)
        f.write(bytes([b[0] ^ 0x10]))

    # Spec §3, §5, §6 where a reader could go either way.
    # Good: groups without tensors left out (no /buffers), a dataset the index does not list
    # (not part of the checkpoint), a big-endian float (differs only in byte order: converted).
    w = SpecWriter(os.path.join(good, "spec_edges.ckpt.h5"))
    w.add("parameters", "w", "float32", np.array([1.5, -2.25, 3e38], dtype="<f4"))
    big = np.array([[0.5, -1.0], [7.25, 1e-30]], dtype=">f4")
    w.f["parameters"].create_dataset("big_endian", data=big)
    w.entries.append({"name": "big_endian", "section": "parameters", "dtype": "float32", "shape": [2, 2],
                      "checksum": checksum(big.astype("<f4").tobytes())})
    w.f["parameters"].create_dataset("not_in_index", data=np.zeros(3, dtype="<f4"))
    w.close({"note": "no /buffers group"})

    # Good: a user block of 8 KiB before the HDF5 file (the signature is not in the first 4 KiB).
    w = SpecWriter.__new__(SpecWriter)
    w.f = h5py.File(os.path.join(good, "userblock.ckpt.h5"), "w", userblock_size=8192)
    w.f.attrs["ckpt_format"] = np.bytes_("ckpt-h5")
    w.f.attrs["ckpt_version"] = np.array([1, 0], dtype="<u4")
    w.entries = []
    w.add("parameters", "w", "float32", np.array([1.5, -2.5, 4.0], dtype="<f4"))
    w.group("buffers")
    w.close({})

    # Bad: a dataset whose type differs in more than byte order (uint8 read as int8 would clamp).
    w = SpecWriter(os.path.join(bad, "signedness.ckpt.h5"))
    w.add("parameters", "w", "int8", np.array([1, 200, 255], dtype="u1"))
    w.close({})
    # Bad: the index needs a group that is not there.
    w = SpecWriter(os.path.join(bad, "missing_group.ckpt.h5"))
    w.add("parameters", "w", "float32", np.zeros(2, dtype="<f4"))
    w.entries.append({"name": "b", "section": "buffers", "dtype": "float32", "shape": [1]})
    w.close({})
    # Bad: a member named twice in an index entry (read as one or the other by different parsers).
    w = SpecWriter(os.path.join(bad, "duplicate_member.ckpt.h5"))
    w.add("parameters", "w", "float32", np.zeros(2, dtype="<f4"))
    w.close({}, index_override='{"tensors": [{"name": "w", "section": "parameters", "dtype": "float32", '
                               '"shape": [2], "dtype": "int32"}]}')

    # Good: partial edge chunks stored unfiltered (H5Pset_chunk_opts DONT_FILTER_PARTIAL_CHUNKS,
    # which h5py does not expose: called through ctypes on the HDF5 library h5py uses), for shuffle
    # alone and shuffle + zstd. Nothing in a chunk's filter mask says it was not filtered.
    import ctypes
    import ctypes.util
    hdf5 = ctypes.CDLL(ctypes.util.find_library("hdf5_serial") or ctypes.util.find_library("hdf5"))
    w = SpecWriter(os.path.join(good, "partial_chunks.ckpt.h5"))
    values = np.arange(7 * 11, dtype="<f4").reshape(7, 11) + 0.5
    for name, zstd in [("shuffled", False), ("zstd", True)]:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((3, 5))
        dcpl.set_shuffle()
        if zstd:
            dcpl.set_filter(ZSTD, h5py.h5z.FLAG_MANDATORY, (3,))
        assert hdf5.H5Pset_chunk_opts(ctypes.c_int64(dcpl.id), ctypes.c_uint(0x0002)) >= 0
        d = h5py.h5d.create(w.group("parameters").id, name.encode(), h5py.h5t.IEEE_F32LE,
                            h5py.h5s.create_simple(values.shape), dcpl=dcpl)
        d.write(h5py.h5s.ALL, h5py.h5s.ALL, values)
        w.entries.append({"name": name, "section": "parameters", "dtype": "float32", "shape": [7, 11],
                          "checksum": checksum(values.tobytes())})
    w.close({})

    # Bad: data that is not in the file (an external link, external storage, a virtual dataset:
    # they would read any file on the disk) or was never written (HDF5 would fill it in).
    def bad_one(name, make):
        w = SpecWriter(os.path.join(bad, name))
        w.entries.append(make(w.group("parameters")))
        w.close({})
    bad_one("external_link.ckpt.h5", lambda g: (g.__setitem__("x", h5py.ExternalLink("elsewhere.h5", "/y")),
                                               {"name": "x", "section": "parameters", "dtype": "float32", "shape": [4]})[1])
    bad_one("external_storage.ckpt.h5",
            lambda g: (g.create_dataset("x", shape=(32,), dtype="<u1", external=[("outside.bin", 0, 32)]),
                       {"name": "x", "section": "parameters", "dtype": "uint8", "shape": [32]})[1])

    def virtual(g):
        layout = h5py.VirtualLayout(shape=(8,), dtype="<f4")
        layout[:] = h5py.VirtualSource("elsewhere.h5", "x", shape=(8,))
        g.create_virtual_dataset("x", layout, fillvalue=0)
        return {"name": "x", "section": "parameters", "dtype": "float32", "shape": [8]}
    bad_one("virtual.ckpt.h5", virtual)
    bad_one("unwritten_chunks.ckpt.h5", lambda g: (g.create_dataset("x", shape=(64, 64), dtype="<f4", chunks=(16, 64)),
                                                  {"name": "x", "section": "parameters", "dtype": "float32",
                                                   "shape": [64, 64]})[1])
    bad_one("unwritten_contiguous.ckpt.h5", lambda g: (g.create_dataset("x", shape=(1024,), dtype="<f4"),
                                                      {"name": "x", "section": "parameters", "dtype": "float32",
                                                       "shape": [1024]})[1])
    bad_one("many_chunks.ckpt.h5", lambda g: (g.create_dataset("x", shape=(1 << 22,), dtype="<f4", chunks=(1,)),
                                             {"name": "x", "section": "parameters", "dtype": "float32",
                                              "shape": [1 << 22]})[1])

    bad_index = os.path.join(bad, "bad_index.ckpt.h5")
    w = SpecWriter(bad_index)
    w.add("parameters", "x", "float32", np.zeros(2, dtype="<f4"))
    w.close(METADATA, index_override='{"tensors": [ {"name": "x", ')

    # safetensors
    t = {"w": ("F32", np.arange(4, dtype="<f4")), "b": ("I64", np.arange(2, dtype="<i8"))}
    write_safetensors(os.path.join(good, "plain.safetensors"), t, metadata={"format": "pt"})
    write_safetensors(os.path.join(bad, "st_truncated.safetensors"), t)
    with open(os.path.join(bad, "st_truncated.safetensors"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) - 3)
    write_safetensors(os.path.join(bad, "st_trailing.safetensors"), t, tail=b"xyz")
    with open(os.path.join(bad, "st_huge_header.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 200_000_000) + b"{}")
    with open(os.path.join(bad, "st_header_past_end.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 1000) + b"{}" + b" " * 6)
    hdr = b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}'
    write_safetensors(os.path.join(bad, "st_lying_size.safetensors"), {}, raw_header=hdr, tail=b"\0" * 12)
    hdr = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}'
    write_safetensors(os.path.join(bad, "st_overlap.safetensors"), {}, raw_header=hdr, tail=b"\0" * 6)
    hdr = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}'
    write_safetensors(os.path.join(bad, "st_gap.safetensors"), {}, raw_header=hdr, tail=b"\0" * 12)
    hdr = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    write_safetensors(os.path.join(bad, "st_duplicate.safetensors"), {}, raw_header=hdr, tail=b"\0" * 8)
    hdr = b'{"w":{"dtype":"F4","shape":[1],"data_offsets":[0,4]}}'
    write_safetensors(os.path.join(bad, "st_unknown_dtype.safetensors"), {}, raw_header=hdr, tail=b"\0" * 4)
    hdr = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    write_safetensors(os.path.join(bad, "st_bad_json.safetensors"), {}, raw_header=hdr, tail=b"\0" * 4)
    hdr = b'{"w\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    write_safetensors(os.path.join(bad, "st_bad_utf8.safetensors"), {}, raw_header=hdr, tail=b"\0" * 4)
    hdr = b'{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}'
    write_safetensors(os.path.join(bad, "st_overflow.safetensors"), {}, raw_header=hdr, tail=b"\0" * 4)


if __name__ == "__main__":
    main()
