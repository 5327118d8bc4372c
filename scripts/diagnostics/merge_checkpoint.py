#!/usr/bin/env python3
"""merge_checkpoint.py MODEL CHECKPOINT OUT: a model folder at OUT made of MODEL's folder with
CHECKPOINT's EMA weights laid over MODEL's ema.safetensors.

A training checkpoint holds only the weights its run trained (a run with the ViT frozen saves no
ViT), so it cannot be given to `--init-from` as it is; the merged folder can. Standard library
only; OUT appears only once it is complete."""
import json
import os
import shutil
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], v["shape"], data[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in header.items()}


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape, blob = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def main(model, checkpoint, out):
    tensors = read_safetensors(os.path.join(model, "ema.safetensors"))
    trained = read_safetensors(os.path.join(checkpoint, "ema.safetensors"))
    unknown = sorted(set(trained) - set(tensors))
    if unknown:
        sys.exit(f"{checkpoint}/ema.safetensors: tensor {unknown[0]} is not in {model}/ema.safetensors")
    for name, (dtype, shape, _) in trained.items():
        if (dtype, shape) != tensors[name][:2]:
            sys.exit(f"{checkpoint}/ema.safetensors: tensor {name} is {dtype} {shape}, "
                     f"{model} has {tensors[name][0]} {tensors[name][1]}")
    tensors.update(trained)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in os.listdir(model):
        if name != "ema.safetensors" and os.path.isfile(os.path.join(model, name)):
            shutil.copy(os.path.join(model, name), tmp)
    write_safetensors(os.path.join(tmp, "ema.safetensors"), tensors)
    os.replace(tmp, out)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
