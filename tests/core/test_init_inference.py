"""What `mtmoe init` reads off a dataset besides the task types: blessing thresholds over the
no-skill answer, the spelling encoder, the training length, and a config that says why."""
import json

import pytest

from mtmoe.core.config import ModelConfig, TrainingConfig, load_config
from mtmoe.init_config import (EPOCHS_RANGE, NO_SKILL_MARGIN, config_text, epochs_for, infer,
                               no_skill)


def test_no_skill_is_the_best_answer_that_ignores_the_text():
    assert no_skill("classification", ["a", "a", "b"], ["a", "b", "b", "b"]) == 0.25
    # Multi-label: the most frequent labels, as many as score best; here all three
    # ({x}: F1 4/7, {x, y}: 6/10, {x, y, z}: 8/13).
    assert no_skill("multilabel", [["x", "y"], ["x"], ["x", "z"]],
                    [["x"], ["x", "y"], ["z"]]) == pytest.approx(8 / 13)
    assert no_skill("token_tagging", [["B-a", "O"]], [["B-a", "I-a"], ["O", "B-b"]]) == 0.0
    assert no_skill("classification", ["a"], []) == 0.0  # no eval text labelled for the task


def test_epochs_give_small_datasets_more_passes_within_the_range():
    assert epochs_for(117_700) == 20  # SNIPS' training tokens: the recipe's 20 epochs
    assert epochs_for(107_373) == 22  # Banking77
    assert epochs_for(20_248) == EPOCHS_RANGE[1]  # NLU++: 116, at most 100
    assert epochs_for(10 ** 7) == EPOCHS_RANGE[0]


def _dataset(folder, eval_texts):
    folder.mkdir()
    train = [{"text": f"pay {name} now", "intent": "pay", "slots": ["O", "B-name", "O"]}
             for name in ("bob", "ann", "joe")] + [{"text": "card lost", "intent": "card",
                                                     "slots": ["O", "O"]}]
    evaluation = [{"text": text, "intent": intent, "slots": ["O"] * len(text.split())}
                  for text, intent in eval_texts]
    for split, rows in (("train", train), ("eval", evaluation), ("test", evaluation)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_the_written_config_loads_as_chosen_and_says_why_on_every_line(tmp_path):
    data = _dataset(tmp_path / "in", [("pay now", "pay"), ("card lost", "card"),
                                      ("card stolen", "card"), ("lost card", "card")])
    config, lines, reasons = infer("jsonl", str(data))
    path = tmp_path / "c.yaml"
    path.write_text(config_text(config, reasons, str(data)))
    loaded = load_config(str(path))
    intent, slots = loaded.tasks
    # Majority class of train (pay) is right on 1 of 4 eval texts; no span scores 0.
    assert intent.min_value == pytest.approx(0.25 + NO_SKILL_MARGIN * 0.75, abs=1e-3)
    assert slots.min_value == NO_SKILL_MARGIN
    assert intent.max_drop == 0.05  # 4 eval texts: the noise bound is the range's top
    assert loaded.training.epochs == EPOCHS_RANGE[1]
    assert loaded.text.max_chars == 12  # "stolen" is unseen in training
    assert any(line.startswith("training.epochs: 100 (about 2.35M token passes") for line in lines)
    text = path.read_text()
    for section in (ModelConfig, TrainingConfig):
        for name in section.__pydantic_fields__:
            line = next(line for line in text.splitlines() if line.startswith(f"  {name}: "))
            assert " # " in line, line


def test_without_unseen_eval_tokens_the_spelling_encoder_is_off(tmp_path):
    data = _dataset(tmp_path / "in", [("pay bob now", "pay"), ("card lost", "card")])
    config, _, reasons = infer("jsonl", str(data))
    assert config["text"]["max_chars"] == 0
    assert reasons["text"]["max_chars"].startswith("0.0% of eval tokens are unseen")


def test_max_tokens_cuts_no_tag_but_may_cut_a_classified_texts_tail(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"text": " ".join(["w"] * n), "intent": "a", "slots": ["O"] * n} for n in range(1, 121)]
    for split in ("train", "eval", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config, _, _ = infer("jsonl", str(folder))
    assert config["text"]["max_tokens"] == 120  # the longest: a tag past it would be lost
    for split in ("train", "eval", "test"):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": r["text"], "intent": "a"}) + "\n" for r in rows))
    config, _, _ = infer("jsonl", str(folder))
    assert config["text"]["max_tokens"] == 119  # the 99th percentile of 1..120 (118.81), rounded up
