"""`mtmoe monitor`: do the texts the server answers still look like the data its model was trained
on? The logged requests (serving.request_log) against the eval split of the model's spans, scored by
the same model, compared with TFDV's drift checks on a few features per text:

- `tokens` (count) and `unknown_tokens`: how many of its tokens are outside the model's vocabulary,
  as a category (0, 1, 2, 3 or more). A per-text share of unknown tokens is mostly zeros, and
  TFDV's histogram divergence of such a variable swings with the sample's size (70% of samples of
  200 same-distribution texts were flagged); a category's share has a standard error of at most
  0.04 between 200 texts and a thousand, so the 0.1 limit is 2.5 of them;
- for each classification task, the predicted `<task>_label`, its calibrated `<task>_score` and,
  where the task answers out of scope, `<task>_in_scope`.

Categorical features are compared by L-infinity distance, numeric ones by Jensen-Shannon divergence
(TFDV's drift comparators), at thresholds fixed here, before any drift demo, and measured for false
alarms on in-distribution samples (bench/README.md). One line per finding.
"""
import glob
import os
from typing import Dict, List, Sequence, Tuple

from mtmoe.core.config import CLASSIFICATION
from mtmoe.core.errors import UserError
from mtmoe.core.tasks import in_scope_output

MIN_TEXTS = 200  # fewer logged texts say too little to compare distributions
LABEL_DISTANCE = 0.1  # L-infinity between categorical distributions (TFDV infinity_norm)
NUMERIC_DIVERGENCE = 0.1  # Jensen-Shannon divergence between numeric distributions (TFDV)
UNKNOWN_TOKENS_TOP = 3  # texts with this many unknown tokens or more share one category
DRIFTED = 3  # the exit status when something drifted, for a cron job to alert on


def logged_texts(folder: str) -> List[str]:
    """The texts of every logged request under `folder`; a bad line stops with its file and line."""
    from mtmoe.serving.request_log import logged_requests

    return [row["text"] for _, row in logged_requests(folder)]


def eval_texts(data_root: str) -> List[str]:
    """The texts of every span's eval split under `data_root`."""
    from mtmoe.core.formats import read_span_records

    splits = sorted(glob.glob(os.path.join(data_root, "span-*", "eval")))
    if not splits:
        raise UserError(f"{data_root}: no span-*/eval folders; give the data root the model was "
                        "trained on")
    return [values["text"][0].decode("utf-8") for split in splits
            for _, values in read_span_records(split)]


def features(predictor, texts: Sequence[str], batch: int = 256) -> Dict[str, list]:
    """The compared features of `texts` as columns (see the module's docstring)."""
    import numpy as np
    import tensorflow as tf

    from mtmoe.trainer.text import tokenize, vocabulary_key

    with open(os.path.join(predictor.model_dir, "assets", "tokens"), encoding="utf-8") as f:
        vocabulary = {line.rstrip("\n") for line in f}
    keys = vocabulary_key(tokenize(tf.constant(list(texts)))).to_list()
    columns: Dict[str, list] = {
        "tokens": [len(k) for k in keys],
        "unknown_tokens": [_count_category(sum(t.decode("utf-8") not in vocabulary for t in k))
                           for k in keys]}
    tasks = [task for task in predictor.tasks if task.type == CLASSIFICATION]
    for start in range(0, len(texts), batch):
        outputs = predictor.outputs(texts[start:start + batch])
        for task in tasks:
            columns.setdefault(f"{task.name}_label", []).extend(
                v.decode("utf-8") for v in outputs[f"{task.name}_label"])
            columns.setdefault(f"{task.name}_score", []).extend(
                float(v) for v in np.asarray(outputs[f"{task.name}_score"]))
            if in_scope_output(task) in outputs:
                columns.setdefault(in_scope_output(task), []).extend(
                    "yes" if v else "no" for v in outputs[in_scope_output(task)])
    return columns


def _count_category(count: int) -> str:
    return str(count) if count < UNKNOWN_TOKENS_TOP else f"{UNKNOWN_TOKENS_TOP} or more"


def drift_findings(reference: Dict[str, list], served: Dict[str, list]) -> List[str]:
    """TFDV's drift anomalies of `served` against `reference` (both feature columns), one line each."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    reference_stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame(reference))
    served_stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame(served))
    schema = tfdv.infer_schema(reference_stats)
    for feature in schema.feature:
        if feature.HasField("domain") or feature.type == 1:  # BYTES: a categorical feature
            feature.ClearField("domain")  # an answer eval never got is drift, not an error
            feature.drift_comparator.infinity_norm.threshold = LABEL_DISTANCE
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = NUMERIC_DIVERGENCE
    del schema.string_domain[:]
    anomalies = tfdv.validate_statistics(served_stats, schema, previous_statistics=reference_stats)
    return [f"{name}: {info.description}" for name, info in sorted(anomalies.anomaly_info.items())]


def enough_texts(requests: str, min_texts: int = MIN_TEXTS) -> List[str]:
    """The logged texts, refusing a log too small to compare distributions."""
    texts = logged_texts(requests)
    if len(texts) < min_texts:
        raise UserError(f"{requests}: {len(texts)} logged texts; at least {min_texts} are needed "
                        "to compare distributions (--min-texts)")
    return texts


def monitor(texts: Sequence[str], serving_dir: str, data_root: str) -> Tuple[List[str], int]:
    """(drift findings of `texts` against the eval texts under `data_root`, how many those are)."""
    from mtmoe.serving.predict import Predictor

    reference = eval_texts(data_root)
    predictor = Predictor(serving_dir)
    return drift_findings(features(predictor, reference), features(predictor, texts)), len(reference)
