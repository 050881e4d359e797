"""Where a run reads and writes, and what identifies the code it runs: light (no TFX), so that the
command line can check a run's inputs before loading TensorFlow."""
import hashlib
import os
from dataclasses import dataclass

_SOURCE_PACKAGES = ("mtmoe", "components", "trainer", "serving")


@dataclass(frozen=True)
class Paths:
    """Where a run reads data and writes everything else."""

    data_root: str
    work_dir: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.work_dir, "pipeline")

    @property
    def metadata(self) -> str:
        return os.path.join(self.work_dir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.work_dir, "serving_model")

    @property
    def serving_config_dir(self) -> str:
        """TF Serving's model config and batching parameters for the serving folder."""
        return os.path.join(self.work_dir, "serving_config")

    @property
    def logs_dir(self) -> str:
        """One log per pipeline command: everything TensorFlow, Beam and TFX print."""
        return os.path.join(self.work_dir, "logs")

    @property
    def reports_dir(self) -> str:
        return os.path.join(self.work_dir, "reports")

    def report_dir(self, run_id: str) -> str:
        return os.path.join(self.reports_dir, run_id)

    @property
    def tuning_dir(self) -> str:
        """Keras Tuner's searches, outside any one run's artifacts so that a re-run resumes them."""
        return os.path.join(self.pipeline_root, "tuning")


def source_fingerprint() -> str:
    """A hash of the project's module code.

    Transform and Trainer are named by function path, so TFX's cache key does not see code changes;
    this fingerprint goes into their custom_config so that changed code re-runs them.
    """
    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in _SOURCE_PACKAGES:
        for folder, _, files in sorted(os.walk(os.path.join(root, package))):
            for name in sorted(f for f in files if f.endswith((".py", ".yaml"))):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(name.encode() + f.read())
    return digest.hexdigest()[:16]
