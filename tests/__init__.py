"""The test suite. Shared helpers: tests.support; programs the tests start: tests.programs."""
