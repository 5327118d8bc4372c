#!/usr/bin/env python3
"""Does a model's answer say what its final thought concluded?

  thought_vs_answer.py PREDICTIONS.jsonl...

Reads `cooper eval` predictions of the synthetic world's benchmark. For each multiple-choice item
of the categories below it takes the content the final thought commits to ("the cylinder is
red.", "lies in the top-center cell", ": 1 in all.", "the nearest is the cyan cone.") and the
last `\\boxed{}` of the output, and counts, per category: items, thoughts whose content equals the
box, thoughts whose content is the right option's text, and answers scored right. Written for
chains that answer in words (`cooper world --option-text-answers`); with letter answers the box
never equals the thought.
"""
import collections
import json
import re
import sys

CONCLUSION = {
    "color": r" is (\w+)\. </think>",
    "shape": r" is a (\w+)\. </think>",
    "spatial_grid": r"lies in the ([\w-]+) cell",
    "counting": r": (\d+) in all\.",
    "relative_distance": r"the nearest is the ([\w ]+?)\. </think>",
}


def options(question):
    return {line[0]: line[3:] for line in question.split("\n") if re.match(r"^[A-Z]\. ", line)}


def last(pattern, text):
    found = re.findall(pattern, text)
    return found[-1].strip() if found else None


def main(paths):
    if not paths:
        sys.exit(__doc__)
    for path in paths:
        counts = collections.defaultdict(lambda: [0, 0, 0, 0])
        with open(path) as f:
            for line in f:
                p = json.loads(line)
                if p["kind"] != "multiple_choice" or p["category"] not in CONCLUSION:
                    continue
                thought = last(CONCLUSION[p["category"]], p["raw_output"])
                box = last(r"\\boxed\{([^}]*)\}", p["raw_output"])
                c = counts[p["category"]]
                c[0] += 1
                c[1] += thought is not None and thought == box
                c[2] += thought is not None and thought == options(p["question"]).get(p["answer"])
                c[3] += bool(p.get("correct"))
        print(f"| {path} | n | box = thought | thought right | answer right |")
        print("|---|---:|---:|---:|---:|")
        for category, (n, same, thought_right, right) in sorted(counts.items()):
            print(f"| {category} | {n} | {same} | {thought_right} | {right} |")


if __name__ == "__main__":
    main(sys.argv[1:])
