#!/usr/bin/env python3
"""How much does a model's turn after a depth map depend on the map it is shown?

  map_probe.py rows WORLD OUT [N]   the first N (40) chains of WORLD/sft_interleaved.jsonl that call
                                    depth alone: OUT/pics/II.png (scene), OUT/pics/II_truth.png (the
                                    ground-truth map the chain holds)
  map_probe.py swap OUT             after OUT/pics/II_gen.png exist (`cooper depth --image
                                    OUT/pics/II.png --steps 10 --out OUT/pics/II_gen.png`), writes
                                    OUT/truth.jsonl and OUT/generated.jsonl: the same chains, the
                                    map swapped in the second
  map_probe.py score RUN...         loss-token-weighted mean CE of each `cooper train sft` run
                                    (metrics.jsonl), run at lr 0 on one of the two files

Text before the map cannot attend to it, so the two files' CE differ only in the turns after the
map. docs/results.md (seventeenth run) has the commands and figures.
"""
import base64
import json
import os
import sys


def loss_turn(item):
    return item["type"] == "text" and str(item.get("need_loss")).lower() == "true"


def depth_only(items):
    calls = [i for i in items if loss_turn(i) and ("<depth-estimation>" in i["value"] or "<segmentation>" in i["value"])]
    pictures = sum(i["type"] == "image" for i in items)
    return len(calls) == 1 and "<depth-estimation>" in calls[0]["value"] and pictures == 2


def rows(world, out, n):
    os.makedirs(f"{out}/pics", exist_ok=True)
    kept = []
    with open(f"{world}/sft_interleaved.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if depth_only(row["interleaved_reason"]):
                kept.append(row)
            if len(kept) == n:
                break
    for k, row in enumerate(kept):
        scene, truth = [i["value"] for i in row["interleaved_reason"] if i["type"] == "image"]
        for name, data in ((f"{k:02d}.png", scene), (f"{k:02d}_truth.png", truth)):
            with open(f"{out}/pics/{name}", "wb") as f:
                f.write(base64.b64decode(data))
    with open(f"{out}/rows.json", "w") as f:
        json.dump(kept, f)
    print(f"{len(kept)} chains calling depth alone -> {out}")


def swap(out):
    with open(f"{out}/rows.json") as f:
        kept = json.load(f)
    for variant, suffix in (("truth", "truth"), ("generated", "gen")):
        with open(f"{out}/{variant}.jsonl.tmp", "w") as f:
            for k, row in enumerate(kept):
                items = [dict(i) for i in row["interleaved_reason"]]
                second = [j for j, i in enumerate(items) if i["type"] == "image"][1]
                with open(f"{out}/pics/{k:02d}_{suffix}.png", "rb") as p:
                    items[second]["value"] = base64.b64encode(p.read()).decode()
                f.write(json.dumps({"interleaved_reason": items}) + "\n")
        os.replace(f"{out}/{variant}.jsonl.tmp", f"{out}/{variant}.jsonl")
    print(f"{out}/truth.jsonl, {out}/generated.jsonl: {len(kept)} chains each")


def score(runs):
    for run in runs:
        with open(f"{run}/metrics.jsonl") as f:
            steps = [json.loads(line) for line in f]
        tokens = sum(s["ce_tokens"] for s in steps)
        mean = sum(s["ce"] * s["ce_tokens"] for s in steps) / tokens
        print(f"{run}: CE {mean:.4f} nats per loss token over {tokens:.0f} tokens, {len(steps)} steps")


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "rows":
        rows(args[1], args[2], int(args[3]) if len(args) > 3 else 40)
    elif len(args) == 2 and args[0] == "swap":
        swap(args[1])
    elif len(args) >= 2 and args[0] == "score":
        score(args[1:])
    else:
        sys.exit(__doc__)
