# InSAR Subsidence Mapper — development tasks.
# `make test` and `make demo` run `make setup` first, so a fresh clone needs nothing else.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SITE = $(shell [ -x $(PY) ] && $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Evaluated when used, i.e. after setup has made the venv.
# QGIS 3.22's /usr/bin/qgis_process wrapper adds --noversioncheck, which it then rejects.
QGIS_PROCESS := qgis_process.bin
APT_PACKAGES := qgis python3-qgis python3-venv gdal-bin
# The benchmarks compare with GRASS GIS (r.watershed, r.slope.aspect).
BENCH_APT_PACKAGES := grass-core
PLUGIN := insar_subsidence
BUILD := build

# Headless QGIS with the venv's packages; the plugin is found through a folder that holds
# a link named after the package, whatever this clone's folder is called.
export QT_QPA_PLATFORM := offscreen
RUN_ENV = PYTHONPATH=$(SITE) QGIS_PLUGINPATH=$(CURDIR)/$(BUILD)/pluginpath

.PHONY: setup lint test test-qgis demo bench package clean workflow-model screenshots

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@bash tools/ensure_apt.sh "command -v $(QGIS_PROCESS) && /usr/bin/python3 -c 'import qgis.core'" "QGIS (>= 3.22, with its Python bindings)" $(APT_PACKAGES)
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

$(BUILD)/pluginpath/$(PLUGIN):
	@mkdir -p $(BUILD)/pluginpath
	@ln -sfn $(CURDIR) $@

# Lint first: a lint failure fails `make test`.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The tests run in TEST_WORKERS pytest-xdist workers (auto: one per core; 0: all in one process).
# loadgroup keeps the tests that share a module-scoped fixture on one worker (tests/conftest.py).
TEST_WORKERS := auto
PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadgroup)
test: lint
	$(PY) -m pytest $(PARALLEL) tests

# `make test-qgis VERSION=3.40` (or 3.44): the suite on that QGIS, from Debian's archive, in a
# Debian root of its own kept in ~/.cache/insar_subsidence (tools/qgis_root.sh; needs root).
# Training runs in this venv's torch, as in QGIS; the tests that need torch in QGIS's own Python
# are skipped there.
VERSION := 3.40
test-qgis: lint
	bash tools/qgis_root.sh $(VERSION) . $(PARALLEL) tests

demo: setup $(BUILD)/pluginpath/$(PLUGIN)
	@$(RUN_ENV) bash tools/demo_mexico.sh $(QGIS_PROCESS) $(BUILD)/demo/mexico_city
	@echo
	@$(RUN_ENV) bash tools/demo_donana.sh $(QGIS_PROCESS) $(BUILD)/demo/donana

# `make bench BENCH=kriging` runs only the benchmarks whose name contains "kriging".
# bench_kriging compares with KrigeKit, which needs numpy 2: it runs in a venv of its own
# (requirements-bench.txt, without the system's packages), whose python it gets in KRIGEKIT_PYTHON.
BENCH_VENV := $(BUILD)/bench-venv
bench: setup $(BUILD)/pluginpath/$(PLUGIN) $(BENCH_VENV)/.installed
	@bash tools/ensure_apt.sh "command -v grass" "GRASS GIS" $(BENCH_APT_PACKAGES)
	KRIGEKIT_PYTHON=$(CURDIR)/$(BENCH_VENV)/bin/python $(PY) tests/bench/run.py $(BENCH)

# After setup, which installs python3-venv.
$(BENCH_VENV)/.installed: requirements-bench.txt | $(VENV)/.installed
	@[ -x $(BENCH_VENV)/bin/python ] || /usr/bin/python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements-bench.txt
	@touch $@

# The zip the QGIS plugin manager installs: committed files only, minus what
# .gitattributes marks export-ignore (tests, build and dev files).
package:
	@mkdir -p $(BUILD)
	git archive --format=zip --prefix=$(PLUGIN)/ -o $(BUILD)/$(PLUGIN).zip HEAD
	@echo "$(BUILD)/$(PLUGIN).zip"

clean:
	rm -rf $(BUILD) $(VENV)

# Rewrites resources/subsidence_workflow.model3 from tools/make_workflow_model.py.
# Qt orders XML attributes by a random hash seed; seed 3 gives the committed file's order, so that
# a regenerated model differs from it only where the model does.
workflow-model: setup $(BUILD)/pluginpath/$(PLUGIN)
	QT_HASH_SEED=3 $(RUN_ENV) /usr/bin/python3 tools/make_workflow_model.py

# docs/screenshot_*.png: the toolbox, a dialog and the model designer, drawn by a virtual X server.
screenshots: setup $(BUILD)/pluginpath/$(PLUGIN)
	@bash tools/ensure_apt.sh "command -v xvfb-run" "Xvfb" xvfb xauth
	$(RUN_ENV) xvfb-run -a -s "-screen 0 1600x1200x24" /usr/bin/python3 tools/screenshots.py
