"""The `mtmoe` command: run and tune the pipeline, read its reports, predict and serve, make and
convert data."""
import argparse
import collections
import contextlib
import glob
import json
import os
import shutil
import sys
import warnings

import mtmoe  # noqa: F401  sets the Keras environment before TensorFlow loads
from mtmoe.core.config import CLASSIFICATION, TOKEN_TAGGING
from mtmoe.core.console import say
from mtmoe.core.errors import StepFailed, UserError
from mtmoe.core.file_names import SERVED_MODEL_NAME

DEFAULT_WORK_DIR = "mtmoe_work"
ALLOW_ANOMALIES_HELP = ("go on when the new span fails data validation (schema anomalies, label drift "
                        "or skew); the anomalies are still logged and reported")


@contextlib.contextmanager
def _prepared(args):
    """The config and paths of a pipeline command, with the sample generated when no --data.

    The work dir's run lock is held from before the sample until the command ends: a second run in
    the same work dir (a cron run while the last one still runs) stops at once with exit code 2.
    """
    from mtmoe.core.config import load_config
    from mtmoe.core.formats import check_latest_span, existing_spans, read_splits, write_span
    from mtmoe.core.sample import write_sample
    from mtmoe.core.schedule import run_lock

    config = load_config(args.config)
    if getattr(args, "epochs", None) is not None:
        config = config.with_overrides(epochs=args.epochs)
    work_dir = os.path.abspath(args.work_dir)
    data_root = os.path.abspath(args.data) if args.data else os.path.join(work_dir, "data")
    if args.data:  # bad data stops the command before anything is written
        span = check_latest_span(data_root, config.tasks)
    with run_lock(work_dir):
        if not args.data:
            if not existing_spans(data_root):
                sample_dir = os.path.join(work_dir, "sample")
                write_sample(sample_dir)
                write_span(read_splits("jsonl", sample_dir, [t.label_field for t in config.tasks],
                                       [t.label_field for t in config.tasks
                                        if t.type == TOKEN_TAGGING]),
                           data_root)
                say(f"generated the sample data into {data_root}")
            span = check_latest_span(data_root, config.tasks)
        say(f"config {config.source}; data {span}; work dir {work_dir}")
        from mtmoe.pipeline.paths import Paths

        yield config, Paths(data_root=data_root, work_dir=work_dir)


@contextlib.contextmanager
def _joined_as_chief(args):
    """With training.distribution multi_worker, this process joins the TF_CONFIG cluster as its
    chief before anything else uses TensorFlow (collective ops are set up at program start)."""
    from mtmoe.core.config import load_config

    if load_config(args.config).training.distribution == "multi_worker":
        from mtmoe.core.cluster import cluster_task

        cluster_task(chief=True)  # a wrong TF_CONFIG is reported before TensorFlow loads
        from mtmoe.trainer.distribution import join_cluster

        join_cluster(chief=True, echo=say)
    yield


def _run(args) -> int:
    log = _CommandLog(args.verbose)
    with log.capturing(), _joined_as_chief(args), _prepared(args) as (config, paths):
        from mtmoe.pipeline.unchanged import inputs_fingerprint, record_skipped, serving_unchanged

        inputs = inputs_fingerprint(config, paths)
        serving = None if args.force else serving_unchanged(paths, inputs)
        if serving:
            record_skipped(paths, serving, inputs)
            say(f"no new data since run {serving['run_id']}; version {serving['version']} is "
                "serving (nothing trained or pushed; --force retrains)")
            return 0
        from mtmoe.pipeline.local_runner import run_pipeline

        log.started(paths.logs_dir)
        summary = run_pipeline(config, paths, echo=say, allow_anomalies=args.allow_anomalies,
                               inputs=inputs, force=args.force)
    summary["log"] = log.keep(summary["run_id"])
    from mtmoe.core.decay import DECAYED_AND_REFUSED, check_line

    served = summary["served_model"]
    if served and not served["retrain"]:
        print(f"\nrun {summary['run_id']}: {check_line(served)}\nnothing trained or pushed "
              "(schedule.retrain: on_decay; --force retrains)")
        if summary["log"]:
            print(f"log: {summary['log']}")
        return 0
    print(format_summary(summary))
    print(f"\nreport: {summary['report']}")
    if summary["log"]:
        print(f"log: {summary['log']}")
    if summary["tensorboard"]:  # the venv's TensorBoard: no activated venv needed
        print(f"training curves: {os.path.join(os.path.dirname(sys.executable), 'tensorboard')} "
              f"--logdir {os.path.dirname(summary['tensorboard'])}")
    if served and served["decayed"] and not summary["blessed"]:
        print(f"\nerror: {check_line(served)}; and the new model was NOT blessed: the serving "
              "model no longer meets its limits and nothing replaced it", file=sys.stderr)
        return DECAYED_AND_REFUSED
    return 0


def _tune(args) -> None:
    import dataclasses

    log = _CommandLog(args.verbose)
    with log.capturing(), _prepared(args) as (config, paths):
        config = dataclasses.replace(config, tuning=dataclasses.replace(config.tuning, enabled=True))
        from mtmoe.pipeline.local_runner import run_pipeline
        from mtmoe.pipeline.report_text import trials_table

        log.started(paths.logs_dir)
        summary = run_pipeline(config, paths, echo=say, tuning_only=True,
                               compare_weightings=args.compare, allow_anomalies=args.allow_anomalies)
    log.keep(summary["run_id"])
    print(f"\nrun {summary['run_id']}: {config.tuning.algorithm} search, objective "
          f"val_objective (higher is better)\n")
    print("\n".join(trials_table(summary["trials"])))


def _train_worker(args) -> None:
    """One more worker of a multi-worker training: joins the TF_CONFIG cluster, waits for the
    Trainer the chief's `mtmoe run` starts in the (shared) work dir, and trains with it."""
    import datetime
    import time

    from mtmoe.core.cluster import cluster_task
    from mtmoe.core.config import load_config

    config = load_config(args.config)
    if config.training.distribution != "multi_worker":
        raise UserError(f"{config.source}: training.distribution is "
                        f"{config.training.distribution!r}; `mtmoe train-worker` joins a "
                        "multi_worker training")
    kind, index, _ = cluster_task(chief=False)
    started = time.time()
    log = _CommandLog(args.verbose)
    with log.capturing():
        from mtmoe.pipeline.paths import Paths
        from mtmoe.trainer.distribution import join_cluster

        paths = Paths(data_root="", work_dir=os.path.abspath(args.work_dir))
        log.started(paths.logs_dir)
        join_cluster(chief=False, echo=say)
        from mtmoe.pipeline.workers import worker_fn_args
        from mtmoe.trainer.module import run_fn

        execution, fn_args = worker_fn_args(paths, config.pipeline.name, started, args.wait)
        say(f"training with the chief's Trainer (execution {execution} in {paths.metadata})")
        try:
            run_fn(fn_args)
        except Exception as e:  # the log has the traceback
            raise StepFailed(f"{kind} {index}: the training failed: {e}") from e
    log.keep(f"{datetime.datetime.now():%Y-%m-%dT%H%M%S}-{kind}-{index}")
    say(f"{kind} {index}: training done (the chief keeps the model)")


class _CommandLog:
    """Everything TensorFlow, Beam and TFX print during a pipeline command, captured from before
    TensorFlow loads (mtmoe.core.console.logged_to) so that the console keeps one line per step. A
    temporary file until the pipeline starts; then kept as `<work-dir>/logs/<run id>.log` (or, if
    the run fails, `<time>-failed.log`, its path in the error). With `verbose`, shown live instead."""

    def __init__(self, verbose: bool):
        import tempfile

        self.verbose, self.folder = verbose, None
        descriptor, self.path = tempfile.mkstemp(prefix="mtmoe-", suffix=".log")
        os.close(descriptor)

    @contextlib.contextmanager
    def capturing(self):
        from mtmoe.core.console import logged_to

        try:
            with logged_to(self.path, self.verbose):
                yield self
        except (StepFailed, UserError) as e:
            if self.folder is None or self.verbose:  # bad input: nothing ran that needs a log
                self._discard()
                raise
            import datetime

            kept = self.keep(datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S-failed"))
            raise type(e)(f"{e}\nfull log: {kept}") from None
        if self.folder is None:
            self._discard()

    def started(self, folder: str) -> None:
        self.folder = folder
        if not self.verbose:
            say(f"log: {folder}/<run id>.log (--verbose shows it here)")

    def keep(self, name: str):
        """Moves the log to `<logs folder>/<name>.log`; its path (None with `verbose`)."""
        from mtmoe.core.console import log_at_exit

        if self.verbose:
            self._discard()
            return None
        os.makedirs(self.folder, exist_ok=True)
        kept = os.path.join(self.folder, f"{name}.log")
        shutil.move(self.path, kept)
        self.path = kept
        log_at_exit(kept)
        return kept

    def _discard(self):
        if os.path.exists(self.path):
            os.remove(self.path)


def _load_tensorflow_quietly() -> None:
    """Imports TensorFlow with what its C++ libraries print while loading (on a machine without a
    GPU, TF 2.16's `Unable to register cuDNN factory ...` lines) kept off the console of the
    commands that print their own lines; an error while importing still shows."""
    if "tensorflow" not in sys.modules:
        with _CommandLog(verbose=False).capturing():
            import tensorflow  # noqa: F401


def format_summary(summary: dict) -> str:
    lines = ["", f"run {summary['run_id']}: "
             + ("blessed, pushed to " + summary["pushed_model"] if summary["pushed_model"]
                else "blessed" if summary["blessed"] else "NOT blessed, nothing pushed"),
             *[f"  refused: {failure}" for failure in summary["failures"]],
             *[f"  note: {note}" for note in summary.get("notes", [])],
             "", "test split metrics:", f"  {'task':<16} {'metric':<22} {'value':>8}"]
    for task, scores in summary["test_metrics"].items():
        for metric, value in scores.items():
            shown = ("       —" if isinstance(value, float) and value != value  # NaN: undefined
                     else f"{value:8.4f}" if isinstance(value, float) else f"{value:>8}")
            lines.append(f"  {task:<16} {metric:<22} {shown}")
    return "\n".join(lines)


def _report(args) -> None:
    from mtmoe.pipeline.report_text import REPORT_HTML, REPORT_JSON, headline_table, verdict

    reports = os.path.join(os.path.abspath(args.work_dir), "reports")
    found = sorted(glob.glob(os.path.join(reports, "*", REPORT_JSON)), key=os.path.getmtime)
    if args.run_id:
        found = [p for p in found if os.path.basename(os.path.dirname(p)) == args.run_id]
    if not found:
        raise UserError(f"{reports}: no report" + (f" for run {args.run_id}" if args.run_id else "")
                        + "; `mtmoe run` writes one per run")
    with open(found[-1]) as f:
        report = json.load(f)
    print(os.path.join(os.path.dirname(found[-1]), REPORT_HTML))
    print(f"run {report['run_id']}: {verdict(report)}\n")
    print("\n".join(headline_table(report)))


def _history(args) -> None:
    """The runs' lines from runs.jsonl. A work dir whose runs are all from before that file is read
    from ML Metadata instead, as the runs would write it (slow: TFMA loads TensorFlow), with a note:
    its next run writes the file."""
    from mtmoe.pipeline.history import RUNS_FILE, format_history, recorded_runs, with_skipped
    from mtmoe.pipeline.paths import Paths

    paths = Paths(data_root="", work_dir=os.path.abspath(args.work_dir))
    runs = recorded_runs(paths)
    if runs is None and os.path.isfile(paths.metadata):
        print(f"note: no {RUNS_FILE} in {paths.work_dir} (its runs are older): reading ML Metadata "
              "instead, which takes a while; the next `mtmoe run` writes it", file=sys.stderr)
        from mtmoe.core.config import load_config
        from mtmoe.pipeline.local_runner import history_row, pipeline_runs

        config = load_config(args.config)
        runs = [history_row(record, config) for record in pipeline_runs(paths, config.pipeline.name)]
    rows = with_skipped(paths, runs or [])
    if not rows:
        raise UserError(f"{paths.work_dir}: no pipeline run recorded; `mtmoe run` records one")
    print("\n".join(format_history(rows)))


def _predict(args) -> None:
    if args.server:
        from mtmoe.serving.client import client_for

        if args.server.startswith("grpc://"):  # TF Serving's gRPC messages import TensorFlow
            _load_tensorflow_quietly()
        rows = client_for(args.server, args.model_name).predict(args.texts)
    else:
        from mtmoe.serving.predict import Predictor, resolve_model_dir

        model_dir = resolve_model_dir(args.model or os.path.join(DEFAULT_WORK_DIR, "serving_model"))
        _load_tensorflow_quietly()
        rows = Predictor(model_dir).predict(args.texts)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))


def _versions(args) -> None:
    """The versions in a serving folder (the newest is the one TF Serving and `mtmoe serve` load),
    or those a model server reports with their state."""
    if args.server:
        from mtmoe.serving.client import client_for

        client = client_for(args.server, args.model_name)
        if not hasattr(client, "status"):
            raise UserError(f"{args.server}: versions are read over REST: give http://host:port")
        for status in client.status().get("model_version_status", []):
            print(f"version {status['version']}: {status['state']}")
        return
    import datetime

    from mtmoe.serving.predict import version_numbers

    folder = os.path.abspath(args.serving_dir)
    versions = version_numbers(folder)
    if not versions:
        raise UserError(f"{folder}: no model versions; `mtmoe run` pushes one when a model is blessed")
    for version in versions:
        pushed = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(folder, str(version))),
                                                 datetime.timezone.utc)
        mark = "  serving (the newest: TF Serving and `mtmoe serve` load it)" if (
            version == versions[-1]) else ""
        print(f"version {version}  pushed {pushed:%Y-%m-%d %H:%M} UTC{mark}")


def _serve(args) -> None:
    from mtmoe.pipeline.paths import Paths

    serving_dir = os.path.abspath(args.serving_dir)
    if not os.path.isdir(serving_dir):
        raise UserError(f"{serving_dir}: no serving folder; run `mtmoe run` first")
    from mtmoe.serving.deploy import BATCHING_CONFIG_FILE
    batching = args.batching_config
    if batching is None:  # the file the pipeline writes beside the serving folder, if there
        work_dir = Paths(data_root="", work_dir=os.path.dirname(serving_dir))
        beside = os.path.join(work_dir.serving_config_dir, BATCHING_CONFIG_FILE)
        batching = beside if os.path.isfile(beside) else None
    elif not os.path.isfile(batching):
        raise UserError(f"{batching}: batching config not found")
    _load_tensorflow_quietly()
    from mtmoe.serving.server import serve

    request_log = None
    if args.log_requests:
        from mtmoe.serving.request_log import RequestLog

        request_log = RequestLog(args.log_requests, args.log_sample, keep_days=args.log_keep_days,
                                 mask_digits=args.log_mask_digits,
                                 warn=lambda line: print(f"warning: {line}", file=sys.stderr,
                                                         flush=True))
    try:
        serve(serving_dir, args.model_name, args.host, args.port, args.grpc_port, args.poll_seconds,
              batching, args.max_request_bytes, args.max_instances,  # None: the server's limits
              request_log=request_log)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def _monitor(args) -> int:
    """One line per drift finding; the exit status says whether there was one."""
    from mtmoe.serving.monitor import DRIFTED, enough_texts, monitor

    texts = enough_texts(args.requests, args.min_texts)  # before TensorFlow loads
    _load_tensorflow_quietly()
    findings, reference = monitor(texts, args.serving_dir, args.data)
    print(f"compared {len(texts)} logged texts with {reference} eval texts of {args.data}")
    for finding in findings:
        print(f"drift: {finding}")
    if not findings:
        print("no drift: every compared distribution is within its limit")
    return DRIFTED if findings else 0


def _export_check(args) -> None:
    from mtmoe.serving.predict import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    _load_tensorflow_quietly()
    from mtmoe.serving.compat import TF_TEXT_VERSION, graph_ops, unsupported_ops

    missing = unsupported_ops(model_dir)
    if missing:
        raise UserError(f"{model_dir}: op(s) the stock TF Serving image lacks (neither core "
                        f"TensorFlow nor tensorflow-text {TF_TEXT_VERSION}): {', '.join(missing)}")
    print(f"{model_dir}: all {len(graph_ops(model_dir))} op types are core TensorFlow or "
          f"tensorflow-text {TF_TEXT_VERSION} ops")


def _sample(args) -> None:
    from mtmoe.core.sample import write_sample

    counts = write_sample(args.out, args.num_examples, args.seed)
    print(f"wrote {counts} examples as JSONL to {args.out}")


def _draft(args) -> None:
    """A labelling draft of the logged texts: the served answers as labels, split for a span."""
    import random
    import tempfile

    from mtmoe.core.config import load_config
    from mtmoe.core.formats import SPLITS
    from mtmoe.core.tasks import draft_example
    from mtmoe.serving.request_log import logged_requests

    config = load_config(args.config)
    if os.path.exists(args.out) and os.listdir(args.out):
        raise UserError(f"{args.out}: exists and is not empty; give a new folder")
    latest, answered = {}, set()
    for _, row in logged_requests(args.requests):
        if row["text"].strip():  # a text is one example, with its latest answer
            latest[row["text"]] = row
            answered.update(name for name, value in row.items() if isinstance(value, dict))
    unanswered = [task.name for task in config.tasks if task.name not in answered]
    if latest and unanswered:
        raise UserError(f"{args.requests}: no logged answer for task(s) {', '.join(unanswered)} "
                        f"of the config; the log answers {', '.join(sorted(answered)) or 'none'} "
                        "(give the config of the served model: --config)")
    examples = [draft_example(row, config.tasks, config.text.max_tokens)
                for row in latest.values()]
    held_out = max(1, round(len(examples) * args.held_out))
    if len(examples) < 2 * held_out + 1:
        raise UserError(f"{args.requests}: {len(examples)} distinct logged texts; a draft needs "
                        f"at least {2 * held_out + 1} (train, eval and test)")
    random.Random(args.seed).shuffle(examples)
    splits = dict(zip(SPLITS, (examples[2 * held_out:], examples[:held_out],
                               examples[held_out:2 * held_out])))
    parent = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".draft-", dir=parent)  # the folder appears whole
    try:
        for split, rows in splits.items():
            with open(os.path.join(staging, f"{split}.jsonl"), "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
        if os.path.exists(args.out):
            os.rmdir(args.out)
        os.rename(staging, args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = ", ".join(f"{len(rows)} {split}" for split, rows in splits.items())
    labelled = ", ".join(f"{task.name} {sum(task.label_field in e for e in examples)}"
                         for task in config.tasks)
    print(f"wrote {len(examples)} distinct logged texts to {args.out} ({counts}); labelled with "
          f"the served model's answers: {labelled}. Correct the labels, then `mtmoe data convert "
          f"--format jsonl {args.out} DATA_ROOT --config {args.config or 'CONFIG'}` makes them a "
          "span")


def _convert(args) -> None:
    from mtmoe.core.config import load_config
    from mtmoe.core.formats import (SPLITS, BioCheck, RecordsFingerprint, read_splits,
                                    span_with_source, write_span)

    config = load_config(args.config)
    tasks, max_tokens = config.tasks, config.text.max_tokens
    bio = {split: BioCheck(args.bio) for split in SPLITS}
    longer = dict.fromkeys(SPLITS, 0)

    def measured(split, records):
        """Counts the examples that Transform will cut to max_tokens; the span keeps them whole."""
        for record in records:
            longer[split] += len(record["text"].split()) > max_tokens
            yield record

    def splits(bio):
        return read_splits(args.format, args.input, [t.label_field for t in tasks],
                           [t.label_field for t in tasks if t.type == TOKEN_TAGGING],
                           label_field=args.label_field, tags_field=args.tags_field, bio=bio,
                           single_label_fields=[t.label_field for t in tasks
                                                if t.type == CLASSIFICATION])

    # A first pass reads and checks every record, so that bad data stops the command before
    # TensorFlow loads (write_span) and before anything is written.
    fingerprint = RecordsFingerprint()
    out_of_scope = {t.label_field: t for t in tasks if t.out_of_scope_label}
    seen = set()

    def watched(records):
        """The training records, noting which out-of-scope labels occur."""
        for record in records:
            seen.update(field for field, task in out_of_scope.items()
                        if record.get(field) == task.out_of_scope_label)
            yield record

    for split, records in splits({split: BioCheck(args.bio) for split in SPLITS}).items():
        fingerprint.add(split, watched(records) if split == "train" else records)
    for field in sorted(set(out_of_scope) - seen):
        task = out_of_scope[field]
        raise UserError(f"{args.input}: task {task.name}: out_of_scope_label "
                        f"{task.out_of_scope_label!r} never occurs in the training split (is it "
                        "spelled as in the data?)")
    twin = span_with_source(args.output, fingerprint.hexdigest())
    if twin and not args.allow_duplicate:
        raise UserError(f"{args.input}: the same examples as {args.output}/span-{twin}; each convert "
                        "adds a span, so the pipeline would train on them twice (convert new data, or "
                        "pass --allow-duplicate)")
    _load_tensorflow_quietly()
    path, counts = write_span({s: measured(s, r) for s, r in splits(bio).items()}, args.output,
                              args.span, fingerprint.hexdigest())
    print(f"wrote {counts} examples to {path}")
    for split in SPLITS:
        if args.bio == "fix":
            print(f"{split}: fixed {bio[split].fixed} BIO tags (an I-x that opened a span is now B-x)")
        if longer[split]:
            print(f"{split}: {longer[split]} of {counts[split]} examples have more than {max_tokens} "
                  f"tokens; the pipeline keeps the first {max_tokens} (text.max_tokens)")


def _schema_update(args) -> None:
    from mtmoe.core.config import load_config
    from mtmoe.core.formats import check_latest_span, existing_spans

    config = load_config(args.config)
    data_root = os.path.abspath(args.data)
    spans = existing_spans(data_root)
    if args.span and args.span not in spans:
        raise UserError(f"{data_root}: no span-{args.span} (spans there: {spans or 'none'})")
    span_dir = os.path.join(data_root, f"span-{args.span}") if args.span else \
        check_latest_span(data_root, config.tasks)
    _load_tensorflow_quietly()
    from mtmoe.components.data_validation import update_schema

    lines = update_schema(config.validation.schema, span_dir, [t.label_field for t in config.tasks])
    print(f"wrote {config.validation.schema} from {span_dir}:")
    print("\n".join(f"  {line}" for line in lines))


def _init(args) -> None:
    from mtmoe.init_config import write_config

    with _CommandLog(verbose=False).capturing():  # TensorFlow's start-up lines: nowhere
        lines = write_config(args.format, args.data, args.out, args.label_field, args.tags_field,
                             args.out_of_scope)
    print("\n".join(lines))
    print(f"next: mtmoe data convert --format {args.format} {args.data} DATA --config {args.out}\n"
          f"      mtmoe run --config {args.out} --data DATA")


def _schedule(args) -> None:
    from mtmoe.core.schedule import cron_marker, crontab_line, install_crontab

    line = crontab_line(args.every, args.at, args.work_dir, args.config, args.data)
    print(line)
    if args.install:
        replaced = install_crontab(line, cron_marker(args.work_dir))
        print("installed in the crontab" + (", in place of the entry for this work dir" if replaced
                                            else ""))


def _compile(args) -> None:
    from mtmoe.pipeline.orchestrators import compile_kubeflow_v2, location, write_airflow_dag

    work_dir = location(args.work_dir)
    data_root = location(args.data) if args.data else os.path.join(work_dir, "data")
    config = os.path.abspath(args.config) if args.config else None
    output = os.path.abspath(args.output)
    if args.target == "kubeflow-v2":
        import tensorflow as tf

        try:
            tasks = compile_kubeflow_v2(config, data_root, work_dir, output, args.image)
        except tf.errors.OpError as e:  # e.g. a gs:// work dir without network or credentials
            raise UserError(f"{work_dir}: compiling keeps the curated schema under the work dir, "
                            f"and it could not be written there: {e.message.splitlines()[0]}") from None
        print(f"wrote {output}\ncomponents: {', '.join(tasks)}")
    else:
        write_airflow_dag(config, data_root, work_dir, output, args.every)
        print(f"wrote {output}")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`mtmoe run: error: ...`, exit 2) instead of the usage
    text and the error; the subcommands' parsers are of the same class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def _number(kind=int, low=None, high=None):
    """An argparse type: `kind` within [low, high], with a one-line reason when not."""
    name = "an integer" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"expected {name} {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


PORT = _number(int, 1, 65535)
WORK_DIR_HELP = f"the pipeline's work dir: runs, models, logs (default: {DEFAULT_WORK_DIR})"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtmoe")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from mtmoe.core.formats import BIO_MODES, FORMATS
    from mtmoe.core.schedule import DEFAULT_AT, EVERY
    from mtmoe.pipeline.orchestrators import DEFAULT_IMAGE, TARGETS

    parser = _Parser(prog="mtmoe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mtmoe {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the TFX pipeline: train, evaluate, push (exit 4 "
                                          "when the serving model decayed and nothing replaced it)")
    run.add_argument("--config", help="task config YAML (default: the packaged banking config)")
    run.add_argument("--data", help="data root holding span-<N>/ folders (default: generate the sample)")
    run.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=WORK_DIR_HELP)
    run.add_argument("--epochs", type=_number(int, 1), help="override training.epochs")
    run.add_argument("--allow-anomalies", action="store_true", help=ALLOW_ANOMALIES_HELP)
    run.add_argument("--verbose", action="store_true",
                     help="show TensorFlow's, Beam's and TFX's output here instead of in the log")
    run.add_argument("--force", action="store_true",
                     help="train even when the spans, config and code are those of the serving "
                          "model, or when schedule.retrain on_decay finds that it still holds")
    run.set_defaults(handler=_run)

    tune = commands.add_parser("tune", help="run the pipeline up to the Tuner; print its trials")
    tune.add_argument("--config", help="task config YAML (its tuning section sets the search)")
    tune.add_argument("--data", help="data root holding span-<N>/ folders (default: generate the sample)")
    tune.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=WORK_DIR_HELP)
    tune.add_argument("--compare", action="store_true",
                      help="also train with equal weights and with uncertainty weighting, as long "
                           "as one trial, and add them to the table")
    tune.add_argument("--allow-anomalies", action="store_true", help=ALLOW_ANOMALIES_HELP)
    tune.add_argument("--verbose", action="store_true",
                      help="show TensorFlow's, Beam's and TFX's output here instead of in the log")
    tune.set_defaults(handler=_tune)

    worker = commands.add_parser(
        "train-worker", help="join a multi-worker training as a worker other than the chief "
        "(TF_CONFIG names this process's task; the chief runs `mtmoe run`)")
    worker.add_argument("--config", help="the chief's config (training.distribution: multi_worker)")
    worker.add_argument("--work-dir", default=DEFAULT_WORK_DIR,
                        help="the chief's work dir, shared with this host")
    worker.add_argument("--wait", type=_number(float, 0), default=3600.0,
                        help="seconds to wait for the chief's Trainer to start (default 3600)")
    worker.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's output here instead of in the log")
    worker.set_defaults(handler=_train_worker)

    report = commands.add_parser("report", help="print the path and headline of a run's report")
    report.add_argument("run_id", nargs="?", metavar="RUN_ID", help="default: the latest run")
    report.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=WORK_DIR_HELP)
    report.set_defaults(handler=_report)

    history = commands.add_parser("history", help="one line per run: spans, metrics, blessed, "
                                                  "pushed version (from the runs' runs.jsonl)")
    history.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=WORK_DIR_HELP)
    history.add_argument("--config", help="only for a work dir whose runs predate runs.jsonl: the "
                                          "runs' config (its pipeline name and tasks)")
    history.set_defaults(handler=_history)

    predict = commands.add_parser("predict", help="predict every task for each text")
    predict.add_argument("--model", help="SavedModel or serving folder "
                                         f"(default: {DEFAULT_WORK_DIR}/serving_model)")
    predict.add_argument("--server", help="ask a model server instead: http://host:port (REST) "
                                          "or grpc://host:port")
    predict.add_argument("--model-name", default=SERVED_MODEL_NAME,
                         help=f"the server's model name (default: {SERVED_MODEL_NAME})")
    predict.add_argument("texts", nargs="+", metavar="TEXT", help="texts to predict, one argument each")
    predict.set_defaults(handler=_predict)

    serve = commands.add_parser("serve", help="a local endpoint with TF Serving's REST and gRPC API")
    serve.add_argument("--serving-dir", default=os.path.join(DEFAULT_WORK_DIR, "serving_model"),
                       help="the Pusher's folder of numbered versions; the newest is served "
                            f"(default: {DEFAULT_WORK_DIR}/serving_model)")
    serve.add_argument("--model-name", default=SERVED_MODEL_NAME,
                       help=f"the name in request paths, /v1/models/NAME (default: {SERVED_MODEL_NAME})")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=PORT, default=8501, help="REST port (default: 8501)")
    serve.add_argument("--grpc-port", type=PORT, default=8500, help="gRPC port (default: 8500)")
    serve.add_argument("--poll-seconds", type=_number(float, 0.1), default=2.0,
                       help="how often to look for a new version (default: 2)")
    serve.add_argument("--batching-config", metavar="FILE",
                       help="TF Serving BatchingParameters text proto (default: the pipeline's "
                            "serving_config/batching.config beside the serving folder)")
    serve.add_argument("--max-request-bytes", type=_number(int, 1),
                       help="larger request bodies get 413 (default: 4 MiB)")
    serve.add_argument("--log-requests", metavar="DIR",
                       help="append a sample of the answered texts, with their answers, to "
                            "rotating JSONL files in DIR (owner-only; customer data: see "
                            "docs/serving.md); never delays or fails a request")
    serve.add_argument("--log-sample", type=_number(float, 0.0001, 1), default=1.0, metavar="RATE",
                       help="share of the texts logged, 0.0001-1 (default: 1)")
    serve.add_argument("--log-keep-days", type=_number(float, 0.001), default=30.0, metavar="DAYS",
                       help="delete log files older than this (default: 30)")
    serve.add_argument("--log-mask-digits", action="store_true",
                       help="write every digit of a logged text as # (account, card numbers)")
    serve.add_argument("--max-instances", type=_number(int, 1),
                       help="requests with more texts get 400 (default: 1024)")
    serve.set_defaults(handler=_serve)

    versions = commands.add_parser("versions", help="list the pushed model versions and which one "
                                                    "serves (or ask a server with --server)")
    versions.add_argument("--serving-dir", default=os.path.join(DEFAULT_WORK_DIR, "serving_model"),
                          help=f"the Pusher's folder (default: {DEFAULT_WORK_DIR}/serving_model)")
    versions.add_argument("--server", help="ask a model server instead: http://host:port (REST)")
    versions.add_argument("--model-name", default=SERVED_MODEL_NAME,
                          help=f"the server's model name (default: {SERVED_MODEL_NAME})")
    versions.set_defaults(handler=_versions)

    watch = commands.add_parser(
        "monitor", help="compare logged requests with the model's eval data (exit 3 on drift)",
        description="Compares the texts `mtmoe serve --log-requests` logged with the eval split "
                    "of the model's spans, both scored by the served model, with TFDV's drift "
                    "checks: text length, the share of unknown tokens, and each classification "
                    "task's predicted label, confidence and in-scope answer. Prints one line per "
                    "finding; exits 0 when every distribution is within its limit, 3 when "
                    "something drifted, 2 on a bad or too small log.")
    watch.add_argument("--requests", required=True, metavar="DIR", help="the request log folder")
    watch.add_argument("--serving-dir", default=os.path.join(DEFAULT_WORK_DIR, "serving_model"),
                       help=f"the served model (default: {DEFAULT_WORK_DIR}/serving_model)")
    watch.add_argument("--data", required=True, metavar="ROOT",
                       help="the data root the model trained on (span-<N>/ folders)")
    watch.add_argument("--min-texts", type=_number(int, 1), default=200,
                       help="refuse to compare fewer logged texts (default: 200)")
    watch.set_defaults(handler=_monitor)

    check = commands.add_parser("export-check", help="check that the stock TF Serving image can "
                                                     "load a SavedModel (its ops)")
    check.add_argument("model", metavar="DIR", help="SavedModel or serving folder")
    check.set_defaults(handler=_export_check)

    schedule = commands.add_parser(
        "schedule", help="print (or --install) a crontab line that runs `mtmoe run` on a schedule",
        description="Prints a crontab line that runs `mtmoe run` with absolute paths, appending its "
                    "output to <work dir>/logs/cron.log. A run that starts while the previous one "
                    "still holds the work dir's lock exits 2 at once, so runs never overlap.")
    schedule.add_argument("--every", required=True, choices=EVERY, help="how often to run")
    schedule.add_argument("--at", default=DEFAULT_AT, metavar="HH:MM",
                          help="time of day (hour: only the minute counts; week: Mondays); "
                               f"default {DEFAULT_AT}")
    schedule.add_argument("--config", help="task config YAML (default: the packaged banking config)")
    schedule.add_argument("--data", help="data root holding span-<N>/ folders (default: the sample)")
    schedule.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help=WORK_DIR_HELP)
    schedule.add_argument("--install", action="store_true",
                          help="add the line to your crontab, replacing this work dir's earlier one")
    schedule.set_defaults(handler=_schedule)

    schema = commands.add_parser("schema", help="the curated schema a new span is validated "
                                 "against").add_subparsers(dest="schema_command", required=True)
    update = schema.add_parser(
        "update", help="infer the schema from a span and write it over the config's schema file",
        description="Computes TFDV statistics over every split of the newest span (or --span) and "
                    "writes the config's validation.schema: the text required, each label field's "
                    "domain of values, TFDV's presence and value counts. Run it on purpose when the "
                    "data changes for good (a new intent, a new tag); review and commit the file.")
    update.add_argument("--config", help="task config YAML (default: the packaged banking config)")
    update.add_argument("--data", required=True, help="data root holding span-<N>/ folders")
    update.add_argument("--span", type=_number(int, 0), default=0,
                        help="span number (default: the newest)")
    update.set_defaults(handler=_schema_update)

    compiled = commands.add_parser(
        "compile", help="write the pipeline for Kubeflow Pipelines v2 / Vertex AI or Airflow")
    compiled.add_argument("--target", required=True, choices=TARGETS, help="the orchestrator")
    compiled.add_argument("--output", required=True, metavar="FILE",
                          help="kubeflow-v2: .json (a PipelineJob) or .yaml; airflow: a .py module")
    compiled.add_argument("--config", help="task config YAML (kubeflow-v2: spans.window 0 or 1)")
    compiled.add_argument("--data", help="data root holding span-<N>/ folders, a path or gs:// URI "
                                         "(default: <work dir>/data)")
    compiled.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="a path or gs:// URI")
    compiled.add_argument("--image", default=DEFAULT_IMAGE,
                          help="kubeflow-v2: the components' container image; it must have this "
                               "project installed")
    compiled.add_argument("--every", choices=EVERY, default="day", help="airflow: the DAG's schedule")
    compiled.set_defaults(handler=_compile)

    init = commands.add_parser(
        "init", help="write a starting config (and its schema) read off a dataset",
        description="Reads a dataset and writes a config: one task per label field, its type "
                    "inferred from the values (one string: classification; a BIO tag per token: "
                    "token tagging; any other list: multilabel), what the data decides (text "
                    "length, the spelling encoder, epochs, blessing thresholds over the no-skill "
                    "score on eval, how each classification task answers out of scope), every "
                    "other model and training field with its default, and "
                    "the curated schema beside it. Prints what it inferred and why; the config "
                    "says it in comments.")
    init.add_argument("--data", required=True, metavar="IN", help="folder with train / dev|eval / "
                                                                  "test data")
    init.add_argument("--format", required=True, choices=FORMATS, help="the input's format")
    init.add_argument("--out", default="mtmoe.yaml", metavar="CONFIG",
                      help="config to write (default: mtmoe.yaml); never overwritten")
    init.add_argument("--label-field", default="intent", help="slu: field for the sentence label")
    init.add_argument("--tags-field", default="slots", help="slu / conll: field for the tags")
    init.add_argument("--out-of-scope", default="", metavar="LABEL",
                      help="the label value of texts outside a classification task's classes "
                           "(default: a value named oos, out_of_scope or out-of-scope, if any)")
    init.set_defaults(handler=_init)

    data = commands.add_parser("data", help="make or convert input data").add_subparsers(
        dest="data_command", required=True)
    sample = data.add_parser("sample", help="write the banking sample as JSONL")
    sample.add_argument("--out", required=True, help="folder for train / eval / test .jsonl")
    sample.add_argument("--num-examples", type=_number(int, 3), default=3000,
                        help="examples over the three splits (default: 3000)")
    sample.add_argument("--seed", type=int, default=13, help="random seed of the generator (default: 13)")
    sample.set_defaults(handler=_sample)

    draft = data.add_parser(
        "draft", help="logged requests as JSONL to label, the served answers as draft labels",
        description="Writes the distinct texts `mtmoe serve --log-requests` logged to OUT/{train,"
                    "eval,test}.jsonl, each labelled with the served model's answer for every task "
                    "of the config (out-of-scope answers as the task's out-of-scope label; token "
                    "tags with the model's tokens). The labels are the model's, not the truth: "
                    "correct them, then `mtmoe data convert --format jsonl` makes them a new span.")
    draft.add_argument("--requests", required=True, metavar="DIR", help="the request log folder")
    draft.add_argument("--out", required=True, help="a new folder for train / eval / test .jsonl")
    draft.add_argument("--config", help="the config whose tasks' label fields are written "
                                        "(default: the packaged banking config)")
    draft.add_argument("--held-out", type=_number(float, 0.01, 0.3), default=0.1, metavar="SHARE",
                       help="share of the texts in each of eval and test (default: 0.1)")
    draft.add_argument("--seed", type=int, default=13, help="seed of the split (default: 13)")
    draft.set_defaults(handler=_draft)

    convert = data.add_parser(
        "convert", help="convert a dataset into a new span of TFRecords",
        description="Converts IN into OUT/span-<N>/{train,eval,test}/ tf.Example TFRecords; the span "
                    "appears whole or not at all. Bad input stops it with one line naming what to fix "
                    "(file, line, field), exit code 2 and no span: tags that do not match the tokens, "
                    "tags that are not O, B-<type> or I-<type>, invalid BIO (see --bio), non-UTF-8 "
                    "bytes, JSON that does not parse or is not an object, unknown or mistyped label "
                    "fields, empty text, a missing split, an existing span. It then reports per "
                    "split how many examples have more tokens than the config's text.max_tokens: "
                    "they are written whole, and the pipeline keeps their first max_tokens tokens.")
    convert.add_argument("--format", required=True, choices=FORMATS, help="the input's format")
    convert.add_argument("input", metavar="IN", help="folder with train / dev|eval / test data")
    convert.add_argument("output", metavar="OUT", help="data root; the span-<N> folder goes inside")
    convert.add_argument("--span", type=_number(int, 0), default=0,
                         help="span number (default: the next one)")
    convert.add_argument("--config", help="config whose label fields the JSONL may hold and whose "
                                          "text.max_tokens the length report uses (default: the "
                                          "packaged banking config)")
    convert.add_argument("--bio", choices=BIO_MODES, default="reject",
                         help="an I-x tag that opens a span (first, after O or after another type): "
                              "reject stops at it (default); fix rewrites it to B-x, as conlleval "
                              "reads it, and reports how many it fixed per split")
    convert.add_argument("--label-field", default="intent", help="slu: field for the sentence label")
    convert.add_argument("--tags-field", default="slots", help="slu / conll: field for the tags")
    convert.add_argument("--allow-duplicate", action="store_true",
                         help="write the span even when a span of the same examples exists")
    convert.set_defaults(handler=_convert)
    return parser


def main(argv=None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader went away (`mtmoe history | head -3`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 1


def _main(argv) -> int:
    # Python 3.10 end-of-support notices from google-api-core, here and in every Beam worker process.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return status or 0  # a handler's own non-zero status (monitor's drift) or 0


if __name__ == "__main__":
    sys.exit(main())
