#!/usr/bin/env python3
"""Rows for the option-lookup diagnostics of docs/results.md ("Why every run answers one letter").

    option_rows.py direct WORLD HELDOUT OUT   direct-answer rows of WORLD's colour, shape and grid
                                              questions, and HELDOUT's matching eval items, each
                                              without and with a hint naming the answer's option
                                              text (OUT/train_hint{0,1}.jsonl, OUT/eval_hint{0,1}.tsv)
    option_rows.py lookup OUT ROWS PER_ROW SEED [OPTIONS]   text-only rows of PER_ROW lookups
                                              each: a hint names one option's text, the answer is
                                              its letter; 2-4 options, or OPTIONS of them
    option_rows.py copy OUT ROWS PER_ROW SEED     the same, but the hint names the letter itself
    option_rows.py named OUT ROWS PER_ROW SEED    lookups whose answer names the option's text,
                                              then its letter ("red is option A.")
    option_rows.py restated OUT ROWS PER_ROW SEED the same, with the options also restated
                                              text-first, so the letter follows its text
    option_rows.py options RESTATE OUT ROWS SEED  text-only option restatements: a row of RESTATE
                                              (a world's sft_restate.jsonl) drawn at random, its
                                              options replaced by as many drawn afresh from the
                                              same vocabulary, so that the copy cannot be learnt
                                              by heart
    option_rows.py induction WORLD OUT ROWS SEED  text-only rows of two induction problems (a list
                                              of distinct words, then the list again from a random
                                              word on) and three lookups
    option_rows.py induction-probe WORLD OUT ROWS SEED [no-copy]   rows of three induction
                                              problems only; with no-copy each list is replaced by
                                              another random list, so nothing can be copied

Standard library only; every file is written to a temporary name and renamed.
"""
import base64
import csv
import json
import os
import random
import re
import sys

CATEGORIES = {"color", "shape", "spatial_grid"}
COLORS = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"]
SHAPES = ["cube", "box", "sphere", "cylinder", "cone", "pyramid", "capsule"]
CELLS = ["top-left", "top-center", "top-right", "middle-left", "center", "middle-right",
         "bottom-left", "bottom-center", "bottom-right"]
POOLS = [COLORS, SHAPES, CELLS, [str(i) for i in range(11)],
         [f"{c} {s}" for c in COLORS for s in SHAPES]]
LETTERS = "ABCDEFGH"


def answer_turn(letter):
    return f"<answer> The answer is \\boxed{{{letter}}}. </answer>"


def options_block(options):
    return "Options:\n" + "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options)) + \
        "Answer with the letter of the correct option."


def turn(text, learn):
    return {"type": "text", "value": text, "need_loss": "true" if learn else "false"}


def sft_row(items, data_id, category, flag="positive"):
    return {"interleaved_reason": items, "data_id": data_id, "category": category, "flag": flag}


class Atomic:
    """A file that appears under its name only once it is complete."""

    def __init__(self, path):
        self.path, self.tmp = path, path + ".tmp"

    def __enter__(self):
        self.f = open(self.tmp, "w", newline="")
        return self.f

    def __exit__(self, kind, *_):
        self.f.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            os.remove(self.tmp)


def write_jsonl(path, rows):
    with Atomic(path) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def lookup_problem(rng, hint_letter=False, form="letter", counts=(2, 3, 4, 4, 4)):
    """A hint naming one option, the options, and the answer turn. `form` is "letter" (the
    answer is the letter), "named" (the answer turn names the option's text, then its letter)
    or "restated" (as "named", with the options restated text-first: "red is option A.")."""
    pool = rng.choice(POOLS)
    n = rng.choice(counts)
    options = rng.sample(pool, n)
    k = rng.randrange(n)
    hint = LETTERS[k] if hint_letter else options[k]
    q = f"Hint: {'the answer' if hint_letter else 'it'} is {hint}.\nWhich option is it?\n" + options_block(options)
    if form == "letter":
        return q, answer_turn(LETTERS[k])
    if form == "restated":
        q += "\nRestated: " + " ".join(f"{o} is option {LETTERS[i]}." for i, o in enumerate(options))
    return q, f"<answer> {options[k]} is option {LETTERS[k]}. </answer>"


def lookup_rows(rows, per_row, seed, hint_letter, form="letter", counts=(2, 3, 4, 4, 4)):
    rng = random.Random(seed)
    for i in range(rows):
        items = []
        for _ in range(per_row):
            q, a = lookup_problem(rng, hint_letter, form, counts)
            items += [turn(q, False), turn(a, True)]
        yield sft_row(items, f"lookup_{i}", "lookup")


def world_words(world):
    words = set()
    with open(os.path.join(world, "sft_interleaved.jsonl")) as f:
        for i, line in enumerate(f):
            if i > 300:
                break
            for item in json.loads(line)["interleaved_reason"]:
                if item["type"] == "text":
                    words.update(re.findall(r"[a-z][a-z-]+", item["value"]))
    return sorted(words) + [str(i) for i in range(100)] + [chr(65 + i) for i in range(26)]


def induction_problem(rng, words, copyable=True):
    """A list of distinct words, then "Again:" and the list from a random word on (learnt).
    Not `copyable`: another random list is shown instead, so nothing can be copied."""
    listed = rng.sample(words, rng.randint(12, 40))
    start = rng.randrange(len(listed) - 4)
    shown = listed if copyable else rng.sample(words, len(listed))
    return [turn("List: " + " ".join(shown), False),
            turn("Again: " + " ".join(listed[start:]), True)]


def induction_rows(world, rows, seed):
    rng = random.Random(seed)
    words = world_words(world)
    for i in range(rows):
        items = induction_problem(rng, words) + induction_problem(rng, words)
        for _ in range(3):
            q, a = lookup_problem(rng)
            items += [turn(q, False), turn(a, True)]
        yield sft_row(items, f"induct_{i}", "lookup")


def induction_probe_rows(world, rows, seed, copyable):
    rng = random.Random(seed)
    words = world_words(world)
    for i in range(rows):
        items = []
        for _ in range(3):
            items += induction_problem(rng, words, copyable)
        yield sft_row(items, f"probe_{i}", "lookup")


def direct(world, heldout, out):
    os.makedirs(out, exist_ok=True)
    pictures = {}

    def picture(scene_id):
        if scene_id not in pictures:
            with open(os.path.join(world, "images", scene_id + ".png"), "rb") as f:
                pictures[scene_id] = base64.b64encode(f.read()).decode()
        return pictures[scene_id]

    with open(os.path.join(world, "questions.jsonl")) as f:
        questions = [q for q in map(json.loads, f) if q["category"] in CATEGORIES]
    for hint in (0, 1):
        def rows():
            for q in questions:
                text = q["text"] + "\n" + options_block(q["options"])
                if hint:
                    text = f"Hint: it is {q['answer_text']}.\n" + text
                items = [{"type": "image", "value": picture(q["scene_id"]), "need_loss": "false"},
                         turn(text, False), turn(answer_turn(q["answer"]), True)]
                yield sft_row(items, q["id"], q["category"], q["flag"])
        write_jsonl(os.path.join(out, f"train_hint{hint}.jsonl"), rows())
    csv.field_size_limit(1 << 30)
    with open(os.path.join(heldout, "eval.tsv"), newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        items = [dict(zip(header, r)) for r in reader]
    by_index = {it["index"]: it["image"] for it in items}
    for it in items:
        # VLMEvalKit TSVs may give an image as the index of the row that holds it.
        while it["image"] in by_index and len(it["image"]) < 32:
            it["image"] = by_index[it["image"]]
    items = [it for it in items if it["category"] in CATEGORIES]
    for hint in (0, 1):
        with Atomic(os.path.join(out, f"eval_hint{hint}.tsv")) as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(header)
            for it in items:
                it = dict(it)
                if hint:
                    it["question"] = f"Hint: it is {it[it['answer']]}.\n" + it["question"]
                w.writerow([it[k] for k in header])
    print(f"{len(questions)} training questions, {len(items)} eval items")


def pool_of(options):
    """The vocabulary the options come from (colours, shapes, cells, counts, coloured shapes)."""
    return next((p for p in POOLS[:4] if options[0] in p), POOLS[4])


def restatement_rows(restate, rows, seed):
    with open(restate) as f:
        source = [json.loads(line) for line in f]
    rng = random.Random(seed)
    for i in range(rows):
        prompt = rng.choice(source)["interleaved_reason"][0]["value"]
        head = prompt.split("\nOptions:\n")[0]
        options = rng.sample(pool_of(re.findall(r"^[A-D]\. (.*)$", prompt, re.M)),
                             len(re.findall(r"^[A-D]\. ", prompt, re.M)))
        said = f"<think> The options are: {', '.join(options)}. </think>"
        yield sft_row([turn(f"{head}\n{options_block(options)}", False), turn(said, True)],
                      f"restate_{i}", "restate", "negative")


def main(argv):
    if len(argv) >= 1 and argv[0] == "direct" and len(argv) == 4:
        direct(*argv[1:])
    elif len(argv) in (5, 6) and argv[0] in ("lookup", "copy", "named", "restated"):
        out, rows, per_row, seed = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        form = argv[0] if argv[0] in ("named", "restated") else "letter"
        counts = (int(argv[5]),) if len(argv) == 6 else (2, 3, 4, 4, 4)
        write_jsonl(out, lookup_rows(rows, per_row, seed, argv[0] == "copy", form, counts))
    elif len(argv) == 5 and argv[0] == "options":
        restate, out, rows, seed = argv[1], argv[2], int(argv[3]), int(argv[4])
        write_jsonl(out, restatement_rows(restate, rows, seed))
    elif len(argv) == 5 and argv[0] == "induction":
        world, out, rows, seed = argv[1], argv[2], int(argv[3]), int(argv[4])
        write_jsonl(out, induction_rows(world, rows, seed))
    elif len(argv) in (5, 6) and argv[0] == "induction-probe" and argv[5:] in ([], ["no-copy"]):
        world, out, rows, seed = argv[1], argv[2], int(argv[3]), int(argv[4])
        write_jsonl(out, induction_probe_rows(world, rows, seed, argv[5:] == []))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
