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

A second table reads the first thought's restatement of the options ("The options are: red,
cyan, white.", written by chains that answer in words): per multiple-choice category, items,
restatements found, restatements equal to the options, and options restated in their place.
`cooper eval` keeps only a chain's last turn, so only chains that call no tool are counted.

A third table reads the turn after a generated map: of the chains that called one tool, how many
last turns open with that tool's words ("In the depth map", "The segmentation map") and how many
with the other's.
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
    "depth_order": r"the closest is the ([\w ]+?)\. </think>",
    "size_comparison": r"the tallest is the ([\w ]+?)\. </think>",
}
RESTATED = r"The options are: (.*?)\. "


def options(question):
    return {line[0]: line[3:] for line in question.split("\n") if re.match(r"^[A-Z]\. ", line)}


def last(pattern, text):
    found = re.findall(pattern, text)
    return found[-1].strip() if found else None


def restated(path):
    """Per multiple-choice category: [items, restatements, exact ones, options in place, options
    of the restated items]."""
    counts = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    with open(path) as f:
        for line in f:
            p = json.loads(line)
            if p["kind"] != "multiple_choice":
                continue
            shown = list(options(p["question"]).values())
            said = re.search(RESTATED, p["raw_output"])
            c = counts[p["category"]]
            c[0] += 1
            if said is None:
                continue
            said = [s.strip() for s in said.group(1).split(",")]
            c[1] += 1
            c[4] += len(shown)
            c[2] += said == shown
            c[3] += sum(a == b for a, b in zip(said, shown))
    return counts


OPENINGS = {"depth": "<think> In the depth map", "segmentation": "<think> The segmentation map"}


def after_maps(path):
    """Per tool called alone: [chains, last turns in its words, in the other tool's words]."""
    counts = {tool: [0, 0, 0] for tool in OPENINGS}
    with open(path) as f:
        for line in f:
            p = json.loads(line)
            calls = {"depth": p["depth_calls"], "segmentation": p["segmentation_calls"]}
            called = [tool for tool, n in calls.items() if n > 0]
            if len(called) != 1:
                continue
            tool, = called
            other, = (t for t in OPENINGS if t != tool)
            turn = p["raw_output"].lstrip()
            c = counts[tool]
            c[0] += 1
            c[1] += turn.startswith(OPENINGS[tool])
            c[2] += turn.startswith(OPENINGS[other])
    return counts


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
        print()
        print(f"| {path} | n | restated | restated exactly | options in place |")
        print("|---|---:|---:|---:|---:|")
        for category, (n, found, exact, in_place, total) in sorted(restated(path).items()):
            print(f"| {category} | {n} | {found} | {exact} | {in_place} of {total} |")
        print()
        print(f"| {path} | chains calling it alone | next turn in its words | in the other's |")
        print("|---|---:|---:|---:|")
        for tool, (n, own, other) in after_maps(path).items():
            print(f"| {tool} | {n} | {own} | {other} |")


if __name__ == "__main__":
    main(sys.argv[1:])
