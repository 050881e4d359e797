"""Packaging for mtmoe: multi-task text models trained and shipped by a TFX pipeline.

One installed package, `mtmoe`. Its layers keep their top-level folders (`trainer/` is `mtmoe.trainer`,
and so on: LAYER_FOLDERS), so that nothing generic such as `trainer` lands in site-packages.

Dependencies are pinned in requirements.lock (installed by `make`); install_requires names only the
top-level packages so that `pip install -e .` never re-resolves the stack.
"""
from setuptools import find_packages, setup

# Subpackages of mtmoe that live in a top-level folder of their own.
LAYER_FOLDERS = {"mtmoe.trainer": "trainer", "mtmoe.components": "components",
                 "mtmoe.serving": "serving", "mtmoe.pipeline": "pipeline"}


def _packages():
    packages = find_packages(include=["mtmoe", "mtmoe.*"])
    for package, folder in LAYER_FOLDERS.items():
        packages += [package] + [f"{package}.{sub}" for sub in find_packages(where=folder)]
    return packages


setup(
    name="mtmoe",
    version="0.1.0",
    description="A TFX pipeline for multi-task text models with a mixture-of-experts trunk",
    python_requires=">=3.9,<3.11",
    packages=_packages(),
    package_dir={"mtmoe": "mtmoe", **LAYER_FOLDERS},
    package_data={"mtmoe": ["configs/*.yaml", "configs/*.pbtxt"], "mtmoe.serving.tf_text_ops": ["*.txt"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-text==2.16.1",
        "keras==3.6.0",
        "keras-tuner==1.4.7",
        "apache-beam==2.59.0",
        "matplotlib==3.10.9",
        "markdown",
        "pyyaml",
        "pydantic>=2",
        "tensorflow-serving-api==2.16.1",
        "grpcio",
        "requests",
        "tornado>=6.3",
        "orjson>=3.9",  # the REST server's JSON (numpy arrays written directly)
    ],
    entry_points={"console_scripts": ["mtmoe = mtmoe.cli:main"]},
)
