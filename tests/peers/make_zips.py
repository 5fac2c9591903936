#!/usr/bin/env python3
"""Writes the zip archives of tests/data/zip with Python's zipfile (the peer), good and corrupt.

    make_zips.py OUTDIR
"""
import os
import struct
import sys
import zipfile

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    path = lambda name: os.path.join(out, name)  # noqa: E731

    def info(name, method=zipfile.ZIP_STORED):
        i = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))  # fixed: reproducible files
        i.compress_type = method
        return i

    with zipfile.ZipFile(path("mixed.zip"), "w") as z:
        z.writestr(info("archive/data.pkl"), b"stored bytes")
        z.writestr(info("archive/data/0", zipfile.ZIP_DEFLATED), PAYLOAD)
        z.writestr(info("archive/empty"), b"")
    with zipfile.ZipFile(path("zip64.zip"), "w") as z:
        with z.open(info("big/entry"), "w", force_zip64=True) as f:
            f.write(PAYLOAD)

    good = open(path("mixed.zip"), "rb").read()
    # Flip a byte of the deflated entry's data: CRC-32 or inflate must catch it.
    with zipfile.ZipFile(path("mixed.zip")) as z:
        info = z.getinfo("archive/data/0")
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", good[local + 26:local + 30])
    data = local + 30 + name_len + extra_len
    bad = bytearray(good)
    bad[data + 3] ^= 0x40
    open(path("bad_deflate.zip"), "wb").write(bytes(bad))
    open(path("truncated.zip"), "wb").write(good[: len(good) // 2])
    # A central directory that claims an uncompressed size of 4 GiB - 2 for the deflated entry.
    bad = bytearray(good)
    first = good.find(b"PK\x01\x02")
    second = good.find(b"PK\x01\x02", first + 4)
    bad[second + 24:second + 28] = struct.pack("<I", 0xFFFFFFFE)
    open(path("lying_size.zip"), "wb").write(bytes(bad))
    # Stored entry whose data runs past the end of the file.
    bad = bytearray(good)
    bad[first + 20:first + 28] = struct.pack("<II", 1 << 30, 1 << 30)
    open(path("past_end.zip"), "wb").write(bytes(bad))


if __name__ == "__main__":
    main()
