"""smoldist's tests: one folder per stage of the package (tests/data/ for smoldist/data/, ...); shared helpers in
tests/helpers.py, fixtures in tests/conftest.py, small real datasets in tests/fixtures/."""
