# `make run` and `make test` create .venv and install on first use (and again when
# pyproject.toml or constraints.txt change). constraints.txt pins the tested versions.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
QT_XCB := libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1

.PHONY: run test lint bench screenshots clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@missing=$$(ldd $$($(BIN)/python -c 'import PySide6, pathlib; print(pathlib.Path(PySide6.__file__).parent / "Qt/plugins/platforms/libqxcb.so")') | grep 'not found'); \
	if [ -n "$$missing" ] && [ -z "$$QT_QPA_PLATFORM" ]; then \
	  echo "Qt's X11 plugin lacks system libraries; install them with: sudo apt-get install $(QT_XCB)"; exit 1; fi
	$(BIN)/layerlab

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

# The tests run on one torch thread each (tests/conftest.py), so one pytest-xdist worker per
# core (at most 4); a file's tests stay on one worker, so module fixtures are built once.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: lint
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -n $(JOBS) --dist loadfile

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m layerlab.app.screenshots assets/screenshots

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build src/*.egg-info
