# The two commands for a fresh machine: `make run` and `make test`.
.PHONY: run test check setup clean bench

setup:
	./dev/setup

run: setup
	.venv/bin/wisp standalone

test:
	./dev/setup --test
	.venv/bin/ruff check src tests
	.venv/bin/pytest -q

check:
	./dev/setup --test
	.venv/bin/ruff format --check src tests
	.venv/bin/ruff check src tests
	.venv/bin/mypy

bench:
	./dev/setup --test
	.venv/bin/python bench/invoke_latency.py

clean:
	rm -rf .venv .wisp .pytest_cache .mypy_cache .ruff_cache
