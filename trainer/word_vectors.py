"""Pretrained word vectors (`model.word_vectors`): the token embedding starts from a GloVe or
fastText text file for the words of the training vocabulary.

Only the vocabulary's rows are set: the vocabulary is analysed on the training split alone, so no
evaluation or test word gets a vector it could not have at training time. A file line is
`word v_1 ... v_d`; fastText's `count dim` header line is skipped. A file word counts when it equals
a vocabulary key (the token case-folded, edge punctuation stripped), as GloVe's lower-cased words do.
"""
from typing import Dict, List

import numpy as np
import tensorflow as tf

from mtmoe.core.errors import UserError


def read_vectors(path: str, words: List[str], dim: int) -> Dict[str, np.ndarray]:
    """{word: vector} for the file's lines whose word is in `words`; other lines are skipped
    unparsed. A wrong width names the file and line."""
    wanted = set(words)
    found = {}
    with tf.io.gfile.GFile(path, "r") as f:
        for number, line in enumerate(f, start=1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if number == 1 and len(rest.split()) == 1 and word.isdigit() and rest.strip().isdigit():
                continue  # fastText header: "<count> <dim>"
            if word not in wanted or word in found:
                continue
            try:
                vector = np.asarray(rest.split(), dtype="float32")
            except ValueError:
                raise UserError(f"{path}:{number}: not a word followed by numbers") from None
            if vector.shape != (dim,):
                raise UserError(f"{path}:{number}: {len(vector)} numbers for {word!r}; "
                                f"model.embedding_dim is {dim}")
            found[word] = vector
    return found


def coverage(path: str, vectors: Dict[str, np.ndarray], rows: List[str]) -> dict:
    """What to log and record: how many vocabulary words the file covers."""
    vocabulary = len(rows) - 2  # the padding and out-of-vocabulary rows are not words
    return {"path": path, "covered": len(vectors), "vocabulary": vocabulary,
            "hit_rate": round(len(vectors) / max(vocabulary, 1), 4)}


def initialise(table, rows: List[str], vectors: Dict[str, np.ndarray]) -> None:
    """Sets the rows of the embedding `table` (a [len(rows), d] variable) whose key has a vector;
    the others keep their initialisation."""
    values = np.array(table.numpy())
    for i, key in enumerate(rows):
        if key in vectors:
            values[i] = vectors[key]
    table.assign(values)
