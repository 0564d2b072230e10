# The two commands of the README. Both set up what they need first, idempotently.
.PHONY: run test setup soak

run:
	bash scripts/setup.sh
	.venv/bin/smartacct run

test:
	bash scripts/setup.sh --test
	.venv/bin/python -m pytest

setup:
	bash scripts/setup.sh --test

# The crash, instance, poison and property tests with a fresh seed each round, until one fails;
# pytest's header and every failure print the seed (SMARTACCT_SEED=n replays it).
soak:
	bash scripts/setup.sh --test
	while SMARTACCT_SOAK=1 .venv/bin/python -m pytest -x -q tests/test_crash.py tests/test_instances.py \
		tests/test_poison.py tests/test_properties.py; do :; done
