# Two commands on a fresh machine: `make demo` and `make test`. Each installs into .venv itself.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; pip would otherwise pick a CUDA build with several GB of dependencies.
TORCH_FIND_LINKS ?= /opt/wheels
PIP_FLAGS := -q -c constraints.txt $(if $(wildcard $(TORCH_FIND_LINKS)),--find-links $(TORCH_FIND_LINKS),)
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint typecheck unit notebooks bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --upgrade pip setuptools wheel
	$(BIN)/pip install $(PIP_FLAGS) torch==2.13.0
	$(BIN)/pip install $(PIP_FLAGS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/transitnet demo --out demo-output

lint: $(STAMP)
	$(BIN)/ruff check transitnet data_pipelines tests benchmarks
	$(BIN)/ruff format --check transitnet data_pipelines tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Every notebook runs top to bottom on the real data in fast mode (outputs stay stripped in git).
notebooks: $(STAMP)
	@tmp=$$(mktemp -d) && TMPDIR=$$tmp MPLBACKEND=Agg $(BIN)/pytest -q -p no:cacheprovider --nbmake --nbmake-timeout=600 notebooks/; \
	status=$$?; rm -rf $$tmp; exit $$status

check: lint typecheck

test: check unit notebooks

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do [ "$$f" = benchmarks/bench_common.py ] && continue; $(BIN)/python $$f --quick || exit 1; done

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache build *.egg-info
