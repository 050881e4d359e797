"""pipeline.beam_runner / beam_options: the Beam arguments every Beam-based component gets."""

import pytest
import yaml

from mtmoe.core.config import load_config
from mtmoe.core.errors import UserError
from mtmoe.pipeline.pipeline import IN_PROCESS_MAX_BYTES, beam_args


def _config(tmp_path, **pipeline):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"tasks": [{"name": "intent", "type": "classification",
                                               "label_field": "intent"}], "pipeline": pipeline}))
    return load_config(str(path))


def test_direct_runner_uses_multi_processing_with_the_configured_workers(tmp_path):
    args = beam_args(_config(tmp_path, beam_workers=3))
    assert args == ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                    "--direct_num_workers=3", "--sdk_container_image=none",
                    "--beam_plugins=tensorflow_text"]


def test_one_direct_worker_runs_beam_in_the_pipelines_own_process(tmp_path):
    args = beam_args(_config(tmp_path, beam_workers=1))
    assert args == ["--runner=DirectRunner", "--direct_running_mode=in_memory",
                    "--sdk_container_image=none", "--beam_plugins=tensorflow_text"]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_tfx_builds_no_package_of_itself_for_direct_workers(tmp_path, monkeypatch, workers):
    from tfx.utils import dependency_utils

    def build():
        raise AssertionError("TFX built an sdist of itself for the DirectRunner's workers")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", build)
    args = beam_args(_config(tmp_path, beam_workers=workers), 1 << 10)
    assert dependency_utils.make_beam_dependency_flags(args) == args


@pytest.mark.parametrize("data_bytes, mode", [
    (1 << 20, "in_memory"),                      # the sample, SNIPS: in this process
    (IN_PROCESS_MAX_BYTES, "in_memory"),
    (IN_PROCESS_MAX_BYTES + 1, "multi_processing"),  # one worker per core
    (None, "multi_processing"),                  # unknown (a compiled pipeline): worker processes
])
def test_auto_direct_workers_run_small_data_in_process(tmp_path, data_bytes, mode):
    args = beam_args(_config(tmp_path, beam_workers=0), data_bytes)
    assert f"--direct_running_mode={mode}" in args
    if mode == "multi_processing":
        assert "--direct_num_workers=0" in args


def test_configured_direct_workers_are_kept_whatever_the_data_size(tmp_path):
    args = beam_args(_config(tmp_path, beam_workers=3), 1 << 10)
    assert "--direct_running_mode=multi_processing" in args and "--direct_num_workers=3" in args


@pytest.mark.parametrize("runner, options, expected", [
    ("dataflow", {"project": "p", "region": "europe-west4", "temp_location": "gs://b/tmp",
                  "setup_file": "./setup.py"},
     ["--runner=DataflowRunner", "--project=p", "--region=europe-west4", "--setup_file=./setup.py",
      "--temp_location=gs://b/tmp"]),
    ("flink", {"flink_master": "flink:8081", "environment_type": "DOCKER",
               "environment_config": "mtmoe:latest"},
     ["--runner=FlinkRunner", "--environment_config=mtmoe:latest", "--environment_type=DOCKER",
      "--flink_master=flink:8081"]),
    ("spark", {"spark_master_url": "spark://spark:7077", "environment_type": "LOOPBACK"},
     ["--runner=SparkRunner", "--environment_type=LOOPBACK", "--spark_master_url=spark://spark:7077"]),
])
def test_each_runner_gets_its_options_and_no_direct_runner_flags(tmp_path, runner, options, expected):
    args = beam_args(_config(tmp_path, beam_runner=runner, beam_options=options))
    assert args == expected + ["--beam_plugins=tensorflow_text"]
    assert not any(arg.startswith("--direct") for arg in args)


@pytest.mark.parametrize("runner, options, missing", [
    ("dataflow", {"project": "p"}, "region, temp_location"),
    ("flink", {}, "flink_master"),
    ("spark", {"environment_type": "LOOPBACK"}, "spark_master_url"),
])
def test_a_runner_without_its_required_options_is_refused_naming_them(tmp_path, runner, options,
                                                                      missing):
    with pytest.raises(UserError, match=rf"config.yaml: pipeline.beam_options: the {runner} runner "
                                        rf"needs {missing}$"):
        _config(tmp_path, beam_runner=runner, beam_options=options)


def test_an_unknown_runner_is_refused(tmp_path):
    with pytest.raises(UserError, match="pipeline.beam_runner: Input should be 'direct', 'dataflow', "
                                        "'flink' or 'spark', got 'local'"):
        _config(tmp_path, beam_runner="local")
