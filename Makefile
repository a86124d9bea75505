# The two commands for a fresh machine: `make run` and `make test`.
.PHONY: run test lint setup clean bench

setup:
	./dev/setup

run: setup
	.venv/bin/wisp standalone

# Lint first (fast), then every test: unit, real etcd, end to end.
test:
	./dev/setup --test
	$(MAKE) --no-print-directory lint
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff format --check src tests bench dev
	.venv/bin/ruff check src tests bench dev
	.venv/bin/mypy
	.venv/bin/lint-imports

bench:
	./dev/setup --test
	.venv/bin/python bench/invoke_latency.py

clean:
	rm -rf .venv .wisp .pytest_cache .mypy_cache .ruff_cache
