"""Where a run reads and writes, and what identifies the code it runs: light (no TFX), so that the
command line can check a run's inputs before loading TensorFlow."""
import ast
import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Optional

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The modules of Transform's preprocessing_fn and of the Tuner's and Trainer's functions (their
# cache keys include the hash of the code these run).
TRANSFORM_CODE = "mtmoe.components.transform"
TRAINER_CODE = "mtmoe.trainer.module"


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


def code_fingerprint(*modules: str, root: str = _ROOT) -> str:
    """A hash of the project files that `modules` run: theirs and those they import, directly or
    not (imports inside functions included).

    Transform and Trainer are named by function path, so TFX's cache key does not see code changes;
    this fingerprint goes into their custom_config so that changed code re-runs them, and only
    code they run: editing the CLI or the server re-runs neither.
    """
    digest = hashlib.sha256()
    for path in sorted(_imported_files(modules, root)):
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, root).encode() + f.read())
    return digest.hexdigest()[:16]


def _module_file(name: str, root: str):
    """The project file of module `name` (a package's __init__.py), or None for other modules."""
    parts = name.split(".")
    if parts[0] != "mtmoe":
        return None
    subpackage = _package_folder(".".join(parts[:2])) if len(parts) > 1 else None
    if subpackage is not None:  # mtmoe.<subpackage>...: in that package's folder
        base = os.path.join(root, subpackage, *parts[2:])
    else:  # mtmoe itself, or a module directly in it
        base = os.path.join(root, _package_folder("mtmoe"), *parts[1:])
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _package_folder(package: str) -> Optional[str]:
    """The folder of a package of ours relative to the project root, as the import system finds it
    (setup.py maps `mtmoe.trainer` to trainer/); None when `package` is no package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.relpath(list(spec.submodule_search_locations)[0], _ROOT)


def _imported_files(modules, root: str) -> set:
    seen, pending = set(), [m for m in modules]
    while pending:
        name = pending.pop()
        path = _module_file(name, root)
        if path is None or path in seen:
            continue
        seen.add(path)
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from package import module` imports a module; `from module import name`, not.
                pending += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        parts = name.split(".")  # a module's packages run their __init__.py first
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
    return seen
