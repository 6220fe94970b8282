"""Stand-in for the FineWeb shard downloader: writes N small synthetic train shards and one val shard.

    python data/cached_fineweb10B.py N

The real downloader fetches GPT-2-tokenized FineWeb shards; this one needs no network and writes the
same format (a 256 x int32 header: magic 20240520, version 1, token count; then uint16 tokens) into
$WF_DOWNLOAD_DIR when wfops sets it, else into data/fineweb10B/ next to this file.
"""

import os
import random
import struct
import sys

TOKENS_PER_SHARD = 65536


def write_shard(path: str, seed: int) -> None:
    # a little structure so the loss can fall: every shard strings together the same short phrases
    vocab = random.Random(12345)
    phrases = [[vocab.randrange(50257) for _ in range(vocab.randint(3, 9))] for _ in range(200)]
    rng = random.Random(seed)
    tokens = []
    while len(tokens) < TOKENS_PER_SHARD:
        tokens.extend(rng.choice(phrases))
    tokens = tokens[:TOKENS_PER_SHARD]
    header = [20240520, 1, len(tokens)] + [0] * 253
    tmp = path + ".part"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<256i", *header))
        fh.write(struct.pack(f"<{len(tokens)}H", *tokens))
    os.replace(tmp, path)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    out = os.environ.get("WF_DOWNLOAD_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "fineweb10B")
    os.makedirs(out, exist_ok=True)
    write_shard(os.path.join(out, "fineweb_val_000000.bin"), seed=0)
    for i in range(1, n + 1):
        write_shard(os.path.join(out, f"fineweb_train_{i:06d}.bin"), seed=i)
    print(f"wrote {n} train shard(s) and 1 val shard into {out}")


if __name__ == "__main__":
    main()
