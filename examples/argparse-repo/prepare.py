"""Builds data/tiny/{train,valid,test}.txt: sentences of a small made-up grammar, one per line (a stand-in for
Wikitext-2). Deterministic; run it from the repository root: `python prepare.py`."""

import argparse
import os
import random

SUBJECTS = ["the cat", "a dog", "the model", "my friend", "the teacher", "a bird", "the robot", "our team"]
VERBS = ["sees", "likes", "follows", "builds", "reads", "finds", "paints", "trains"]
OBJECTS = ["the ball", "a tree", "the river", "a small house", "the old book", "a red car", "the map", "a song"]
ENDINGS = ["today", "at night", "in the park", "again", "with care", "slowly", "every day", "near the sea"]


def sentence(rng: random.Random) -> str:
    return " ".join([rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(ENDINGS)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="./data/tiny", help="where the three text files go")
    parser.add_argument("--lines", type=int, default=600, help="lines of train.txt (valid and test get a fifth)")
    args = parser.parse_args()
    rng = random.Random(1234)
    os.makedirs(args.out, exist_ok=True)
    for name, lines in (("train", args.lines), ("valid", args.lines // 5), ("test", args.lines // 5)):
        with open(os.path.join(args.out, f"{name}.txt"), "w") as fh:
            fh.write("\n".join(sentence(rng) for _ in range(lines)) + "\n")
    print(f"wrote {args.out}/train.txt, valid.txt, test.txt")


if __name__ == "__main__":
    main()
