#!/usr/bin/env python3
"""How a model's yes/no answers depend on the true answer.

  yes_no_table.py PREDICTIONS.jsonl...

Reads `cooper eval` predictions and prints, per yes/no category, how often the model answered
Yes when the true answer is Yes and when it is No. A model that reads the picture says Yes more
often in the first case; one that answers from a template says it equally often in both; one
whose chains invert the relation says it more often in the second. Spatial-relation questions
are also split by the relation the question asks (left, right, higher, lower), since a chain may
handle one and template another. Unanswered items count as neither Yes nor No.
"""
import json
import sys
from collections import Counter, defaultdict


def relation(question):
    q = question.split("\n")[0].lower()
    for word, name in (("left", "left"), ("right", "right"), ("higher", "higher"),
                       ("above", "higher"), ("lower", "lower"), ("below", "lower")):
        if word in q:
            return name
    return "other"


def predicted(record):
    p = record.get("prediction") or {}
    if p.get("kind") != "yes_no":
        return None
    return "Yes" if p.get("value") else "No"


def main(paths):
    for path in paths:
        groups = defaultdict(Counter)
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r["kind"] != "yes_no":
                    continue
                keys = [r["category"]]
                if r["category"] == "spatial_relation":
                    keys.append("spatial_relation: " + relation(r["question"]))
                for key in keys:
                    groups[key][(r["answer"], predicted(r))] += 1
        print(f"| {path} | true Yes | said Yes | true No | said Yes | accuracy % |")
        print("|---|---:|---:|---:|---:|---:|")
        for key, c in sorted(groups.items()):
            yes = sum(v for (a, _), v in c.items() if a == "Yes")
            no = sum(v for (a, _), v in c.items() if a == "No")
            right = c[("Yes", "Yes")] + c[("No", "No")]
            acc = 100.0 * right / (yes + no) if yes + no else 0.0
            print(f"| {key} | {yes} | {c[('Yes', 'Yes')]} | {no} | {c[('No', 'Yes')]} | {acc:.1f} |")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
