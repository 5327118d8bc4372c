#!/usr/bin/env python3
"""Are the objects a chain's scene description names in the scene it was asked about?

  description_names.py WORLD PREDICTIONS...

WORLD is the benchmark's world folder (`cooper world`, with `eval.tsv`, `scenes.jsonl` and
`sft_describe.jsonl`); PREDICTIONS are `cooper eval` predictions of chains that open with the scene
description (`cooper world --description-thoughts`), or that wrote one before the question
(`--describe-first`: the prediction's `description` field, read in its place). For each file: how
many descriptions the chains' last turns hold, how many of those name an object twice (the world
never puts two objects of one colour and shape in a scene), and of the distinct "COLOUR SHAPE"
names, the share that are in the question's scene (precision) and the share of the scene's objects
named (recall). Run on
predictions made with `--images shuffled` too: that is the bar, what the chains name from the
question and their priors alone (docs/results.md, eighteenth run).
"""
import csv
import json
import re
import sys

from listing_probe import DESCRIBED

# The description's object list; what follows it in the turn is left out.
LISTING = re.compile(r"From left to right: (.*?)\.(?: This| The| |$)", re.S)


def names(text):
    m = LISTING.search(text)
    return [f"{colour} {shape}" for colour, shape, _ in DESCRIBED.findall(m.group(1))] if m else None


def truth(world):
    """Scene id -> the set of object names its ground-truth description gives."""
    with open(f"{world}/scenes.jsonl") as f:
        ids = [json.loads(line)["id"] for line in f]
    out = {}
    with open(f"{world}/sft_describe.jsonl") as f:
        # One description row a scene, in scenes.jsonl's order.
        for scene, line in zip(ids, f):
            items = json.loads(line)["interleaved_reason"]
            text = " ".join(i["value"] for i in items if i["type"] == "text")
            out[scene] = set(names(text) or [])
    return out


def question_scenes(world):
    """Benchmark index -> scene id (a question id is SCENE_qN)."""
    csv.field_size_limit(1 << 30)
    with open(f"{world}/eval.tsv", newline="") as f:
        return {r["index"]: r["data_id"].rsplit("_q", 1)[0] for r in csv.DictReader(f, delimiter="\t")}


def main(world, files):
    scene_objects, scene_of = truth(world), question_scenes(world)
    for path in files:
        described = repeating = named = hits = present = 0
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                found = names(row.get("description") or row["raw_output"])
                if found is None:
                    continue
                objects = scene_objects[scene_of[row["index"]]]
                described += 1
                repeating += len(found) != len(set(found))
                named += len(set(found))
                hits += len(set(found) & objects)
                present += len(objects)
        if described == 0:
            print(f"{path}: no scene descriptions")
            continue
        print(
            f"{path}: {described} descriptions, {repeating} name an object twice; "
            f"{named} distinct names, {hits} in the scene: precision {100 * hits / named:.1f} %, "
            f"recall {100 * hits / present:.1f} %"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
