# ablation: which augmentations reduce overfitting, measured over seeds.
# `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 5000
ARGS   ?=
EXP    ?= digits_ablation
# Jobs of a sweep at once: auto = as many as the device takes (hydra/launcher=packed), 1 = one after another.
JOBS   ?= auto
# Test processes (pytest-xdist): much of the suite's time is spent waiting (subprocesses importing TensorFlow,
# servers starting, sweeps waiting on each other), so twice as many processes as cores, up to 8, finish sooner.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(8, 2 * (os.cpu_count() or 1)))')

export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.DEFAULT_GOAL := help
.PHONY: help install run sweep report ui predict server server-stop bench bench-check bench-gpu lint test test-fast clean clean-runs

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes ablation 2>/dev/null || true  # the distribution's former name
	$(PY) -m pip install --quiet -e '.[tensorflow,dev,cluster,server]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install ablation with its dependencies (idempotent)

run: $(STAMP) ## One run with the defaults; pass overrides as ARGS="augmentation=rotate trainer.epochs=5"
	$(PY) -m ablation $(ARGS)

sweep: $(STAMP) ## Run an experiment's sweep and its report (EXP=digits_ablation: 6 policies and none, 10 seeds; JOBS=auto, the default: as many jobs at once as the device takes; JOBS=1: one by one; JOBS=2: 2 in fresh processes)
	$(PY) -m ablation -m experiment=$(EXP) $(if $(filter auto,$(JOBS)),hydra/launcher=packed,$(if $(filter-out 1,$(JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS))) $(ARGS)

report: $(STAMP) ## Rebuild an experiment's report from what MLflow holds (EXP=digits_ablation)
	$(PY) -m ablation.cli.report experiment_name=$(EXP) $(ARGS)

ui: $(STAMP) ## MLflow UI on 127.0.0.1 over the local store (PORT=5000); prints the runs-table address per experiment
	$(PY) -m ablation.cli.ui port=$(PORT) $(ARGS)

predict: $(STAMP) ## A logged model's predictions for a folder of images: ARGS="run_id=ID data=FOLDER [out=FILE.csv]"
	$(PY) -m ablation.cli.predict $(ARGS)

server: $(STAMP) ## MLflow tracking server on 127.0.0.1:5001 over PostgreSQL, kept in runs/server (tracking=server uses it)
	PY=$(PY) bash scripts/server.sh start $(ARGS)

server-stop: ## Stop the tracking server and its PostgreSQL (nothing running is fine)
	bash scripts/server.sh stop

bench: $(STAMP) ## Benchmarks side by side: input pipeline (QUICK=1: 32 and 128 px, under two minutes) -> runs/bench/pipeline.md; the lenses' cost (LENSES=1) -> runs/bench/lenses.md; per-run overhead, a sweep old vs new and packed (OVERHEAD=1) -> runs/bench/overhead.md (QUICK=1 runs every section shrunk); the report reading 1,000 runs x 60 epochs from a server, old vs new (SCALE=1, ARGS='--runs 200' smaller) -> runs/bench/report_read.md
	$(if $(LENSES)$(OVERHEAD)$(SCALE),,$(PY) benchmarks/pipeline.py $(if $(QUICK),--quick))
	$(if $(LENSES),$(PY) benchmarks/lenses.py)
	$(if $(SCALE),$(PY) benchmarks/report_read.py $(ARGS))
	$(if $(OVERHEAD)$(if $(LENSES),,$(QUICK)),$(PY) benchmarks/overhead.py --sweep --packing $(if $(QUICK),--quick --out runs/bench/overhead-quick.md))

bench-check: $(STAMP) ## The quick pipeline benchmark (make bench QUICK=1), then a check that every table and measurement is there (CI runs it beside make test)
	$(PY) benchmarks/pipeline.py --quick --out runs/bench/pipeline-quick.md
	$(PY) benchmarks/check_quick.py runs/bench/pipeline-quick.md

bench-gpu: $(STAMP) ## The GPU headline: a CIFAR-10-sized sweep's slice timed, the whole sweep projected -> runs/bench/gpu.md (JAX; TINY=1: CPU dry run; JOBS=N: N jobs at once; PACKING=1: sequential vs packed); on the GPU machine: bash scripts/bench_gpu.sh
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) benchmarks/gpu.py $(if $(TINY),--tiny) $(if $(JOBS),--jobs $(JOBS)) $(if $(PACKING),--compare-packing) $(ARGS)

lint: $(STAMP) ## ruff (pyflakes, isort, bugbear, pyupgrade), the import contracts (lint-imports), the docs site (mkdocs --strict)
	$(PY) -m ruff check ablation hydra_plugins tests benchmarks scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mkdocs build --strict --quiet

test: lint ## Lint, then run the whole test suite (TEST_WORKERS=1: in one process)
	$(PY) -m pytest -q $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal) $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-fast: $(STAMP) ## The tests that start no process, sweep or server (-m 'not slow'), before a commit
	$(PY) -m pytest -q -m 'not slow' $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal) $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

clean: ## Remove what can be rebuilt (decoded-dataset cache, offline expansions, __pycache__, build outputs); keeps the MLflow store and every result
	rm -rf runs/cache runs/expanded runs/site build dist .pytest_cache .ruff_cache .grimp_cache .import_linter_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

clean-runs: ## Delete every result under runs/: the MLflow store runs/mlflow.db, artifacts, reports, backups, the server's data
	@echo "clean-runs: deleting everything under runs/: the MLflow store (runs/mlflow.db), artifacts, reports, backups, unsent journals, the tracking server's data"
	bash scripts/server.sh stop
	find runs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
