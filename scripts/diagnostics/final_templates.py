#!/usr/bin/env python3
"""Which template each yes/no chain's last thought follows, by the question's category.

  final_templates.py PREDICTIONS.jsonl...

Reads `cooper eval` predictions. Training chains end each yes/no category with its own sentence
(existence: "The description names the X, which matches." or "Nothing in the description
matches."; relation reasons: "... The question asks if it is P the B: No."; occlusion: "About 40%
of the X is hidden ..." or "... is fully visible ..."; verdict first: "As I found, the answer is
No."). A model that keeps track of the question writes its category's sentence; one that has lost
the question by the end of a long chain writes any of them. Prints one table per file: rows are
categories, columns templates, cells counts.
"""
import json
import sys
from collections import Counter, defaultdict

# First match wins: the verdict-first closing can follow any other sentence.
TEMPLATES = (
    ("verdict first", ("As I found, the answer is",)),
    ("relation reasons", ("The question asks if it is",)),
    ("existence", ("which matches.", "Nothing in the description matches", "Nothing in the listing matches")),
    ("occlusion", ("hidden by an object in front", "fully visible")),
    ("relation, plain", (" to the left of ", " to the right of ", " above ", " below ",
                         " closer to the camera than ", " farther from the camera than ")),
)


def last_thought(output):
    start = output.rfind("<think>")
    end = output.find("</think>", start)
    return output[start:end] if start >= 0 else ""


def template(output):
    thought = last_thought(output)
    for name, marks in TEMPLATES:
        if any(m in thought for m in marks):
            return name
    return "other"


def main(paths):
    names = [n for n, _ in TEMPLATES] + ["other"]
    for path in paths:
        table = defaultdict(Counter)
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r["kind"] == "yes_no":
                    table[r["category"]][template(r.get("raw_output") or "")] += 1
        print(f"## {path}\n")
        print("| category | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for category in sorted(table):
            print(f"| {category} | " + " | ".join(str(table[category][n]) for n in names) + " |")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
