"""Programs the tests start in a process of their own (run as `python -m tests.programs.NAME`)."""
