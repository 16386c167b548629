#!/usr/bin/env python3
"""Safetensors fixtures for sn-info.bats, written with numpy + json only
(no safetensors package, no sn code).

    st_fixtures.py DIR

DIR/foreign.safetensors  a file as a foreign tool writes it: no padding,
                         no metadata, tensors of several dtypes, a scalar
DIR/foreign.stats        "name min max mean std l2 elements" per tensor, by numpy
DIR/good.safetensors     the same tensors with format and crc32 metadata
DIR/bad-*.safetensors    one corruption each (see CORRUPT below)
"""
import json
import os
import sys
import zlib

import numpy as np


def pack(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    return len(h).to_bytes(8, "little") + h + data


def tensors():
    rng = np.random.default_rng(7)
    return [
        ("w", rng.standard_normal((3, 4)).astype("<f4")),
        ("counts", np.array([5, -2, 7, 0, 11], dtype="<i4")),
        ("pixels", np.array([[0, 255], [17, 3]], dtype="u1")),
        ("scale", np.array(2.5, dtype="<f8")),
        ("half", np.array([1.0, -0.5, 65504.0], dtype="<f2")),
        ("none", np.zeros((0, 3), dtype="<f4")),
    ]


def layout(ts, meta=None):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, a in ts:
        raw = a.tobytes()
        header[name] = {"dtype": {"f": "F", "i": "I", "u": "U"}[a.dtype.kind] + str(8 * a.itemsize),
                        "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def with_crc(ts):
    header, data = layout(ts, {"format": "test", "crc32": ""})
    header["__metadata__"]["crc32"] = "%08x" % zlib.crc32(data)
    return header, data


def one(dtype, shape, offsets):
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def corrupt(good_header, good_data, good):
    n = int.from_bytes(good[:8], "little")
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    return {
        "trunc-in-length": good[:5],
        "trunc-in-header": good[:8 + n // 2],
        "trunc-in-data": good[:-3],
        "header-past-eof": (len(good) * 2).to_bytes(8, "little") + good[8:],
        "header-2p63": (1 << 63).to_bytes(8, "little") + good[8:],
        "bad-json": pack_raw(b'{"a": {"dtype": "F32",', b""),
        "duplicate-key": pack_raw(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                  b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"xy"),
        "unknown-dtype": pack({"a": one("F33", [1], [0, 4])}, b"abcd"),
        "shape-overflow": pack({"a": one("U8", [1 << 32, 1 << 32], [0, 0])}, b""),
        "offsets-out-of-range": pack({"a": one("U8", [64], [0, 64])}, b"abcd"),
        "offsets-overlap": pack({"a": one("U8", [4], [0, 4]), "b": one("U8", [4], [2, 6])},
                                b"abcdef"),
        "offsets-gap": pack({"a": one("U8", [2], [0, 2]), "b": one("U8", [2], [4, 6])},
                            b"abcdef"),
        "offsets-wrong-length": pack({"a": one("F32", [2], [0, 4])}, b"abcd"),
        "crc-mismatch": bytes(flipped),
        "metadata-not-string": pack({"__metadata__": {"round": 3}}, b""),
        "not-an-object": pack_raw(b"[1, 2, 3]", b""),
    }


def pack_raw(h, data):
    return len(h).to_bytes(8, "little") + h + data


def stats(ts):
    lines = []
    for name, a in ts:
        x = a.astype(np.float64).ravel()
        if x.size:
            lines.append("%s %.17g %.17g %.17g %.17g %.17g %d" % (
                name, x.min(), x.max(), x.mean(), x.std(), np.sqrt((x * x).sum()), x.size))
        else:
            lines.append("%s 0 0 0 0 0 0" % name)
    return "\n".join(lines) + "\n"


def main():
    out = sys.argv[1]
    ts = tensors()
    header, data = layout(ts)
    open(os.path.join(out, "foreign.safetensors"), "wb").write(pack(header, data))
    open(os.path.join(out, "foreign.stats"), "w").write(stats(ts))
    gh, gd = with_crc(ts)
    good = pack(gh, gd)
    open(os.path.join(out, "good.safetensors"), "wb").write(good)
    for name, raw in corrupt(gh, gd, good).items():
        open(os.path.join(out, "bad-%s.safetensors" % name), "wb").write(raw)


if __name__ == "__main__":
    main()
