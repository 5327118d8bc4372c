#!/usr/bin/env python3
"""How faithfully target-first chains copy what the question looks for, and whether the copy helps.

  target_copies.py PREDICTIONS.jsonl...

Reads `cooper eval` predictions of a model trained with `cooper world --target-first`, whose
existence and relation chains say "The question looks for a cyan object." or "The question
compares the red cube with the blue sphere." before their verdict. For each category with such
sentences: how many chains write one, how many copy the question exactly (the phrase, or both
object names, occur in the question), and the accuracy of the exact and the wrong copies. The
existence rows also say how often the matched object the chain then names ("The description
names the cyan cone, which matches.") has the looked-for words.
"""
import json
import re
import sys
from collections import defaultdict

LOOKS = re.compile(r"The question looks for (an? [a-z ]+?)\.")
COMPARES = re.compile(r"The question compares the ([a-z ]+?) with the ([a-z ]+?)\.")
NAMES = re.compile(r"The description names (.+?), which matches\.")


def correct(row):
    if row.get("correct") is not None:
        return bool(row["correct"])
    return False


def question_line(row):
    return row["question"].split("\n")[0]


def copy_of(row):
    """(wrote a target sentence, the copy is exact, the named match has the looked-for words)."""
    text, q = row["raw_output"], question_line(row)
    if m := LOOKS.search(text):
        what = m.group(1)
        exact = f" {what} " in q or f" {what}?" in q
        words = what.split()[1:]
        named = NAMES.search(text[m.end():])
        # "a cyan object" asks for the colour only; "a cone" for the shape only.
        wanted = [w for w in words if w != "object"]
        has = named is not None and all(w in named.group(1) for w in wanted)
        return True, exact, has
    if m := COMPARES.search(text):
        exact = all(f"the {n}" in q for n in m.groups())
        return True, exact, None
    return False, False, None


def main(paths):
    for path in paths:
        stats = defaultdict(lambda: {"n": 0, "wrote": 0, "exact": [0, 0], "wrong": [0, 0], "named": 0})
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                cat = row["category"]
                if cat not in ("existence", "spatial_relation", "depth_order") or row["kind"] != "yes_no":
                    continue
                s = stats[cat]
                s["n"] += 1
                wrote, exact, has = copy_of(row)
                if not wrote:
                    continue
                s["wrote"] += 1
                bucket = s["exact"] if exact else s["wrong"]
                bucket[0] += 1
                bucket[1] += correct(row)
                s["named"] += bool(has)
        print(f"| {path} | n | target written | exact copy | accuracy, exact | wrong copy | accuracy, wrong | match has the words |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        pct = lambda a, b: f"{100 * a / b:.1f}" if b else "–"
        for cat, s in sorted(stats.items()):
            named = str(s["named"]) if cat == "existence" else "–"
            print(f"| {cat} | {s['n']} | {s['wrote']} | {s['exact'][0]} | {pct(s['exact'][1], s['exact'][0])} "
                  f"| {s['wrong'][0]} | {pct(s['wrong'][1], s['wrong'][0])} | {named} |")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
