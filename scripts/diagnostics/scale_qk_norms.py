#!/usr/bin/env python3
"""scale_qk_norms.py SRC DST FACTOR: copies model folder SRC to DST with every LLM q_norm and
k_norm weight (f32) multiplied by FACTOR, which raises the largest attention logit QK-norm allows.
Standard library only: a safetensors file is an 8-byte header length, a JSON header, then the data."""
import array
import json
import os
import shutil
import struct
import sys

if len(sys.argv) != 4:
    sys.exit(__doc__)
src, dst, factor = sys.argv[1], sys.argv[2], float(sys.argv[3])
tmp = dst + ".tmp"
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(src, tmp)
for name in sorted(os.listdir(tmp)):
    if not name.endswith(".safetensors") or name.startswith("ae"):
        continue
    path = os.path.join(tmp, name)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = struct.unpack("<Q", data[:8])[0]
    header, base, scaled = json.loads(data[8:8 + n]), 8 + n, 0
    for key, info in header.items():
        if key == "__metadata__" or not ("q_norm" in key or "k_norm" in key):
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: tensor {key} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        values = array.array("f")
        values.frombytes(bytes(data[base + start:base + end]))
        data[base + start:base + end] = array.array("f", (v * factor for v in values)).tobytes()
        scaled += 1
    with open(path, "wb") as f:
        f.write(data)
    print(f"{name}: {scaled} tensors scaled by {factor}")
os.replace(tmp, dst)
