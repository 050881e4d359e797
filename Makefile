# `make run` trains, evaluates and pushes a model on generated sample data; `make test` runs the tests
# (`make test-fast`: unit tests only).
# Both (re)create .venv with Python 3.10 when it is missing or the lock changed.
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON310 ?= $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.10.*/bin/python3.10))),python3.10)
VENV := .venv
BIN := $(VENV)/bin
LOCK_STAMP := $(VENV)/.lock-installed
PROJECT_STAMP := $(VENV)/.project-installed

.PHONY: run docs test test-fast test-random venv clean bench bench-pipeline bench-serving bench-moe bench-snips bench-multitask bench-multi-worker bench-slot-errors bench-defaults bench-oos bench-monitor bench-decay bench-calibration-latency bench-first-run

venv: $(PROJECT_STAMP)

$(LOCK_STAMP): requirements.lock
	@$(PYTHON310) -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null || \
	  { echo "error: Python 3.10 not found (tried $(PYTHON310)); install it or pass PYTHON310=/path/to/python3.10" >&2; exit 2; }
	rm -rf $(VENV)
	$(PYTHON310) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $@

$(PROJECT_STAMP): $(LOCK_STAMP) setup.py
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(PROJECT_STAMP)
	$(BIN)/mtmoe run $(ARGS)

# Two workers (pytest-xdist), a test file to one worker: the end-to-end chain (one file, its
# scenarios in order) runs on one while the rest runs on the other. Files go out in collection
# order, which puts the end-to-end file first (tests/conftest.py), so that it starts at once;
# xdist's default order (most tests first) started it a few files in, and the suite waited for it.
test: $(PROJECT_STAMP)
	$(BIN)/python -m pytest tests -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# docs/config-reference.md from the config classes and the command reference in docs/cli.md
# from the CLI's parser (a test fails when either is out of date).
docs: $(PROJECT_STAMP)
	$(BIN)/python -m mtmoe.core.config_reference > docs/config-reference.md
	$(BIN)/python -m mtmoe.cli_reference docs/cli.md

# The edit-test loop: everything but the end-to-end pipeline runs and the tests that train, export
# or serve a model.
test-fast: $(PROJECT_STAMP)
	$(BIN)/python -m pytest tests -m "not e2e and not slow" $(PYTEST_ARGS)

# The whole suite in a shuffled order (a new seed each time; pytest prints it), to catch tests
# that pass only after others.
test-random: $(PROJECT_STAMP)
	$(BIN)/python -m pytest tests -n 2 --dist loadfile --no-loadscope-reorder --random-order $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) mtmoe_work

# Benchmarks (never part of `make test`); each writes bench/results/<name>.json.
bench: bench-pipeline bench-serving bench-multi-worker bench-moe bench-snips bench-multitask

bench-pipeline: $(PROJECT_STAMP)
	$(BIN)/python bench/pipeline_overhead.py

# The first `make run` of two commits taking turns (BASE, NEW: commits; ROUNDS, default 2).
bench-first-run: $(PROJECT_STAMP)
	bash bench/first_run_versus.sh $(BASE) $(or $(NEW),HEAD) $(or $(ROUNDS),2)

# MODEL: a serving folder or version (default: the model bench-pipeline pushed).
bench-serving: $(PROJECT_STAMP)
	$(BIN)/python bench/serving_latency.py --model $(or $(MODEL),bench/work/overhead/serving_model)

# The Trainer on 1 process and on 2 local workers, on the inputs bench-pipeline's run trained on.
bench-multi-worker: $(PROJECT_STAMP)
	$(BIN)/python bench/multi_worker.py --work-dir bench/work/overhead

bench-moe: $(PROJECT_STAMP)
	$(BIN)/python bench/moe_scaling.py

# DATA: a SNIPS-format folder ({train,dev,test}/{seq.in,seq.out,label}); ARGS passes options on
# (e.g. ARGS="--epochs 2 --seeds 42" for a reduced run).
DATA ?= ../shared/data/snips

# Then the Trainer's epoch against the plain script's, epochs interleaved, on the Transform output
# of that run (bench/results/epoch_time.json).
bench-snips: $(PROJECT_STAMP)
	$(BIN)/python bench/snips_quality.py --data $(DATA) $(ARGS)
	$(BIN)/python bench/epoch_time.py --work-dir bench/work/snips/pipeline-work --data $(DATA)

bench-multitask: $(PROJECT_STAMP)
	$(BIN)/python bench/multitask.py --data $(DATA) $(ARGS)

# Every dataset in ../shared/data (and a MixSNIPS-style set made from SNIPS): the config `mtmoe init`
# writes against the dev sweep's best, on the test split over 3 paired seeds (hours; ARGS passes
# options on, e.g. ARGS="--datasets nlupp --seeds 42").
bench-defaults: $(PROJECT_STAMP)
	$(BIN)/python bench/defaults.py $(ARGS)

# CLINC150's in-scope accuracy and out-of-scope recall, Banking77's calibration, through init's configs.
bench-oos: $(PROJECT_STAMP)
	$(BIN)/python bench/oos.py $(ARGS)

# mtmoe monitor's false alarms and drift demo, on bench-oos' Banking77 model.
bench-monitor: $(PROJECT_STAMP)
	$(BIN)/python bench/monitor.py $(ARGS)

bench-decay: $(PROJECT_STAMP)
	$(BIN)/python bench/decay.py $(ARGS)

bench-calibration-latency: $(PROJECT_STAMP)
	$(BIN)/python bench/calibration_latency.py $(ARGS)

# Span errors by entity type and kind on the dev split, for the models bench-snips pushed (seeds).
bench-slot-errors: $(PROJECT_STAMP)
	$(BIN)/python bench/slot_errors.py --split $(DATA)/dev \
	    --model $(or $(MODEL),$(wildcard bench/work/snips/pipeline-work/serving_model/*))
