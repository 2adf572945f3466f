# Every target sets up what it needs: a fresh Debian/Ubuntu machine with Python 3.10+ runs `make demo` or
# `make test` straight after cloning.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check check-installed bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { echo "python venv missing: sudo apt install python3-venv"; exit 1; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/piorch demo --seconds 10 --out ./recv

test: $(STAMP)
	$(BIN)/pytest -q

# lint-imports checks the layer contract in .importlinter, once the project has one.
check: $(STAMP)
	$(BIN)/ruff check orchestrator tests benchmarks examples
	$(BIN)/mypy
	[ ! -f .importlinter ] || $(BIN)/lint-imports

# The package as a user installs it: wheel, fresh venv with no extras, `piorch demo` outside the source tree.
check-installed:
	$(PYTHON) .ci/check_installed.py

bench: $(STAMP)
	$(BIN)/python benchmarks/receiver.py
	$(BIN)/python benchmarks/cutting.py
	$(BIN)/python benchmarks/remux.py
	$(BIN)/python benchmarks/view.py
	$(BIN)/python benchmarks/fleet.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/startup_threads.py
	$(BIN)/python benchmarks/clock_offset.py
	$(BIN)/python benchmarks/import_cost.py
	$(BIN)/python benchmarks/frames.py
	$(BIN)/python benchmarks/timestamps.py

clean:
	rm -rf $(VENV) build *.egg-info
