#!/usr/bin/env python3
"""listing_probe.py: how much of a picture a model reads, scored object by object.

  listing_probe.py bench WORLD OUT [cells|describe]
                                        writes OUT/cells.tsv (one question per scene of WORLD,
                                        a `cooper world` folder) and OUT/truth.json
  listing_probe.py score OUT PRED...    scores each `cooper eval` predictions.jsonl against it

The question is one the recipe trains: the world's cell listing, "What is in each cell of a 3x3
grid over the image?" (sft_cells.jsonl, and every GROUNDED=1 listing thought), or its scene
description, "Describe every object in the image: ..." (sft_describe.jsonl, every recipe). Run
it through `cooper eval --bench OUT/cells.tsv --mode cooper --out E` (and again with
`--images shuffled`): the answer is read from the first <think> turn of each item's raw output. A listed object counts as
right only in its true cell, by colour and shape both; colour and shape are also scored apart
(any object of that colour, or shape, in the cell), and so is naming an object in any cell
(identification without placing). The shuffled run is the bar: what the model
lists for a picture it is not shown. Standard library only.
"""
import base64
import json
import os
import re
import sys

SOURCES = {"cells": "sft_cells.jsonl", "describe": "sft_describe.jsonl"}
DESCRIBED = re.compile(r"the (\w+) (\w+), in the ([\w-]+) cell")


def cells_of(listing):
    """'top-left: nothing; center: red cube and blue box.' -> {cell: [names]}; a description
    ('... the red cube, in the center cell, about 3.1 m ...') -> its objects' cells alone."""
    out = {}
    if listing.strip().startswith("I can see"):
        for colour, shape, cell in DESCRIBED.findall(listing):
            out.setdefault(cell, []).append(f"{colour} {shape}")
        return out
    for part in listing.strip().rstrip(".").split(";"):
        if ":" not in part:
            continue
        cell, what = part.split(":", 1)
        what = what.strip()
        names = [] if what in ("", "nothing") else [w.strip() for w in what.split(" and ")]
        out[cell.strip()] = names
    return out


def bench(world, out, source):
    os.makedirs(out, exist_ok=True)
    truth, rows = {}, []
    with open(os.path.join(world, SOURCES[source])) as f:
        for i, line in enumerate(f):
            items = json.loads(line)["interleaved_reason"]
            image = next(it["value"] for it in items if it["type"] == "image")
            question = items[-2]["value"]
            answer = items[-1]["value"]
            listing = re.search(r"<think>(.*?)</think>", answer, re.S).group(1)
            count = re.search(r"\\boxed\{(\d+)\}", answer).group(1)
            if not image.startswith("iVBOR"):  # a path, not inline data
                with open(os.path.join(world, image), "rb") as p:
                    image = base64.b64encode(p.read()).decode()
            truth[str(i)] = cells_of(listing)
            rows.append([str(i), image, question, "", "", "", "", count, source, "open", "",
                         "positive", "cells", f"{source}_{i}"])
    header = ["index", "image", "question", "A", "B", "C", "D", "answer", "category", "type",
              "unit", "flag", "benchmark_group", "data_id"]
    tmp = os.path.join(out, ".cells.tsv.tmp")
    with open(tmp, "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    os.replace(tmp, os.path.join(out, "cells.tsv"))
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f)
    print(f"{len(rows)} scenes -> {out}/cells.tsv")


def split_name(name):
    words = name.split()
    return (words[0], " ".join(words[1:])) if len(words) > 1 else ("", name)


def score(out, preds):
    truth = json.load(open(os.path.join(out, "truth.json")))
    print("| predictions | scenes | listings parsed | objects listed | precision | recall | "
          "colour recall | shape recall | recall, any cell | empty cells right |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in preds:
        n = parsed = listed = right = total = colour = shape = empty_ok = empty = anywhere = 0
        for line in open(path):
            r = json.loads(line)
            want = truth.get(r["index"])
            if want is None:
                continue
            n += 1
            m = re.search(r"<think>(.*?)</think>", r["raw_output"], re.S)
            got = cells_of(m.group(1)) if m else {}
            if m and (len(got) == 9 or "I can see" in m.group(1)):
                parsed += 1
            named = [x for have in got.values() for x in have]
            for names in want.values():
                for x in names:
                    if x in named:
                        named.remove(x)
                        anywhere += 1
            listed += sum(len(have) for have in got.values())
            for cell, names in want.items():
                have = got.get(cell, [])
                total += len(names)
                right += sum(1 for x in set(have) if x in names)
                colours = {split_name(x)[0] for x in have}
                shapes = {split_name(x)[1] for x in have}
                colour += sum(1 for x in names if split_name(x)[0] in colours)
                shape += sum(1 for x in names if split_name(x)[1] in shapes)
                if not names:
                    empty += 1
                    empty_ok += not have
        pct = lambda a, b: f"{100 * a / b:.1f}" if b else "-"
        print(f"| {path} | {n} | {parsed} | {listed} | {pct(right, listed)} | {pct(right, total)} | "
              f"{pct(colour, total)} | {pct(shape, total)} | {pct(anywhere, total)} | "
              f"{pct(empty_ok, empty)} |")


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "bench":
        bench(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else "cells")
    elif len(sys.argv) >= 4 and sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
