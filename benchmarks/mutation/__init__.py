"""Mutation testing of the modules every user path stands on, with mutmut 3 (`make mutation`).

    .venv/bin/python -m benchmarks.mutation [MODULE ...] [--jobs 1] [--keep] [--sample N]
    .venv/bin/python -m benchmarks.mutation --rescore build/mutation/results.json

For each module (default: all of MODULES) a staging tree is built under build/mutation/MODULE/
with the package laid out as it is installed (tests.support.installed: serve/ ->
flaxdigits/serve/, export/ -> flaxdigits/export/), so that mutmut's mutant names, which it
derives from the file path, equal the import names the tests use
(flaxdigits.serve.runtime.preprocess, not serve.runtime.preprocess). mutmut copies that tree to
build/mutation/MODULE/mutants/, puts it first on sys.path (ahead of the editable install's
finder) and runs, for each mutant, the module's fast tests that reach the mutated function,
`-m "not slow"`, `-x`, no random order. The working tree is never modified.

A module's score is killed / (mutants - listed equivalent ones). explained.py names every mutant
that changes nothing observable, with why, and the few that change something no promise covers
(they count as survivors). docs/testing.md records the scores and every survivor. Exit status 1
if a module scores under THRESHOLD or a survivor is in neither list. A benchmark, not a test: about
20 minutes on 2 busy cores for all seven modules (docs/testing.md has the figures).

modules: what is mutated and tested; stage: the staging tree; runner: mutmut run and its
results; explained: the known survivors; score: scores and the pass rule; main: the command.
"""
