# mapsync — every entry point a developer or CI needs. Everything runs inside .venv, created on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint fmt validate bench bench-quick soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mapsync validate mappings/
	$(BIN)/mapsync test mappings/
	$(BIN)/mapsync demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mapsync fmt --check mappings/

validate: $(STAMP)
	$(BIN)/mapsync validate mappings/
	$(BIN)/mapsync test mappings/

# The whole set, 1M contacts included: about 80 minutes on 2 cores (Campaign takes one request per record).
bench: $(STAMP)
	$(BIN)/python -m bench

# The same without the 1M full load: about 12 minutes.
bench-quick: $(STAMP)
	$(BIN)/python -m bench --sizes 100000 --bulk-sizes 100000

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
