.PHONY: install run test lint bench locust
install:
	scripts/setup.sh
run:
	scripts/run.sh
test:
	scripts/test.sh
lint:
	.venv/bin/ruff check .
	.venv/bin/mypy
bench:
	.venv/bin/python -m loadtest.bench
locust:
	.venv/bin/python -m loadtest.run_locust
