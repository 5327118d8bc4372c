#!/usr/bin/env python3
"""Direct-answer rows: can the model answer a yes/no question from the picture at once?

  query_rows.py WORLD OUT.jsonl CATEGORIES

Writes one SFT row per question of WORLD (a `cooper world` folder) in the comma-separated
CATEGORIES (e.g. existence,spatial_relation,occlusion,depth_order): the picture, the question
with its format hint, and the learnt turn `<think> I will answer from the picture alone.
</think>\\n<answer> So the answer is \\boxed{ Yes}. </answer>`, whose only varying token is the
verdict. Trained with `cooper train sft` from a finished model, the CE of that token (the run's
`ce` times its `ce_tokens`, divided by the rows a step) shows whether the picture is read: ln 2
= 0.693 a verdict is a coin (docs/results.md, twenty-fourth run).
"""
import base64
import json
import os
import sys


def main(args):
    if len(args) != 3:
        sys.exit(__doc__)
    world, out, categories = args[0], args[1], set(args[2].split(","))
    n = 0
    with open(out + ".tmp", "w") as f:
        for line in open(os.path.join(world, "questions.jsonl")):
            q = json.loads(line)
            if q["category"] not in categories or q["kind"] != "yes_no":
                continue
            with open(os.path.join(world, "images", q["scene_id"] + ".png"), "rb") as image:
                picture = base64.b64encode(image.read()).decode()
            answer = ("<think> I will answer from the picture alone. </think>\n"
                      "<answer> So the answer is \\boxed{ " + q["answer"] + "}. </answer>")
            row = {"interleaved_reason": [
                {"type": "image", "value": picture, "need_loss": "false"},
                {"type": "text", "value": q["text"] + "\nAnswer with Yes or No.", "need_loss": "false"},
                {"type": "text", "value": answer, "need_loss": "true"}],
                "data_id": q["id"] + "-query", "category": q["category"], "flag": q["flag"]}
            f.write(json.dumps(row) + "\n")
            n += 1
    os.replace(out + ".tmp", out)
    print(f"{n} rows to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
