"""Each step's cache key covers the code it runs, and only that: TFX names Transform's and the
Trainer's functions by path, so their code hash goes into their custom_config."""
import shutil

import pytest

from mtmoe.pipeline.paths import _ROOT, TRAINER_CODE, TRANSFORM_CODE, code_fingerprint


@pytest.fixture
def tree(tmp_path):
    """A copy of the project's packages to edit."""
    for package in ("mtmoe", "components", "trainer", "serving", "pipeline"):
        shutil.copytree(f"{_ROOT}/{package}", tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _edit(tree, path):
    with open(tree / path, "a") as f:
        f.write("\n# edited\n")


@pytest.mark.parametrize("edited, transform_changes, trainer_changes", [
    ("mtmoe/cli.py", False, False),               # the command line
    ("serving/server.py", False, False),          # the local server
    ("pipeline/report.py", False, False),         # the run report
    ("trainer/layers.py", False, True),           # the model
    ("trainer/export.py", False, True),           # the Trainer exports the serving signatures
    ("trainer/text.py", True, True),              # both tokenize with it
    ("components/transform.py", True, False),     # the Trainer reads Transform's output, not its code
    ("mtmoe/core/tasks.py", True, True),          # both read the task registry
    ("mtmoe/core/feature_names.py", True, True),  # both name the features
])
def test_a_step_reruns_only_when_code_it_runs_changes(tree, edited, transform_changes,
                                                      trainer_changes):
    before = [code_fingerprint(module, root=str(tree)) for module in (TRANSFORM_CODE, TRAINER_CODE)]
    _edit(tree, edited)
    after = [code_fingerprint(module, root=str(tree)) for module in (TRANSFORM_CODE, TRAINER_CODE)]
    assert [a != b for a, b in zip(before, after)] == [transform_changes, trainer_changes]


def test_an_import_inside_a_function_counts(tree):
    (tree / "trainer" / "helper.py").write_text("VALUE = 1\n")
    with open(tree / "trainer" / "layers.py", "a") as f:
        f.write("\n\ndef _uses_helper():\n    from mtmoe.trainer.helper import VALUE\n    return VALUE\n")
    before = code_fingerprint(TRAINER_CODE, root=str(tree))
    _edit(tree, "trainer/helper.py")
    assert code_fingerprint(TRAINER_CODE, root=str(tree)) != before
