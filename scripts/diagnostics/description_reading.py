#!/usr/bin/env python3
"""Do existence verdicts follow the chain's own description?

  description_reading.py PREDICTIONS.jsonl...

Reads `cooper eval` predictions of a model whose chains open with the scene description (`cooper
world --description-thoughts`), or that wrote it before the question (`--describe-first`: the
prediction's `description` field), and, for every existence question, finds what the question looks
for ("a cyan object", "a blue cone", "a cone") and whether the description the model wrote names
a matching object. It prints, per file, the items by (true answer, named or not, verdict), and two
rates: how often the description names the object when it is there and when it is not (how much
the model's own description knows), and how often the verdict follows the description (Yes when
named, No otherwise). A verdict that reads its description well follows it nearly always; the
accuracy a perfect reading of these descriptions would reach is printed beside the model's.
"""
import json
import re
import sys
from collections import Counter

QUESTION = re.compile(
    r"(?:Is there|Does the scene contain|Can you see) an? (.+?)(?: in the image| in this picture)?\?")
NAMED = re.compile(r"the ([a-z]+) ([a-z]+), in the ")


def target(question):
    m = QUESTION.match(question.split("\n")[0])
    if not m:
        return None
    words = m.group(1).split()
    if words[-1] == "object":
        words = words[:-1]
    return words


def description(raw):
    # "I can see 3 objects. From left to right: ...; ... ." or "I can see one object: ... ."
    start = raw.find("I can see")
    if start < 0:
        return ""
    sentences = re.split(r"(?<=\.) (?=[A-Z])", raw[start:])
    if len(sentences) > 1 and sentences[1].startswith("From left to right"):
        return " ".join(sentences[:2])
    return sentences[0]


def main(paths):
    if not paths:
        sys.exit(__doc__)
    for path in paths:
        table, skipped = Counter(), 0
        for line in open(path):
            r = json.loads(line)
            if r.get("category") != "existence":
                continue
            words = target(r["question"])
            p = r.get("prediction") or {}
            if words is None or p.get("kind") != "yes_no":
                skipped += 1
                continue
            objects = NAMED.findall(description(r.get("description") or r["raw_output"]))
            named = any(all(w in obj for w in words) for obj in objects)
            verdict = "Yes" if p.get("value") else "No"
            table[(r["answer"], named, verdict)] += 1
        n = sum(table.values())
        print(f"{path}: {n} existence items ({skipped} skipped: question or answer not read)")
        for (answer, named, verdict), k in sorted(table.items()):
            print(f"  true {answer:3}  description {'names' if named else 'lacks'} it  verdict {verdict:3}  {k}")
        if not n:
            continue

        def count(answer=None, named=None, verdict=None):
            return sum(k for (a, m, v), k in table.items()
                       if answer in (None, a) and named in (None, m) and verdict in (None, v))
        there, absent = count(answer="Yes"), count(answer="No")
        follows = count(named=True, verdict="Yes") + count(named=False, verdict="No")
        reading = count(answer="Yes", named=True) + count(answer="No", named=False)
        right = count(answer="Yes", verdict="Yes") + count(answer="No", verdict="No")
        print(f"  description names the object: {count(answer='Yes', named=True)}/{there} when there, "
              f"{count(answer='No', named=True)}/{absent} when not")
        print(f"  verdict follows the description: {follows}/{n}")
        print(f"  accuracy: {right}/{n} = {100 * right / n:.1f} %; "
              f"reading the description perfectly: {reading}/{n} = {100 * reading / n:.1f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
