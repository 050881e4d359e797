"""`mtmoe compile`: the pipeline as a Kubeflow Pipelines v2 spec and as an Airflow DAG module, without
running it (Airflow is not installed)."""
import ast
import json
from importlib import resources

import pytest
import yaml

from mtmoe.core.config import load_config

# Every node of create_pipeline; the latest-blessed-model resolver becomes one task per channel.
COMPONENTS = ("ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
              "DataGate", "ServedModelChecker", "Transform", "Trainer", "Evaluator", "TestScorer",
              "Pusher")
RESOLVERS = ("latest_blessed_model_resolver", "accepted_statistics_resolver")


def _config(tmp_path, window, **sections):
    config = yaml.safe_load(resources.files("mtmoe.configs").joinpath("default.yaml").read_text())
    config.setdefault("spans", {})["window"] = window
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    config["validation"]["schema"] = load_config().validation.schema  # the packaged one
    path = tmp_path / f"window{window}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _module_constants(source):
    """{name: value} of the module's literal assignments, and the names assigned at all."""
    assigned, constants = set(), {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                assigned.add(target.id)
                try:
                    constants[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return constants, assigned


def _compile_kubeflow(tmp_path, cli, window, **sections):
    output = tmp_path / f"out{window}" / "pipeline.json"
    result = cli("compile", "--target", "kubeflow-v2", "--output", output,
                 "--config", _config(tmp_path, window, **sections), "--data", tmp_path / "data",
                 "--work-dir", tmp_path / "work", "--image", "registry.example/mtmoe:7")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, output


def _split_patterns(spec) -> list:
    """The ImportExampleGen's input split patterns in a compiled spec."""
    parameters = spec["root"]["dag"]["tasks"]["ImportExampleGen"]["inputs"]["parameters"]
    splits = json.loads(parameters["input_config"]["runtimeValue"]["constantValue"]["stringValue"])["splits"]
    return [split["pattern"] for split in splits]


def test_kubeflow_v2_spec_names_every_component(tmp_path, cli):
    result, output = _compile_kubeflow(tmp_path, cli, 1)
    spec = json.loads(output.read_text())["pipelineSpec"]
    tasks = set(spec["root"]["dag"]["tasks"])
    assert set(COMPONENTS) <= tasks
    assert [t for t in tasks - set(COMPONENTS) if not t.startswith(RESOLVERS)] == []
    assert all(any(t.startswith(resolver) for t in tasks) for resolver in RESOLVERS)
    assert f"components: {', '.join(sorted(tasks))}" in result.stdout
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"registry.example/mtmoe:7"}
    assert str(tmp_path / "data") in json.dumps(spec)
    assert [p.name for p in output.parent.iterdir()] == ["pipeline.json"]
    assert _split_patterns(spec) == ["span-{SPAN}/train/*", "span-{SPAN}/eval/*", "span-{SPAN}/test/*"]


def test_kubeflow_v2_keeps_the_on_decay_policy(tmp_path, cli):
    """Transform and what follows run on the served-model check's `retrain`; the check itself,
    always."""
    _, output = _compile_kubeflow(tmp_path, cli, 1, schedule={"retrain": "on_decay"})
    tasks = json.loads(output.read_text())["pipelineSpec"]["root"]["dag"]["tasks"]
    for name in ("Transform", "Trainer", "Evaluator", "TestScorer", "Pusher"):
        condition = tasks[name]["triggerPolicy"]["condition"]
        assert "ServedModelChecker" in condition and "retrain" in condition, (name, condition)
    assert "triggerPolicy" not in tasks["ServedModelChecker"]
    _, plain = _compile_kubeflow(tmp_path, cli, 0)
    assert "triggerPolicy" not in json.loads(plain.read_text())["pipelineSpec"]["root"]["dag"][
        "tasks"]["Transform"]


def test_kubeflow_v2_trains_on_every_span_with_the_default_window(tmp_path, cli):
    """spans.window 0 (the default) compiles: one ExampleGen reads every span folder, no window
    resolver."""
    assert load_config().spans.window == 0
    _, output = _compile_kubeflow(tmp_path, cli, 0)
    spec = json.loads(output.read_text())["pipelineSpec"]
    assert _split_patterns(spec) == ["span-*/train/*", "span-*/eval/*", "span-*/test/*"]
    assert set(COMPONENTS) <= set(spec["root"]["dag"]["tasks"])


def _trainer_config(spec) -> dict:
    parameters = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    return json.loads(parameters["custom_config"]["runtimeValue"]["constantValue"]["stringValue"])


def test_kubeflow_v2_trainer_is_a_vertex_multi_worker_job_from_the_cluster_section(tmp_path, cli):
    _, output = _compile_kubeflow(
        tmp_path, cli, 0, training={"distribution": "multi_worker"},
        cluster={"project": "my-project", "region": "europe-west4", "workers": 3,
                 "machine_type": "n1-highmem-8"})
    spec = json.loads(output.read_text())["pipelineSpec"]
    trainer = _trainer_config(spec)
    assert trainer["ai_platform_enable_vertex"] is True
    assert trainer["ai_platform_vertex_region"] == "europe-west4"
    args = trainer["ai_platform_training_args"]
    assert args["project"] == "my-project"
    pool = {"machine_spec": {"machine_type": "n1-highmem-8"},
            "container_spec": {"image_uri": "registry.example/mtmoe:7"}}
    assert args["worker_pool_specs"] == [{**pool, "replica_count": 1},  # the chief
                                         {**pool, "replica_count": 2}]
    executor = spec["deploymentSpec"]["executors"][
        spec["components"][spec["root"]["dag"]["tasks"]["Trainer"]["componentRef"]["name"]][
            "executorLabel"]]
    assert "google_cloud_ai_platform" in json.dumps(executor)  # TFX's Vertex AI Trainer executor


def test_kubeflow_v2_trainer_runs_in_its_step_without_a_cluster_project(tmp_path, cli):
    _, output = _compile_kubeflow(tmp_path, cli, 0)
    spec = json.loads(output.read_text())["pipelineSpec"]
    assert "ai_platform_training_args" not in _trainer_config(spec)


def test_more_cluster_workers_need_multi_worker_training(tmp_path):
    from mtmoe.core.errors import UserError

    with pytest.raises(UserError, match="cluster.workers is 2: set training.distribution to "
                                        "multi_worker"):
        load_config(_config(tmp_path, 0, cluster={"workers": 2}))


def test_kubeflow_v2_refuses_a_window_of_several_spans(tmp_path, cli):
    config = _config(tmp_path, 3)
    output = tmp_path / "pipeline.json"
    result = cli("compile", "--target", "kubeflow-v2", "--output", output, "--config", config)
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error == [f"error: {config}: spans.window is 3; Kubeflow Pipelines v2 cannot resolve a "
                     "window of N spans (it runs only latest-artifact and latest-blessed-model "
                     "resolvers): set spans.window to 0 (every span) or 1 (the newest) for this "
                     "target"]
    assert not output.exists()


def test_kubeflow_v2_with_a_work_dir_it_cannot_write_is_one_line(tmp_path, cli):
    (tmp_path / "a_file").write_text("")
    work_dir, output = tmp_path / "a_file" / "work", tmp_path / "pipeline.json"
    result = cli("compile", "--target", "kubeflow-v2", "--output", output,
                 "--config", _config(tmp_path, 1), "--work-dir", work_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error == [f"error: {work_dir}: compiling keeps the curated schema under the work dir, "
                     f"and it could not be written there: {tmp_path / 'a_file'} is not a directory"]
    assert not output.exists()


@pytest.mark.parametrize("every, schedule", [("day", "@daily"), ("week", "@weekly")])
def test_airflow_dag_module(tmp_path, cli, every, schedule):
    config, output = _config(tmp_path, 0), tmp_path / "dags" / "mtmoe_dag.py"
    result = cli("compile", "--target", "airflow", "--output", output, "--every", every,
                 "--config", config, "--data", tmp_path / "data", "--work-dir", tmp_path / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    source = output.read_text()
    compile(source, str(output), "exec")
    constants, assigned = _module_constants(source)
    assert constants == {"CONFIG_PATH": str(config), "DATA_ROOT": str(tmp_path / "data"),
                         "WORK_DIR": str(tmp_path / "work"), "SCHEDULE": schedule}
    assert "DAG" in assigned
    imports = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
               for node in ast.parse(source).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports == ["datetime", "mtmoe", "mtmoe.core.config", "mtmoe.pipeline.facts", "mtmoe.pipeline.paths",
                       "mtmoe.pipeline.pipeline",
                       "tfx.orchestration.airflow.airflow_dag_runner"]  # mtmoe before TF
    assert [p.name for p in output.parent.iterdir()] == ["mtmoe_dag.py"]


def test_airflow_with_a_bad_config_writes_nothing(tmp_path, cli):
    config = tmp_path / "bad.yaml"
    config.write_text("tasks:\n  - {name: a, type: ranking, label_field: a}\n")
    output = tmp_path / "dag.py"
    result = cli("compile", "--target", "airflow", "--output", output, "--config", config)
    assert result.returncode == 2
    assert "tasks[0].type" in result.stderr
    assert not output.exists()


def test_airflow_needs_a_local_work_dir(tmp_path, cli):
    result = cli("compile", "--target", "airflow", "--output", tmp_path / "dag.py",
                 "--work-dir", "gs://bucket/work")
    assert result.returncode == 2
    assert result.stderr.startswith("error: gs://bucket/work: the airflow target needs a local")
    assert not (tmp_path / "dag.py").exists()
