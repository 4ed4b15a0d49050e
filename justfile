# Developer verbs. `just` itself is installed into .venv by set-up (PyPI package rust-just):
# run these as `.venv/bin/just <recipe>` on a fresh machine.

venv := ".venv/bin"

# Create .venv and install everything (idempotent)
setup:
    bash scripts/setup.sh

# The whole chain end to end on the embedded model
demo *ARGS: setup
    {{venv}}/repcollapse demo {{ARGS}}

# The default test suite (what CI runs)
test *ARGS: setup
    {{venv}}/python -m pytest {{ARGS}}

# Slow end-to-end tests on the real model
test-slow: setup
    {{venv}}/python -m pytest -m slow

# Every benchmark, one line per figure, written to bench/results.json
bench *ARGS: setup
    {{venv}}/python -m bench.run_all {{ARGS}}

# ruff check + format check
lint: setup
    {{venv}}/ruff check .
    {{venv}}/ruff format --check .

# Lint and test
check: lint test
