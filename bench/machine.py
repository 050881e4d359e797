"""What every benchmark result records: when, on which machine, with which versions, by which command."""
import glob
import importlib.metadata
import json
import os
import platform
import re
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# The installed packages a result depends on, recorded with their versions.
PACKAGES = ("tensorflow", "keras", "tfx", "tensorflow-transform", "tensorflow-model-analysis",
            "tensorflow-text", "keras-tuner", "apache-beam")


def newest(pattern: str) -> str:
    """The path matching `pattern` with the highest number in it (an ML Metadata execution id, a
    serving version): the latest a pipeline wrote."""
    return max(glob.glob(pattern), key=lambda path: int(re.search(r"/(\d+)(/|$)", path).group(1)))


def write_result(name: str, **fields) -> str:
    """Writes bench/results/<name>.json with the context first, then `fields`; returns its path."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    path = os.path.join(RESULTS, f"{name}.json")
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "machine": {"cores": os.cpu_count(), "cpu": cpu},
                   "python": platform.python_version(),
                   "versions": {package: importlib.metadata.version(package) for package in PACKAGES},
                   "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                   **fields}, f, indent=1)
    return path
