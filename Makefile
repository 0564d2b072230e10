# The two commands of the README. Both set up what they need first, idempotently.
.PHONY: run test setup

run:
	bash scripts/setup.sh
	.venv/bin/smartacct run

test:
	bash scripts/setup.sh --test
	.venv/bin/python -m pytest

setup:
	bash scripts/setup.sh --test
