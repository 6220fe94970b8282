"""Builds the `tiny` character dataset: train.bin and val.bin (uint16 token ids) and meta.pkl (the vocabulary).

    python data/tiny/prepare.py [OUT_DIR]      (default: next to this file)

The text is generated here (no download): short sentences made from a few word lists, deterministic.
"""

import os
import pickle
import random
import sys

import numpy as np

SUBJECTS = ["the cat", "a dog", "my friend", "the old sailor", "every child", "the tired baker"]
VERBS = ["sees", "likes", "paints", "follows", "remembers", "carries"]
OBJECTS = ["a red boat", "the moon", "warm bread", "the long road", "a quiet song", "seven stones"]


def text(n_sentences: int = 4000) -> str:
    rng = random.Random(42)
    lines = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(n_sentences)]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    os.makedirs(out, exist_ok=True)
    data = text()
    chars = sorted(set(data))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in data], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    ids[:cut].tofile(os.path.join(out, "train.bin"))
    ids[cut:].tofile(os.path.join(out, "val.bin"))
    with open(os.path.join(out, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    print(f"{len(data):,} characters, {len(chars)} symbols: {cut:,} train and {len(ids) - cut:,} val tokens in {out}")


if __name__ == "__main__":
    main()
