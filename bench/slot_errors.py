"""Where a tagging model's span errors are: per entity type, and of which kind, on one SLU split.

    python bench/slot_errors.py --split ../shared/data/snips/dev --model DIR [DIR ...]

Each gold span a model does not predict exactly is one kind of error: `type` (the same tokens
predicted with another type), `boundary` (an overlapping prediction of its type), `type and
boundary` (overlapping, another type) or `missed` (nothing overlaps it); a predicted span that
overlaps no gold span is `spurious`. Counts are summed over the models given (the seeds of a
benchmark, say). The split is in the SNIPS/ATIS layout; the model's first token-tagging task is
scored. Writes bench/results/slot_errors.json.
"""
import argparse
import collections

import mtmoe  # noqa: F401  sets the Keras environment before TensorFlow loads

from machine import write_result
from mtmoe.core.config import TOKEN_TAGGING
from mtmoe.core.formats import BioCheck, read_slu
from mtmoe.core.metrics import bio_spans, f1_from_counts
from mtmoe.serving.predict import Predictor


def overlaps(a, b) -> bool:
    """Whether spans (type, start, end) share a token."""
    return a[1] < b[2] and b[1] < a[2]


def error_kind(gold, predicted) -> str:
    """The kind of error of gold span `gold` (type, start, end) among the predicted spans."""
    kind, start, end = gold
    overlapping = [p for p in predicted if overlaps(p, gold)]
    if not overlapping:
        return "missed"
    if any(p[0] == kind for p in overlapping):
        return "boundary"
    if any(p[1:] == (start, end) for p in overlapping):
        return "type"
    return "type and boundary"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True, help="a folder with seq.in, seq.out and label")
    parser.add_argument("--model", nargs="+", required=True, help="exported model or serving folders")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    records = list(read_slu(args.split, "label", "tags", BioCheck(mode="fix")))
    kinds = collections.Counter()
    per_type = collections.defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    for model_dir in args.model:
        predictor = Predictor(model_dir)
        task = next(t for t in predictor.tasks if t.type == TOKEN_TAGGING)
        for start in range(0, len(records), args.batch):
            batch = records[start:start + args.batch]
            rows = predictor.predict([r["text"] for r in batch])
            for record, row in zip(batch, rows):
                gold, predicted = bio_spans(record["tags"]), bio_spans(row[task.name]["tags"])
                for span in gold & predicted:
                    per_type[span[0]]["tp"] += 1
                for span in gold - predicted:
                    per_type[span[0]]["fn"] += 1
                    kinds[error_kind(span, predicted - gold)] += 1
                for span in predicted - gold:
                    per_type[span[0]]["fp"] += 1
                    kinds["spurious"] += not any(overlaps(g, span) for g in gold)
    types = sorted(({"type": name, "gold": c["tp"] + c["fn"], "errors": c["fp"] + c["fn"],
                     "f1": round(f1_from_counts(c)["f1"], 4)} for name, c in per_type.items()),
                   key=lambda row: -row["errors"])
    errors = sum(row["errors"] for row in types)
    print(f"{len(args.model)} model(s), {len(records)} texts of {args.split}: {errors} span errors "
          f"(false positives + false negatives)")
    print("gold spans not predicted exactly, by kind: " + ", ".join(
        f"{kind} {count}" for kind, count in kinds.most_common()))
    print("| type | gold spans | F1 | errors | share of errors |\n|---|---|---|---|---|")
    for row in types[:15]:
        print(f"| {row['type']} | {row['gold']} | {row['f1']:.3f} | {row['errors']} | "
              f"{row['errors'] / errors:.0%} |")
    write_result("slot_errors", split=args.split, models=args.model, texts=len(records),
                 error_kinds=dict(kinds), types=types)


if __name__ == "__main__":
    main()
