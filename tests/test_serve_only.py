"""The serve side installed alone, as the guides say (`pip install '.[serve]'`, `'.[edge]'`):
JAX neither installed nor imported, the page starts from a release and gradio_client /predict
answers what the predictor says; the edge install predicts without gradio; the Space folder
runs with the host and port from the environment.

The venvs are built once and cached under .cache/ (keyed by pyproject.toml's sha256; the
package itself is reinstalled when its sources change), so a rerun costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from filelock import FileLock

from flaxdigits.export.release import build_release
from flaxdigits.export.space import build_space
from tests.programs import command
from tests.support.installed import package_dirs
from tests.support.ports import PortTaken, on_free_port, says_port_taken
from tests.support.release_models import write_models

pytestmark = pytest.mark.slow  # builds a venv the first time (a minute or two)

ROOT = Path(__file__).resolve().parents[1]
TRAINING_STACK = ("jax", "jaxlib", "flax", "optax", "jax2onnx", "onnx", "torch")
START_TIMEOUT = 120.0


def _build(argv: list[str], where: Path) -> None:
    """Run one step of building a venv; a failure says what the step printed and how much disk
    was free (a CI run once failed here with nothing to go on but "ensurepip ... returned
    non-zero exit status 1")."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode:
        free = shutil.disk_usage(where).free / 2**30
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode} ({free:.1f} GiB free on its disk):\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )


def _venv(extra: str) -> Path:
    """.cache/serve-only/EXTRA-HASH/venv with `pip install '.[EXTRA]'`, reused while
    pyproject.toml is unchanged; the package reinstalled (no deps) when its sources change."""
    recipe = (
        b"setuptools>=77 for offline reinstalls\n"  # how the venv is built: a change rebuilds it
    )
    key = hashlib.sha256(recipe + (ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = ROOT / ".cache" / "serve-only" / f"{extra}-{key}" / "venv"
    python = venv / "bin" / "python"
    sources = hashlib.sha256()
    for folder in package_dirs().values():  # every installed file, data files included
        for path in sorted(p for p in (ROOT / folder).rglob("*") if p.is_file()):
            if "node_modules" not in path.parts and "__pycache__" not in path.parts:
                sources.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    stamp, done = venv / ".flaxdigits-sources", venv / ".complete"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(venv.parent / ".lock"):  # pytest-xdist workers build it once
        for old in venv.parent.parent.glob(f"{extra}-*"):  # venvs of an older pyproject.toml
            if old != venv.parent:
                shutil.rmtree(old, ignore_errors=True)
        if not done.exists():
            _build([sys.executable, "-m", "venv", "--clear", str(venv)], venv.parent)
            # setuptools too: later reinstalls build without isolation, so they need no network
            _build(pip + ["setuptools>=77", f"{ROOT}[{extra}]"], venv.parent)
            done.touch()
        elif not stamp.exists() or stamp.read_text() != sources.hexdigest():
            reinstall = ["--no-deps", "--no-build-isolation", "--force-reinstall", str(ROOT)]
            _build(pip + reinstall, venv.parent)
        stamp.write_text(sources.hexdigest())
    return venv


def test_a_failed_venv_step_says_what_it_printed_and_the_free_disk(tmp_path):
    step = [sys.executable, "-c", "import sys; print('no room'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exited 3 \(\d+\.\d GiB free on its disk\):\nno room"):
        _build(step, tmp_path)
    _build([sys.executable, "-c", "pass"], tmp_path)  # a step that succeeds says nothing


@pytest.fixture(scope="module")
def serve_venv() -> Path:
    return _venv("serve")


@pytest.fixture(scope="module")
def edge_venv() -> Path:
    return _venv("edge")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve_only")
    return build_release(write_models(root / "models"), root, latency=False, log=lambda _: None)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    from PIL import Image

    from tests.support.drawings import draw_digit

    path = tmp_path_factory.mktemp("digit") / "seven.png"
    Image.fromarray(draw_digit()).save(path)
    return path


def _installed(venv: Path) -> set[str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {d["name"].lower() for d in json.loads(out)}


def _imports_nothing_of_the_training_stack(venv: Path, modules: str) -> None:
    argv = command(
        "heavy_imports", "--import", *modules.split(", "), python=venv / "bin" / "python"
    )
    proc = subprocess.run(
        argv, capture_output=True, text=True, cwd="/"
    )  # not from the checkout, whose flaxdigits/ folder would shadow the installed package
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _serve(cmd: list[str], port: int, env: dict | None = None):
    """Start the page; (process, seconds until it answered HTTP)."""
    env = {**os.environ, **(env or {}), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while time.perf_counter() - start < START_TIMEOUT:
        if proc.poll() is not None:
            out = proc.stdout.read()
            if says_port_taken(out):
                raise PortTaken(port, out[-3000:])
            pytest.fail(f"the page exited ({proc.returncode}): {out[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc, time.perf_counter() - start
        except OSError:
            time.sleep(0.25)
    proc.kill()
    pytest.fail(f"the page did not answer within {START_TIMEOUT} s")


def _stop(proc) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _expected(archive: Path, image: Path) -> dict:
    """What this process's predictor says about image for both models of the release."""
    from flaxdigits.release import reader as release
    from flaxdigits.serve.page.handlers import load_predictors
    from flaxdigits.serve.runtime.decode import load_image_file
    from flaxdigits.serve.runtime.preprocess import preprocess

    with release.models_dir(archive) as models:
        predictors = load_predictors(models)
    x = preprocess(load_image_file(image)).image
    return {name: p.predict(x).to_json() for name, p in predictors.items()}


def _check_api(port: int, image: Path, expected: dict) -> None:
    from gradio_client import Client, handle_file

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    result = client.predict(image=handle_file(str(image)), method="mnist", api_name="/predict")
    assert result["method"] == "mnist"
    for name, want in expected.items():
        got = result["models"][name]
        assert got["digit"] == want["digit"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


def test_serve_only_venv_has_no_jax_and_serves_a_release_over_the_api(
    serve_venv, archive, digit_png
):
    installed = _installed(serve_venv)
    assert {"gradio", "onnxruntime", "numpy", "pillow", "flaxdigits"} <= installed
    assert not installed & set(TRAINING_STACK), installed & set(TRAINING_STACK)
    _imports_nothing_of_the_training_stack(
        serve_venv, "flaxdigits.cli.main, flaxdigits.serve.page.app, flaxdigits.release.reader"
    )
    cmd = [str(serve_venv / "bin" / "flaxdigits"), "serve", "--models", str(archive)]
    port, (proc, seconds) = on_free_port(lambda port: _serve([*cmd, "--port", str(port)], port))
    try:
        _check_api(port, digit_png, _expected(archive, digit_png))
    finally:
        out = _stop(proc)
    assert "reachable from the network" not in out  # loopback: no warning
    print(f"serve-only page answered in {seconds:.1f} s")


def test_the_space_folder_runs_with_host_and_port_from_the_environment(
    serve_venv, archive, digit_png, tmp_path
):
    space = build_space(archive, tmp_path / "space")

    def start(port: int):
        env = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
        return _serve([str(serve_venv / "bin" / "python"), str(space / "app.py")], port, env)

    port, (proc, _) = on_free_port(start)
    try:
        _check_api(port, digit_png, _expected(archive, digit_png))
    finally:
        _stop(proc)


def test_edge_venv_has_no_gradio_nor_jax_and_predicts_and_verifies_a_release(
    edge_venv, archive, digit_png
):
    installed = _installed(edge_venv)
    assert {"onnxruntime", "numpy", "pillow", "flaxdigits"} <= installed
    assert "gradio" not in installed and not installed & set(TRAINING_STACK)
    _imports_nothing_of_the_training_stack(
        edge_venv, "flaxdigits.cli.main, flaxdigits.serve.predict"
    )
    flaxdigits = str(edge_venv / "bin" / "flaxdigits")
    expected = _expected(archive, digit_png)
    for file, name in (("cnn.onnx", "cnn"), ("mlp.onnx", "mlp")):
        proc = subprocess.run(
            [flaxdigits, "predict", "--model", str(archive), "--release-file", file, "--json"]
            + [str(digit_png)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout)
        assert record["digit"] == expected[name]["digit"]
        assert record["probabilities"] == pytest.approx(expected[name]["probabilities"], abs=1e-6)
    proc = subprocess.run([flaxdigits, "verify", str(archive)], capture_output=True, text=True)
    assert proc.returncode == 0 and "every sha256 matches" in proc.stdout
    # Serving needs gradio: the edge install says so in one line instead of a traceback.
    proc = subprocess.run(
        [flaxdigits, "serve", "--models", str(archive)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr


def test_the_static_site_builds_from_the_serve_only_install(serve_venv, archive, tmp_path):
    # Installed, flaxdigits has web/'s sources as package data and no node_modules: `web` gets
    # onnxruntime-web by `npm ci` of the packaged lock file, once, into the cache.
    if shutil.which("npm") is None:
        pytest.skip("npm not found: install Node.js and npm (`sudo make browser-deps`)")
    out = tmp_path / "site"
    cmd = [str(serve_venv / "bin" / "flaxdigits"), "web", "--models", str(archive)]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, cwd="/", timeout=900
    )  # not from the checkout, whose web/ and flaxdigits/ would stand in for the installed ones
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = json.loads((out / "site.json").read_text())
    assert [m["name"] for m in site["models"]] == ["mlp", "cnn"] and site["ort"]["version"]
    pages = ("index.html", "app.js", "preprocess.js", "answer.js")
    for name in (*pages, "ort/ort-wasm-simd-threaded.wasm"):
        assert (out / name).stat().st_size > 100, name
    assert b"Content-Security-Policy" in (out / "index.html").read_bytes()
