# Two commands (README Quickstart): `make demo` and `make test`. Both create .venv and install on first use.
# Prefer Python 3.12 (current jax 0.12 stack); fall back to any python3 >= 3.11 (jax 0.10/0.11).
PYTHON ?= $(shell for p in python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test data bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: need Python >= 3.11 on PATH"; exit 1; }
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e ".[dev,fleet,wandb,test,ns2d]"
	@touch $(STAMP)

# Test-only: PDEBench's own Burgers generator (tests/test_pdebench_reference.py calls it). The wheel declares
# Python < 3.11 and pins old torch/hydra stacks, but only its JAX generator is used: install it alone.
PDEBENCH_STAMP := $(VENV)/.pdebench-0.1.0
$(PDEBENCH_STAMP): $(STAMP)
	$(VPY) -m pip install -q --no-deps --ignore-requires-python "pdebench==0.1.0"
	@touch $@

install: $(STAMP) $(PDEBENCH_STAMP)

# Main job: make the default data if missing, train burgers32:cpu, evaluate, write the report.
demo: install
	$(VPY) -m ups_jax.train --config configs/burgers32.py:cpu --workdir runs/burgers32_cpu

# Two workers (pytest-xdist): most tests compile or run one small program at a time, so the second core is idle
# without them. Each module runs whole on one worker; the Ray modules are one unit (tests/conftest.py).
test: install
	$(VPY) -m pytest -n 2 tests

bench: install
	$(VPY) benchmarks/solver_throughput.py

clean-venv:
	rm -rf $(VENV)
