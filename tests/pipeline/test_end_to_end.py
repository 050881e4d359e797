"""`mtmoe run` on a small sample with the tiny test config, end to end, as a user runs it; then what
it left behind. The scenarios share one work dir and run in a fixed order, each fixture asking for
the one before it, so any test can run alone or in any order:

1. `pipeline_run`: span 1, tuned, trained from scratch, blessed and pushed.
2. `unchanged_run`: `mtmoe run` again with nothing new: it trains and pushes nothing.
3. `tuned`: `mtmoe tune --compare` on span 1: the finished search and two reference weightings.
4. `retrained_run`: spans 2 and 3 land; a run is killed (SIGKILL) while its Trainer runs and run
   again: it reuses what the killed run completed and trains on spans 1-3, warm-started from run 1's
   blessed model.
5. `held_run`: span 4 lands, like the spans before it, under `schedule.retrain: on_decay`: the
   serving model holds on it, so nothing is trained or pushed, and a run after it has nothing new.
6. `refused_run`: span 5, whose training intents were all set to one label, with an intent the
   schema lacks and examples without one, and whose eval and test intents were each renamed to
   the next: data validation stops its run (label drift and skew, unseen and missing values);
   allowed on purpose, under on_decay, the serving model decays on it, so the run trains, and the
   Evaluator refuses the new model: nothing is pushed, and the run exits with status 4.
Training again on run 1's inputs gives the same metrics.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from mtmoe.core.decay import DECAYED_AND_REFUSED
from mtmoe.core.file_names import EVAL_SCORES_FILE

pytestmark = pytest.mark.e2e

TENSORBOARD = os.path.join(os.path.dirname(sys.executable), "tensorboard")
_PRIMARY = {"classification": "accuracy", "multilabel": "micro_f1", "token_tagging": "span_f1"}
COMPONENTS = ("ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "DataGate",
              "ServedModelChecker", "Transform", "Tuner", "Trainer", "Evaluator", "TestScorer",
              "Pusher")
# What a run killed during its Trainer completed, and its re-run takes from the cache.
BEFORE_TRAINER = ("StatisticsGen", "ExampleValidator", "ServedModelChecker", "Transform", "Tuner")
TEXTS = ["transfer $50 to my savings tomorrow", "I LOST MY VISA CARD!!", ""]


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run


def _relabelled(sample, out, relabel, relabel_held_out=lambda rows: None):
    """The sample with `relabel(rows)` applied to its training rows (a labelling bug in one field)
    and `relabel_held_out` to its eval and test rows."""
    out.mkdir()
    for split in ("train", "eval", "test"):
        rows = [json.loads(line) for line in (sample / f"{split}.jsonl").read_text().splitlines()]
        (relabel if split == "train" else relabel_held_out)(rows)
        (out / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _one_intent(rows):
    for row in rows:
        row["intent"] = rows[-1]["intent"]


def _one_unseen_and_missing_intents(rows):
    """All one intent (drift and skew), five an intent the schema lacks, three without one."""
    _one_intent(rows)
    for row in rows[:5]:
        row["intent"] = "close_account"
    for row in rows[5:8]:
        del row["intent"]


def _next_intent(rows):
    """Each intent renamed to the next one (in name order): what the served model learned no longer
    holds."""
    intents = sorted({row["intent"] for row in rows})
    for row in rows:
        row["intent"] = intents[(intents.index(row["intent"]) + 1) % len(intents)]


def _on_decay(run, name, **tasks):
    """Run 1's config under `schedule.retrain: on_decay`, judged on 20 examples, with limits on
    the intent and the slots only (`tasks`: {task: {field: value}} more), written as `name`."""
    config = json.loads(json.dumps(run["config"]))
    config["schedule"] = {"retrain": "on_decay", "min_examples": 20}
    for task in config["tasks"]:
        task["max_drop"] = 0.25 if task["name"] in ("intent", "slots") else 1.0
        task.update(tasks.get(task["name"], {}))
    path = run["root"] / name
    path.write_text(yaml.safe_dump(config))
    return path, config


def _add_span(cli, root, name, seed):
    """A new 200-example sample, converted into the next span."""
    assert cli("data", "sample", "--out", root / name, "--num-examples", 200,
               "--seed", seed).returncode == 0
    assert cli("data", "convert", "--format", "jsonl", root / name, root / "data").returncode == 0


def _summary(run):
    return json.loads((run["work"] / "summary.json").read_text())


def _kill_during_trainer(run, log):
    """Starts `mtmoe run` and SIGKILLs it (and its Beam workers) a few seconds into its Trainer."""
    models = run["work"] / "pipeline" / "Trainer" / "model"
    before = set(os.listdir(models))
    with open(log, "w") as out:
        process = subprocess.Popen(run["run_command"](), stdout=out,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 1200
    while not set(os.listdir(models)) - before:  # the Trainer's output folder: it has started
        assert process.poll() is None, open(log).read()[-5000:]
        assert time.monotonic() < deadline, "the Trainer did not start"
        time.sleep(0.5)
    time.sleep(5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return open(log).read()


@pytest.fixture(scope="module")
def unchanged_run(run):
    """`mtmoe run` again with nothing new: the same span, config and code as the serving model."""
    runs = len(_pipeline_runs(_store(run)))
    result = run["rerun"]()
    return {"stdout": result.stdout, "new_pipeline_runs": len(_pipeline_runs(_store(run))) - runs,
            "served": sorted(os.listdir(run["work"] / "serving_model"))}


@pytest.fixture(scope="module")
def tuned(run, unchanged_run):
    """`mtmoe tune --compare` on span 1 with run 1's config: its finished search, and the two
    reference weightings trained as long as one trial."""
    return run["rerun"](run["root"] / "config.yaml", "--compare", command="tune").stdout


@pytest.fixture(scope="module")
def retrained_run(run, tuned, cli):
    """Spans 2 and 3 land before the next run: it ingests span 2 on the side, trains on spans 1-3
    and starts from the first run's blessed model. It is killed during its Trainer and run again."""
    _add_span(cli, run["root"], "sample2", 14)
    _add_span(cli, run["root"], "sample3", 15)
    killed = _kill_during_trainer(run, run["root"] / "killed.log")
    result = run["rerun"]()
    # The ML Metadata contexts of the killed run and its re-run, before later scenarios add theirs.
    contexts = [context.id for context in _pipeline_runs(_store(run))[-2:]]
    return {"killed": killed, "stdout": result.stdout, "summary": _summary(run),
            "contexts": contexts}


@pytest.fixture(scope="module")
def held_run(run, retrained_run, cli):
    """Span 4, of the same distribution, under on_decay: the retrained model holds on it; then
    the same run again, with nothing new."""
    _add_span(cli, run["root"], "sample4", 16)
    config, _ = _on_decay(run, "on_decay.yaml")
    served = sorted(os.listdir(run["work"] / "serving_model"))
    result = run["rerun"](config)
    again = run["rerun"](config)
    return {"stdout": result.stdout, "again": again.stdout, "summary": _summary(run),
            "served_before": served, "served": sorted(os.listdir(run["work"] / "serving_model"))}


@pytest.fixture(scope="module")
def refused_run(run, retrained_run, held_run, cli):
    """A run on span 5 alone (spans.window 1), whose training intents are all one label but for a
    few unseen or missing ones, and whose eval and test intents are each the next one: data
    validation stops it; allowed, under on_decay with an intent min_value of 0.5, the serving
    (retrained) model decays on it, so the run trains, from that model and against it."""
    root = run["root"]
    _relabelled(root / "sample", root / "one_intent", _one_unseen_and_missing_intents, _next_intent)
    assert cli("data", "convert", "--format", "jsonl", root / "one_intent", root / "data").returncode == 0
    config, _ = _on_decay(run, "window1.yaml", intent={"min_value": 0.5})
    raw = yaml.safe_load(config.read_text())
    raw.update(spans={"window": 1},  # no search: run 1 and `tuned` cover it
               tuning=dict(raw["tuning"], enabled=False))
    config.write_text(yaml.safe_dump(raw))
    served = sorted(os.listdir(run["work"] / "serving_model"))
    stopped = run["rerun"](config, code=2)
    assert sorted(os.listdir(run["work"] / "serving_model")) == served
    result = run["rerun"](config, "--allow-anomalies", code=DECAYED_AND_REFUSED)
    return {"stopped": stopped, "stdout": result.stdout, "stderr": result.stderr,
            "summary": _summary(run)}


def _store(run):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(run["work"] / "metadata.sqlite")
    return metadata_store.MetadataStore(connection)


def _run_executions(store, run_context):
    """{node: (execution state, [output artifact ids])} of one pipeline run."""
    found = {}
    for execution in store.get_executions_by_context(run_context.id):
        node = next(c.name.split(".", 1)[1] for c in store.get_contexts_by_execution(execution.id)
                    if c.type_id == store.get_context_type("node").id)
        outputs = sorted(e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                         if e.type == metadata_store_pb2.Event.OUTPUT)
        found[node] = (execution.last_known_state, outputs)
    return found


def _pipeline_runs(store):
    return sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)


def test_every_component_execution_is_recorded_in_ml_metadata(run):
    store = _store(run)
    states = {node: state for node, (state, _) in _run_executions(store, _pipeline_runs(store)[0]).items()}
    for component in COMPONENTS:
        assert states.get(component) == metadata_store_pb2.Execution.COMPLETE, (component, states)


def test_model_was_blessed_and_pushed_under_an_integer_version(run):
    summary = run["summary"]  # run 1's: later scenarios write summary.json again
    assert summary["blessed"] is True
    versions = run["served"]
    assert len(versions) == 1 and versions[0].isdigit()
    pushed = run["work"] / "serving_model" / versions[0]
    assert os.path.realpath(summary["pushed_model"]) == os.path.realpath(pushed)
    assert (pushed / "saved_model.pb").exists()


def test_summary_has_documented_keys_and_the_test_splits_counts(run):
    summary = run["summary"]
    assert set(summary) >= {"run_id", "components", "test_metrics", "blessed", "pushed_model"}
    assert set(COMPONENTS) <= set(summary["components"])
    assert summary["components"]["Trainer"] > 0.5
    assert sum(summary["components"].values()) < run["seconds"]  # timed inside the command
    test_examples = len((run["root"] / "sample" / "test.jsonl").read_text().splitlines())
    metrics = summary["test_metrics"]
    assert metrics["intent"]["examples"] == test_examples  # every test example has an intent
    assert (metrics["intent"]["accuracy"] * test_examples) == pytest.approx(
        round(metrics["intent"]["accuracy"] * test_examples))  # a count over the whole split
    # Better than always guessing one of eight intents; overall counts every task right at once.
    assert metrics["intent"]["accuracy"] > 0.2
    assert metrics["overall"]["accuracy"] <= min(metrics[task["name"]][_PRIMARY[task["type"]]]
                                                 for task in run["config"]["tasks"]
                                                 if task["type"] == "classification")
    assert "test split metrics" in run["stdout"] and "Trainer done in" in run["stdout"]
    # TensorBoard: the Trainer's per-epoch scalars (their content: tests/trainer/test_training.py)
    for folder in ("train", "validation", "experts"):
        assert os.listdir(os.path.join(summary["tensorboard"], folder)), folder
    assert f"{TENSORBOARD} --logdir {os.path.dirname(summary['tensorboard'])}" in run["stdout"]
    # TF Serving's model config and batching file, for the serving folder (their content:
    # tests/serving/test_export.py)
    assert all(os.path.isfile(path) for path in summary["serving_config"].values())
    assert set(summary["serving_config"]) == {"models.config", "batching.config"}


def test_the_printed_tensorboard_command_serves_the_runs_training_curves(run):
    """The command the run prints starts TensorBoard, whose HTTP API gives back the Trainer's
    loss of every epoch, as the run's history holds it."""
    import socket
    import urllib.request

    summary = run["summary"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([TENSORBOARD, "--logdir", os.path.dirname(summary["tensorboard"]),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=tensorboard/train&tag=epoch_loss"
    try:
        deadline, points = time.monotonic() + 90, None
        while points is None:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "TensorBoard served no epoch_loss in 90 s"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    points = json.load(response) or None
            except OSError:  # not listening yet, or the run not loaded yet (400)
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with open(os.path.join(os.path.dirname(summary["tensorboard"]), "history.json")) as f:
        history = json.load(f)
    assert [value for _, _, value in points] == pytest.approx(history["loss"], rel=1e-5)


def test_word_vectors_start_the_training_words_only(run):
    """The vectors file holds 3 common training words and every eval/test-only word; the Trainer's
    vocabulary is analysed on the training split, so only the 3 get their vectors."""
    coverage, vectors = run["summary"]["word_vectors"], run["vectors"]
    assert coverage["path"] == str(vectors["path"]) and vectors["held_out"]
    assert coverage["covered"] == len(vectors["training"]) == 3
    with open(run["summary"]["report"]) as f:
        assert f"{coverage['covered']} of {coverage['vocabulary']} training-vocabulary words" in f.read()


def test_the_console_shows_one_line_per_step_and_the_log_holds_the_rest(run):
    """What TensorFlow, Beam and TFX print goes to <work>/logs/<run id>.log, not to the console."""
    lines = run["stdout"].splitlines()
    noise = [line for line in lines + run["stderr"].splitlines()
             if re.search(r"cuda|oneDNN|WARNING|Traceback|^[EWI]\d{4} ", line)]
    assert noise == [], noise[:5]
    assert all(sum(line.strip().startswith(f"{component} done in") for line in lines) == 1
               for component in COMPONENTS), lines
    epochs = run["config"]["training"]["epochs"]
    assert sum("Trainer epoch [" in line for line in lines) == epochs
    assert f"{epochs}/{epochs} val_objective" in run["stdout"]
    log = run["work"] / "logs" / f"{run['summary']['run_id']}.log"
    assert f"log: {log}" in run["stdout"]
    text = log.read_text()
    assert f"Epoch {epochs}/{epochs}" in text and "Component Trainer is finished." in text


def test_summary_reports_how_each_task_gate_spreads_over_the_experts(run):
    summary = run["summary"]
    assert run["config"]["model"]["trunk"] == "deepseek_moe"
    last = summary["gate_statistics"][f"ffn_{run['config']['model']['num_blocks'] - 1}"]
    assert set(last) == {task["name"] for task in run["config"]["tasks"]}
    for router in last.values():
        assert len(router["mean_gate"]) == run["config"]["model"]["routed_experts"]
        assert sum(router["load"]) == pytest.approx(1.0, abs=1e-3)


def test_fresh_process_loads_pushed_model_and_predicts_every_task(run):
    model_dir = run["work"] / "serving_model"
    version = model_dir / os.path.basename(run["summary"]["pushed_model"])
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "out = model.signatures['serving_default'](text=tf.constant(json.loads(sys.argv[2])))\n"
        "print(json.dumps({k: v.numpy().tolist() if v.dtype != tf.string else "
        "[[x.decode() for x in row] if hasattr(row, '__len__') and not isinstance(row, bytes) "
        "else row.decode() for row in v.numpy()] for k, v in out.items()}))\n")
    result = subprocess.run([sys.executable, "-c", script, str(version), json.dumps(TEXTS)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert outputs["tokens"][0][:6] == ["transfer", "$50", "to", "my", "savings", "tomorrow"]
    for task in run["config"]["tasks"]:
        name = task["name"]
        keys = {"classification": [f"{name}_label", f"{name}_score"],
                "multilabel": [f"{name}_labels", f"{name}_scores"],
                "token_tagging": [f"{name}_tags", f"{name}_scores"]}[task["type"]]
        for key in keys:
            assert len(outputs[key]) == len(TEXTS), key
    assert all(isinstance(label, str) and label for label in outputs["intent_label"])
    assert outputs["slots_tags"][2] == [""] * len(outputs["slots_tags"][2])  # empty text: no tags


def test_predict_command_prints_one_json_object_per_text(run, cli):
    result = cli("predict", "--model", run["work"] / "serving_model", *TEXTS[:2])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [row["text"] for row in rows] == TEXTS[:2]
    intents = {json.loads(line)["intent"] for line in
               (run["root"] / "sample" / "train.jsonl").read_text().splitlines()}
    for row in rows:
        assert {t["name"] for t in run["config"]["tasks"]} < set(row)
        assert len(row["slots"]["tags"]) == len(row["slots"]["tokens"]) == len(row["text"].split())
        assert row["intent"]["label"] in intents


def _report(summary):
    folder = os.path.dirname(summary["report"])
    return folder, json.loads(open(os.path.join(folder, "report.json")).read())


def test_the_evaluator_scores_the_kept_epochs_model_as_the_trainer_did(run):
    """Same model, same eval split: TFMA's custom metric equals the trainer's validation score of
    the epoch whose weights were kept (the best val_objective), which the summary names."""
    _, report = _report(run["summary"])
    history = report["history"]
    kept = run["summary"]["kept_epoch"]
    assert kept["epochs_run"] == len(history["loss"]) == run["config"]["training"]["epochs"]
    assert kept["epoch"] == 1 + history["val_objective"].index(max(history["val_objective"]))
    slots = next(row for row in report["headline"] if row["task"] == "slots")
    assert slots["metric"] == "span_f1"
    assert slots["eval"] == pytest.approx(history["val_slots_span_f1"][kept["epoch"] - 1], abs=1e-6)
    # ...and the pushed model carries those scores for later runs' served-model checks.
    carried = json.loads((run["work"] / "serving_model" / run["served"][0] / EVAL_SCORES_FILE)
                         .read_text())
    assert carried == {row["task"]: pytest.approx(row["eval"], abs=1e-6) for row in report["headline"]}


def test_length_slices_partition_the_eval_split(run):
    _, report = _report(run["summary"])
    buckets = [row["bucket"] for row in report["slices"]]
    assert buckets and set(buckets) <= {"<=5", "6-10", "11-20", ">20"}
    eval_examples = report["data"]["eval"]["examples"]
    assert sum(row["examples"] for row in report["slices"]) == eval_examples
    # Every eval example has an intent: the slices' accuracies, weighted by size, give the whole's.
    intent = next(row for row in report["headline"] if row["task"] == "intent")
    assert sum(row["intent"] * row["examples"] for row in report["slices"]) / eval_examples == \
        pytest.approx(intent["eval"], abs=1e-6)


def test_first_run_trains_span_1_from_scratch(run):
    assert run["summary"]["spans"] == [1]
    assert run["summary"]["warm_start"] == {"warm_started": False, "base_model": None,
                                            "reason": "no blessed model yet"}


def test_retraining_covers_the_new_spans_and_starts_from_the_blessed_model(run, retrained_run):
    summary = retrained_run["summary"]
    assert "ingesting span 2 for the window of spans" in retrained_run["killed"]
    assert summary["spans"] == [1, 2, 3]
    started = summary["warm_start"]
    assert started["warm_started"] is True, started
    assert os.path.isdir(started["base_model"]) and "Trainer" in started["base_model"]
    # Most words of spans 1-3 were in span 1; new ones start fresh.
    kept, now = started["carried"]["tokens"]
    assert 0.5 * now < kept < now, started["carried"]
    assert started["carried"]["intent"][0] == started["carried"]["intent"][1]  # the same intents
    _, report = _report(summary)
    assert len(report["history"]["loss"]) == run["config"]["training"]["warm_start_epochs"]
    versions = sorted(os.listdir(run["work"] / "serving_model"))
    first = os.path.basename(run["summary"]["pushed_model"])
    assert versions == ([first, os.path.basename(summary["pushed_model"])] if summary["blessed"]
                        else [first])


def test_a_run_killed_during_its_trainer_reruns_from_the_cache_and_pushes_whole_versions(
        run, retrained_run):
    assert "Tuner done in" in retrained_run["killed"]  # the Trainer comes next
    assert "Trainer done" not in retrained_run["killed"]
    store = _store(run)
    killed, rerun = (_run_executions(store, context) for context in _pipeline_runs(store)
                     if context.id in retrained_run["contexts"])
    assert killed["Trainer"][0] == metadata_store_pb2.Execution.RUNNING  # never finished
    assert "Evaluator" not in killed and "Pusher" not in killed
    for node in BEFORE_TRAINER:
        assert killed[node][0] == metadata_store_pb2.Execution.COMPLETE, node
        assert rerun[node] == (metadata_store_pb2.Execution.CACHED, killed[node][1]), node
    assert rerun["Trainer"][0] == metadata_store_pb2.Execution.COMPLETE
    serving = run["work"] / "serving_model"
    for name in os.listdir(serving):  # no left-over temporary copy, every version whole
        assert name.isdigit() and (serving / name / "saved_model.pb").exists(), name


def test_a_run_with_nothing_new_trains_nothing_and_pushes_nothing(run, unchanged_run):
    version = os.path.basename(run["summary"]["pushed_model"])
    assert (f"no new data since run {run['summary']['run_id']}; version {version} is serving"
            in unchanged_run["stdout"])
    assert unchanged_run["new_pipeline_runs"] == 0
    assert unchanged_run["served"] == run["served"]
    assert "Trainer done in" not in unchanged_run["stdout"]


def test_a_span_that_fails_data_validation_stops_the_run_before_transform(run, refused_run):
    error = refused_run["stopped"].stderr
    assert re.search(r"^error: span 5: \d+ data validation anomalies \(schema \S+"
                     r"default\.schema\.pbtxt\); the run stops before Transform: nothing is "
                     r"trained or pushed:$", error, re.M), error[-3000:]
    assert re.search(r"^  train vs the previous span's train \(drift\): intent: High Linfty "
                     r"distance between this span and the previous one: .* above the threshold "
                     r"0\.25\.", error, re.M), error[-3000:]
    assert re.search(r"^  eval vs train \(skew\): intent: High Linfty distance between train "
                     r"and eval", error, re.M), error[-3000:]
    assert re.search(r"^  train: intent: Unexpected string values: Examples contain values missing "
                     r"from the schema: close_account \(~\d+%\)\.$", error, re.M), error[-3000:]
    assert re.search(r"^  train: intent: Column dropped: The feature was present in fewer examples "
                     r"than expected: minimum fraction = 1\.0+, actual = 0\.99\d+$", error, re.M)
    assert "re-run with --allow-anomalies" in error
    store = _store(run)
    stopped = next(executions for executions in map(
        lambda context: _run_executions(store, context), _pipeline_runs(store))
        if executions.get("DataGate", (None,))[0] == metadata_store_pb2.Execution.FAILED)
    assert "Transform" not in stopped and "Trainer" not in stopped


def test_a_span_on_which_the_served_model_holds_trains_nothing_under_on_decay(
        run, retrained_run, held_run):
    version = os.path.basename(retrained_run["summary"]["pushed_model"])
    check = held_run["summary"]["served_model"]
    assert check["retrain"] is False and check["holds"] is True and check["span"] == 4
    assert check["version"] == int(version)
    assert set(check["scores"]) == {"eval", "test"}
    assert re.search(rf"^run \S+: served model \(version {version}\) holds on span 4: intent "
                     r"accuracy \d\.\d{4} on 40 examples, \d\.\d{4} at its blessing: within its "
                     r"limits; slots span_f1 .*\nnothing trained or pushed", held_run["stdout"],
                     re.M), held_run["stdout"][-3000:]
    assert "Transform" not in held_run["stdout"] and "Trainer" not in held_run["stdout"]
    assert held_run["served"] == held_run["served_before"]
    assert f"no new data since run {held_run['summary']['run_id']}; version {version}" in \
        held_run["again"]


def test_crippled_run_is_refused_and_the_served_versions_stay(run, retrained_run, refused_run):
    summary = refused_run["summary"]
    assert summary["spans"] == [5]
    assert summary["warm_start"]["warm_started"] is True
    assert summary["blessed"] is False and summary["pushed_model"] is None
    assert summary["served_model"]["decayed"] is True and summary["served_model"]["retrain"]
    assert "NOT blessed" in refused_run["stdout"]
    assert re.search(r"^  refused: intent accuracy is 0\.\d{4}, below 0\.5 \(min_value\)$",
                     refused_run["stdout"], re.M), refused_run["stdout"][-3000:]
    version = os.path.basename(retrained_run["summary"]["pushed_model"])
    assert re.search(rf"^error: served model \(version {version}\) decayed on span 5: intent "
                     r"accuracy 0\.\d{4} on 80 examples, 0\.\d{4} at its blessing: below min_value "
                     r"0\.5; dropped 0\.\d{4}, more than max_drop 0\.25; and the new model was NOT "
                     r"blessed", refused_run["stderr"], re.M), refused_run["stderr"][-3000:]
    served = [run["summary"]["pushed_model"], retrained_run["summary"]["pushed_model"]]
    assert sorted(os.listdir(run["work"] / "serving_model")) == sorted(
        os.path.basename(path) for path in served if path)
    _, report = _report(summary)
    assert re.search(r"span 5: \d+ data validation anomalies .*; allowed \(--allow-anomalies\), "
                     r"the run goes on", refused_run["stderr"])
    assert any(line.startswith("intent: High Linfty") for line in
               report["anomalies"]["train vs the previous span's train (drift)"])
    assert report["had_baseline"] is True
    intent = next(row for row in report["headline"] if row["task"] == "intent")
    assert intent["passed"] is False and intent["eval"] < 0.5
    assert any(re.match(r"intent accuracy is 0\.\d{4}, below 0\.5 \(min_value\)", failure)
               for failure in report["failures"]), report["failures"]


def test_history_has_one_line_per_run_with_spans_start_metrics_and_outcome(
        run, unchanged_run, retrained_run, held_run, refused_run, cli):
    result = cli("history", "--work-dir", run["work"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = lines[0].split(" | ")
    assert header[:3] == ["| run", "spans", "start"] and "intent accuracy" in header
    rows = [line.split(" | ") for line in lines[2:] if line.startswith("| ")]
    # run 1; a run with nothing new; `mtmoe tune`; the killed run and its re-run; span 4, on which
    # the served model holds, and a run with nothing new after it; span 5 stopped by validation,
    # then allowed and refused
    assert [row[1:3] for row in rows] == [
        ["1", "scratch"], ["1", "-"], ["1", "-"], ["1,2,3", "-"], ["1,2,3", "warm"], ["4", "-"],
        ["1,2,3,4", "-"], ["5", "-"], ["5", "warm"]]
    outcomes = [row[-1].rstrip(" |") for row in rows]
    assert outcomes[1] == (f"nothing new: version {os.path.basename(run['summary']['pushed_model'])} "
                           f"(run {run['summary']['run_id']}) is serving")
    assert outcomes[2] == "tuning run (mtmoe tune)"
    assert outcomes[3] == "stopped before the Evaluator"
    version = os.path.basename(retrained_run["summary"]["pushed_model"])
    assert outcomes[5].startswith(f"served model (version {version}) holds on span 4: intent accuracy")
    assert outcomes[6] == f"nothing new: version {version} (run {held_run['summary']['run_id']}) is serving"
    assert outcomes[7] == "stopped by data validation"
    runs = {0: run["summary"], 4: retrained_run["summary"], 8: refused_run["summary"]}
    for index, summary in runs.items():
        assert rows[index][0][2:] == summary["run_id"].replace("T", " ")[:19]
        pushed = summary["pushed_model"]
        if pushed:
            assert outcomes[index] == f"blessed, pushed version {os.path.basename(pushed)}"
    assert re.search(rf"^LOOK AT THIS: served model \(version {version}\) decayed on span 5: .*; and "
                     r"the new model is NOT blessed: .*intent accuracy 0\.\d+ < 0\.5", outcomes[8]), \
        outcomes[8]
    _, report = _report(run["summary"])
    intent = next(row for row in report["headline"] if row["task"] == "intent")
    assert rows[0][header.index("intent accuracy")] == f"{intent['eval']:.4f}"
    # The served model's score on each new span: none before a model served; span 4's, as checked.
    served = header.index("served intent accuracy")
    assert rows[0][served] == "-"
    assert rows[5][served] == f"{held_run['summary']['served_model']['primary']['intent']:.4f}"


def test_history_of_a_work_dir_from_before_runs_jsonl_is_read_from_ml_metadata_alike(
        run, refused_run, cli, tmp_path):
    old = tmp_path / "work"  # the runs' ML Metadata (absolute artifact URIs) without runs.jsonl
    old.mkdir()
    for name in ("metadata.sqlite", "skipped_runs.jsonl"):
        shutil.copy(run["work"] / name, old)
    result = cli("history", "--work-dir", old, "--config", run["root"] / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.startswith(f"note: no runs.jsonl in {old} (its runs are older)")
    assert result.stdout == cli("history", "--work-dir", run["work"]).stdout


def test_read_only_commands_load_no_tensorflow(run):
    """`history`, `report` and `versions` read what the runs wrote: no TensorFlow, so no CUDA or
    absl lines, and an answer in a fraction of the seconds TensorFlow takes to load."""
    code = ("import sys; from mtmoe.cli import main; code = main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules, code)")
    for args in (["history", "--work-dir", run["work"]], ["report", "--work-dir", run["work"]],
                 ["versions", "--serving-dir", run["work"] / "serving_model"]):
        result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                                text=True, timeout=120)
        assert result.stdout.split()[-2:] == ["False", "0"], (args, result.stdout, result.stderr)
        assert result.stderr == "", (args, result.stderr)


def test_each_run_has_a_report_naming_every_task_with_existing_plots(run, refused_run):
    for summary in (run["summary"], refused_run["summary"]):
        folder, _ = _report(summary)
        html = open(os.path.join(folder, "report.html")).read()
        markdown = open(os.path.join(folder, "report.md")).read()
        for task in run["config"]["tasks"]:
            assert task["name"] in html and task["name"] in markdown
        images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
        assert len(images) >= 4  # confusion matrices of the two classification tasks, curves, gates
        for image in images:
            assert os.path.getsize(os.path.join(folder, image)) > 1000, image
        assert "Validation anomalies" in html and "Training" in html


def test_report_command_prints_the_latest_or_the_named_report(run, refused_run, cli):
    latest = cli("report", "--work-dir", run["work"])
    assert latest.returncode == 0, latest.stderr[-2000:]
    assert latest.stdout.splitlines()[0] == refused_run["summary"]["report"]
    assert "NOT blessed" in latest.stdout and "below 0.5 (min_value)" in latest.stdout
    first = cli("report", run["summary"]["run_id"], "--work-dir", run["work"])
    assert first.returncode == 0 and first.stdout.splitlines()[0] == run["summary"]["report"]
    assert "Blessed and pushed" in first.stdout
    missing = cli("report", "no-such-run", "--work-dir", run["work"])
    assert missing.returncode == 2 and "no report for run no-such-run" in missing.stderr


def test_tuner_searched_in_the_pipeline_and_the_trainer_used_the_best_trial(run):
    summary = run["summary"]
    trials = summary["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert trials[0]["objective"] >= trials[1]["objective"]
    best = trials[0]["values"]
    tasks = [task["name"] for task in run["config"]["tasks"]]
    assert summary["loss_weighting"] == "fixed"
    assert summary["loss_weights"] == {task: best[f"loss_weight_{task}"] for task in tasks}
    assert all(0.1 <= weight <= 10.0 for weight in summary["loss_weights"].values())
    folder, _ = _report(summary)
    text = open(os.path.join(folder, "report.md")).read()
    assert "## Tuning" in text and f"| {trials[0]['trial']} |" in text


def test_tune_command_prints_the_trials_and_the_reference_weightings(run, tuned):
    rows = [line.split(" | ") for line in tuned.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert header[0] == "| trial" and header[-1] == "objective |"
    names = [row[0][2:] for row in body]
    trials = [trial["trial"] for trial in run["summary"]["trials"]]
    assert names == trials + ["equal_weights", "uncertainty"]  # the search run 1 finished, reused
    weights = [i for i, column in enumerate(header) if column.startswith("loss_weight_")]
    assert len(weights) == len(run["config"]["tasks"])
    assert all(body[-2][i] == "1.0000" for i in weights)
    assert any(body[-1][i] != "1.0000" for i in weights)  # uncertainty weighting learned its own


def test_the_first_runs_trainer_trained_again_gives_the_same_metrics(run, tmp_path):
    """Run 1's Trainer ran after the Tuner, in the pipeline's process; run again here from the
    inputs and settings ML Metadata recorded, with the same seed, it must give the same metrics."""
    from mtmoe.core.file_names import EXPORT_KEY, HISTORY_FILE
    from mtmoe.pipeline.workers import trainer_fn_args
    from mtmoe.trainer.module import run_fn

    store = _store(run)
    node = store.get_context_by_type_and_name("node", f"{run['config']['pipeline']['name']}.Trainer")
    trainer = min(store.get_executions_by_context(node.id), key=lambda execution: execution.id)
    model_run, = [artifact.uri for artifact in store.get_artifacts_by_id(
        [e.artifact_id for e in store.get_events_by_execution_ids([trainer.id])
         if e.type == metadata_store_pb2.Event.OUTPUT])
        if store.get_artifact_types_by_id([artifact.type_id])[0].name == "ModelRun"]
    # As a `mtmoe train-worker` process reads the chief's Trainer (pipeline/workers.py).
    fn_args = trainer_fn_args(store, trainer)
    assert fn_args.hyperparameters  # the Tuner's best trial
    fn_args.custom_config = dict(fn_args.custom_config, **{EXPORT_KEY: False})  # metrics suffice
    fn_args.serving_model_dir = str(tmp_path / "Format-Serving")
    fn_args.model_run_dir = str(tmp_path / "run")
    run_fn(fn_args)

    again = json.loads((tmp_path / "run" / HISTORY_FILE).read_text())
    with open(os.path.join(model_run, HISTORY_FILE)) as f:
        recorded = json.load(f)
    assert len(recorded["loss"]) == run["config"]["training"]["epochs"]
    assert "val_slots_span_f1" in recorded
    assert again.keys() == recorded.keys()
    for metric, values in recorded.items():
        if metric != "epoch_seconds":  # wall time, not a result of the training
            assert again[metric] == pytest.approx(values, abs=1e-6), metric
