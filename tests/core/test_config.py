import pytest

from mtmoe.core.config import Config, load_config
from mtmoe.core.errors import UserError


def _write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_default_config_declares_every_task_type():
    config = load_config()
    assert {t.type for t in config.tasks} == {"classification", "multilabel", "token_tagging"}
    assert all(t.loss_weight > 0 for t in config.tasks)


def test_round_trip_through_custom_config_dict():
    config = load_config()
    assert Config.from_dict(config.to_dict()) == config


def test_epochs_override_keeps_everything_else():
    config = load_config()
    changed = config.with_overrides(epochs=1)
    assert changed.training.epochs == 1
    assert changed.tasks == config.tasks and changed.model == config.model


def test_unknown_task_type_names_field_and_known_types(tmp_path):
    path = _write(tmp_path, "tasks:\n  - {name: a, type: regression, label_field: a}\n")
    with pytest.raises(UserError, match=r"config\.yaml: tasks\[0\]\.type: Input should be "
                                        r"'classification', 'multilabel' or 'token_tagging', "
                                        r"got 'regression'$"):
        load_config(path)


def test_missing_label_field_is_reported(tmp_path):
    path = _write(tmp_path, "tasks:\n  - {name: a, type: classification}\n")
    with pytest.raises(UserError, match=r"config\.yaml: tasks\[0\]\.label_field: missing field$"):
        load_config(path)


def test_a_missing_field_names_the_unknown_one_beside_it(tmp_path):
    path = _write(tmp_path, "tasks:\n  - {name: a, type: classification, label_feild: a}\n")
    with pytest.raises(UserError, match=r"tasks\[0\]\.label_field: missing field \(beside it, "
                                        r"unknown: label_feild\)$"):
        load_config(path)


def test_a_bad_override_names_the_field():
    with pytest.raises(UserError, match=r"default\.yaml, as overridden: training\.epochs: Input "
                                        r"should be greater than or equal to 1, got 0$"):
        load_config().with_overrides(epochs=0)


def test_unknown_key_and_wrong_type_are_reported(tmp_path):
    with pytest.raises(UserError, match=r"tasks\[0\]\.weight: unknown field; known: name, type, label_field, "):
        load_config(_write(tmp_path, "tasks:\n  - {name: a, type: multilabel, label_field: a, "
                                     "weight: 2}\n"))
    with pytest.raises(UserError, match=r"training\.epochs: Input should be a valid integer, got 'many'"):
        load_config(_write(tmp_path, "tasks:\n  - {name: a, type: multilabel, label_field: a}\n"
                                     "training: {epochs: many}\n"))


def test_duplicate_and_reserved_names_are_rejected(tmp_path):
    with pytest.raises(UserError, match="duplicate name a"):
        load_config(_write(tmp_path, "tasks:\n  - {name: a, type: multilabel, label_field: x}\n"
                                     "  - {name: a, type: multilabel, label_field: y}\n"))
    with pytest.raises(UserError, match="'tokens' is reserved"):
        load_config(_write(tmp_path, "tasks:\n  - {name: tokens, type: multilabel, label_field: x}\n"))


def test_invalid_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "tasks:\n  - name: a\n    type: [unclosed\n")
    with pytest.raises(UserError, match=r"config\.yaml:\d+: config is not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_length_buckets_must_increase(tmp_path):
    tasks = "tasks:\n  - {name: a, type: multilabel, label_field: a}\n"
    assert load_config(_write(tmp_path, tasks + "evaluation: {length_buckets: [4, 8]}\n")
                       ).evaluation.length_buckets == (4, 8)
    with pytest.raises(UserError, match=r"evaluation\.length_buckets: expected increasing positive"):
        load_config(_write(tmp_path, tasks + "evaluation: {length_buckets: [8, 4]}\n"))
    with pytest.raises(UserError, match=r"evaluation\.length_buckets\[0\]: Input should be greater "
                                        r"than or equal to 1, got 0"):
        load_config(_write(tmp_path, tasks + "evaluation: {length_buckets: [0, 2]}\n"))
    with pytest.raises(UserError, match=r"evaluation\.length_buckets\[1\]: Input should be a valid "
                                        r"integer, got 2\.5"):
        load_config(_write(tmp_path, tasks + "evaluation: {length_buckets: [1, 2.5]}\n"))


def test_tuning_section_is_checked(tmp_path):
    tasks = "tasks:\n  - {name: a, type: multilabel, label_field: a}\n"
    config = load_config(_write(tmp_path, tasks + "tuning: {enabled: true, objective_weights: {a: 2}}\n"))
    assert config.tuning.enabled and config.tuning.objective_weights == {"a": 2}
    for section, message in [
        ("{algorithm: grid}", r"tuning\.algorithm: Input should be 'bayesian', 'hyperband' or 'random', got 'grid'"),
        ("{loss_weight_range: [5, 1]}", r"tuning\.loss_weight_range: expected \[low, high\]"),
        ("{top_k_choices: [1, 2.5]}", r"tuning\.top_k_choices\[1\]: Input should be a valid integer, got 2\.5"),
        ("{objective_weights: {b: 1}}", r"tuning\.objective_weights: 'b': expected a task name"),
    ]:
        with pytest.raises(UserError, match=message):
            load_config(_write(tmp_path, tasks + f"tuning: {section}\n"))
    with pytest.raises(UserError, match=r"training\.loss_weighting: Input should be 'fixed' or 'uncertainty'"):
        load_config(_write(tmp_path, tasks + "training: {loss_weighting: learned}\n"))
    with pytest.raises(UserError, match=r"training\.learning_rate_schedule: Input should be 'constant' or 'cosine'"):
        load_config(_write(tmp_path, tasks + "training: {learning_rate_schedule: linear}\n"))


def test_model_selection_and_regularisation_options_are_checked(tmp_path):
    tasks = "tasks:\n  - {name: a, type: token_tagging, label_field: a}\n"
    config = load_config(_write(tmp_path, tasks + "training: {patience: 3, word_dropout: 0.5, "
                                                  "tagging_loss: token_mean}\n"))
    assert (config.training.patience, config.training.word_dropout,
            config.training.tagging_loss) == (3, 0.5, "token_mean")
    for section, message in [
        ("{patience: -1}", r"training\.patience: Input should be greater than or equal to 0, got -1"),
        ("{word_dropout: 1.0}", r"training\.word_dropout: Input should be less than 1, got 1\.0"),
        ("{tagging_loss: sum}", r"training\.tagging_loss: Input should be 'example_mean' or 'token_mean', got 'sum'"),
    ]:
        with pytest.raises(UserError, match=message):
            load_config(_write(tmp_path, tasks + f"training: {section}\n"))


def test_the_schema_lives_beside_its_config(tmp_path):
    task = "tasks:\n  - {name: a, type: classification, label_field: a}\n"
    assert load_config(_write(tmp_path, task)).validation.schema == str(tmp_path / "config.schema.pbtxt")
    named = load_config(_write(tmp_path, task + "validation: {schema: schemas/bank.pbtxt}\n"))
    assert named.validation.schema == str(tmp_path / "schemas" / "bank.pbtxt")
    packaged = load_config().validation.schema
    assert packaged.endswith("mtmoe/configs/default.schema.pbtxt") and open(packaged).read()
    with pytest.raises(UserError, match=r"validation\.max_label_drift: Input should be less than or "
                                        r"equal to 1, got 1\.5"):
        load_config(_write(tmp_path, task + "validation: {max_label_drift: 1.5}\n"))


def test_out_of_scope_settings_belong_to_classification_tasks_and_thresholds_to_0_1(tmp_path):
    config = load_config(_write(tmp_path, "tasks:\n  - {name: a, type: classification, label_field: a, "
                                          "out_of_scope_label: oos, reject_below: auto}\n"))
    assert config.tasks[0].answers_out_of_scope
    assert load_config(_write(tmp_path, "tasks:\n  - {name: a, type: classification, "
                                        "label_field: a, reject_below: 0.4}\n")).tasks[0].reject_below == 0.4
    for task, message in [
        ("{name: a, type: token_tagging, label_field: a, reject_below: 0.5}",
         r"config\.yaml: tasks\[0\]\.reject_below: only a classification task answers out of scope "
         r"\(this one is token_tagging\)$"),
        ("{name: a, type: multilabel, label_field: a, out_of_scope_label: none}",
         r"tasks\[0\]\.out_of_scope_label: only a classification task"),
        ("{name: a, type: classification, label_field: a, reject_below: 1.5}",
         r"tasks\[0\]\.reject_below: expected a number in \[0, 1\], auto or off, got 1\.5$"),
        ("{name: a, type: classification, label_field: a, reject_below: sometimes}",
         r"tasks\[0\]\.reject_below: expected a number in \[0, 1\], auto or off, got 'sometimes'$"),
    ]:
        with pytest.raises(UserError, match=message):
            load_config(_write(tmp_path, f"tasks:\n  - {task}\n"))


def test_on_decay_needs_a_limit_the_serving_model_could_fail(tmp_path):
    task = "{name: a, type: classification, label_field: a%s}"
    schedule = "schedule: {retrain: on_decay, min_examples: 50}\n"
    with pytest.raises(UserError, match=r"config\.yaml: schedule\.retrain is on_decay, but no task "
                                        r"sets a limit .*: set tasks\[i\]\.min_value or "
                                        r"tasks\[i\]\.max_drop$"):
        load_config(_write(tmp_path, f"tasks:\n  - {task % ''}\n{schedule}"))
    config = load_config(_write(tmp_path, f"tasks:\n  - {task % ', max_drop: 0.05'}\n{schedule}"))
    assert (config.schedule.retrain, config.schedule.min_examples) == ("on_decay", 50)
    with pytest.raises(UserError, match=r"schedule\.retrain: Input should be 'on_new_data' or "
                                        r"'on_decay'"):
        load_config(_write(tmp_path, f"tasks:\n  - {task % ''}\nschedule: {{retrain: weekly}}\n"))
