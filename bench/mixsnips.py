"""A second multi-label dataset, built from SNIPS as MixSNIPS was (Qin et al. 2020): each text joins
one to three SNIPS utterances of the same split with "and", its intents are the set of theirs and
its slots their tags (the "and" is O). The multi-label defaults then rest on two datasets (this and
NLU++) instead of one.

    python bench/mixsnips.py --snips ../shared/data/snips --out bench/work/data/mixsnips

Writes {train,eval,test}.jsonl in the project's JSONL format (`text`, `tokens`, `intents`, `slots`).
Every source utterance is used once per split, in an order drawn from `--seed`; a text joins one,
two or three of them with probabilities 0.3 / 0.5 / 0.2, MixSNIPS' own shares.
"""
import argparse
import json
import os
import random

SHARES = ((1, 0.3), (2, 0.5), (3, 0.2))
SPLITS = {"train": "train", "dev": "eval", "test": "test"}


def read_slu(folder: str):
    """(tokens, tags, intent) of each utterance of a SNIPS-format split folder."""
    def lines(name):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            return [line.split() for line in f.read().splitlines()]

    return [(tokens, tags, label[0])
            for tokens, tags, label in zip(lines("seq.in"), lines("seq.out"), lines("label"))]


def mixed(utterances, rng: random.Random):
    """The utterances, shuffled and joined one to three at a time."""
    pool = list(utterances)
    rng.shuffle(pool)
    sizes, weights = zip(*SHARES)
    while pool:
        parts = [pool.pop() for _ in range(min(len(pool), rng.choices(sizes, weights)[0]))]
        tokens, tags = [], []
        for i, (words, labels, _) in enumerate(parts):
            if i:
                tokens.append("and")
                tags.append("O")
            tokens += words
            tags += labels
        yield {"text": " ".join(tokens), "tokens": tokens,
               "intents": sorted({intent for _, _, intent in parts}), "slots": tags}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snips", default="../shared/data/snips", help="SNIPS-format folder")
    parser.add_argument("--out", required=True, help="folder for {train,eval,test}.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    for source, split in SPLITS.items():
        path = os.path.join(args.out, f"{split}.jsonl")
        count = 0
        with open(path, "w", encoding="utf-8") as f:
            for example in mixed(read_slu(os.path.join(args.snips, source)), rng):
                f.write(json.dumps(example) + "\n")
                count += 1
        print(f"{path}: {count} texts")


if __name__ == "__main__":
    main()
