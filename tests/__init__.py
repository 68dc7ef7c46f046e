"""The test suite (a regular package, so that `tests.fixtures_data` is this folder's even when an
installed distribution ships a top-level `tests` package, as iterative-stratification does)."""
