"""Serving outputs as JSON: the REST answer's body, and its columns read back (the request log
writes its lines from the body a REST request was answered with). numpy and orjson only, so that
the request log's writer process starts without TensorFlow."""
from typing import Dict

import numpy as np
import orjson


def _json_value(array: np.ndarray):
    """An output as `json_body` writes it: numbers as the array (orjson writes numpy arrays without
    making Python lists), floats widened to float64 so that they read back as the same numbers
    that gRPC and in-process callers get; strings decoded into nested lists."""
    if array.dtype.kind in "OSU":
        return _decoded(array.tolist())
    return np.ascontiguousarray(array, np.float64 if array.dtype.kind == "f" else None)


def _decoded(value):
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def json_body(value) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def prediction_body(outputs: Dict[str, np.ndarray], row_format: bool) -> bytes:
    """The JSON answer to a predict request: `predictions` (one object per instance) for the row
    format, `outputs` for the columnar one."""
    values = {name: _json_value(np.asarray(array)) for name, array in outputs.items()}
    if not row_format:
        return json_body({"outputs": values})
    size = len(next(iter(values.values())))
    return json_body({"predictions": [{name: value[i] for name, value in values.items()}
                                      for i in range(size)]})


def body_columns(body: bytes) -> Dict[str, list]:
    """{output: one value per text} of a `prediction_body`, in either format."""
    answer = orjson.loads(body)
    if "outputs" in answer:
        return answer["outputs"]
    rows = answer["predictions"]
    return {name: [row[name] for row in rows] for name in rows[0]} if rows else {}
