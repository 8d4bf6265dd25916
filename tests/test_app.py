"""The drawing page's app: loading the models, the Blocks' endpoints, events and queue, launch
options; then the served page end to end.

The first half needs no server: two toy ONNX graphs (any ink -> 3, resp. 8; conftest's toy_dir)
exercise loading, the events and the options; what the page shows is tests/test_page.py's. The
second half launches the real page on a free loopback port with the 1-epoch exports and calls its
/predict endpoint with gradio_client.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from flaxdigits.core import contract
from flaxdigits.serve.page import app, budgets, layout, temp_files
from flaxdigits.serve.page import handlers as page_handlers
from flaxdigits.serve.page import views as page
from flaxdigits.serve.page.guard import Guard
from flaxdigits.serve.runtime.decode import MAX_FILE_BYTES
from flaxdigits.serve.runtime.predictor import Predictor
from tests.programs import command
from tests.support.drawings import LETTER_X, ONE, card_digit, drawing, strokes
from tests.support.ports import free_port

# ---------------------------------------------------------------------------------- loading


def test_missing_models_dir_tells_the_user_to_run_make_all(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make all.*flaxdigits export"):
        app.load_predictors(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="make all"):
        app.launch(models_dir=tmp_path / "nowhere", block=False)


def test_missing_model_file_is_named(toy_dir, tmp_path):
    (tmp_path / "mlp.onnx").write_bytes((toy_dir / "mlp.onnx").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"has no cnn\.onnx.*make all"):
        app.load_predictors(tmp_path)


def test_models_load_in_page_order_with_their_metadata(toys):
    assert list(toys) == ["mlp", "cnn"]
    assert page.model_subtitle(toys["mlp"]) == "7,850 parameters · 91.2% test accuracy"


@pytest.mark.parametrize(
    ("threads", "cores", "expected"),
    [(1, 2, 2), (2, 2, 1), (0, 2, 1), (4, 2, 1), (1, 16, 16), (2, 16, 8), (1, 1, 1)],
)
def test_concurrency_is_cores_over_onnxruntime_threads(threads, cores, expected):
    assert app.concurrency_limit(threads, cores) == expected


# ---------------------------------------------------------------------------------------- the app


def test_app_exposes_one_named_endpoint_and_limits_its_queue(toys):
    demo = app.build_app(toys, concurrency=2)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == {layout.API_NAME}
    assert demo._queue.max_size == app.QUEUE_MAX_SIZE
    assert demo._queue.pending_messages_per_session.max_size == budgets.PENDING_SESSIONS
    assert demo._queue.default_concurrency_limit == 2
    assert demo.api_open is False
    sketch = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sketch")
    assert sketch.brush.default_size == layout.BRUSH_RADIUS
    assert sketch.brush.colors == ["#000000"]
    assert sketch.layers.disabled and not sketch.transforms and not sketch.sources
    assert sketch.canvas_size == page.CANVAS_SIZE


def test_page_events_are_private_latest_only_and_share_one_concurrency_group(toys):
    demo = app.build_app(toys)
    events = {fn.name + ":" + fn.targets[0][1]: fn for fn in demo.fns.values()}
    assert set(events) == {
        "on_stroke:input",
        "on_clear:clear",
        "on_draw:select",
        "on_upload:change",
        "on_upload:select",
        "on_method:change",
        "predict:click",
    }
    for key, fn in events.items():
        assert fn.concurrency_id == "predict"
        if key != "predict:click":
            assert fn.api_visibility == "private"
            assert fn.trigger_mode == "always_last"
    stroke = events["on_stroke:input"].fn
    source, status, *cards, steps = stroke("draw", drawing(), "mnist")
    assert source == "draw" and [card_digit(c) for c in cards] == ["3", "8"]
    # A stroke event still queued when the person opened the Upload tab changes nothing.
    assert all(out == gr.skip() for out in stroke("upload", drawing(), "mnist"))


class Releases:
    """A stand-in for TempFiles that records what the handlers release."""

    def __init__(self):
        self.released = []

    def release(self, path, keep_s=None):
        self.released.append((path, keep_s))


def test_each_handler_releases_the_uploads_it_read(toys, tmp_path):
    temp = Releases()
    handlers = page_handlers.Handlers(toys, temp_files=temp)
    image = tmp_path / "digit.png"
    drawing().save(image)
    assert handlers.predict(str(image), "mnist")["models"]["mlp"]["digit"] == 3
    _, status, *_ = handlers.on_upload(str(image), "mnist")
    assert "disagree" in status
    editor = {"background": str(image), "layers": [str(image)], "composite": None}
    handlers.on_stroke("draw", editor, "mnist")
    handlers.on_method("draw", editor, str(image), "box")
    assert temp.released == [
        (str(image), None),  # /predict: deleted after the grace
        (str(image), temp_files.UPLOAD_KEEP_S),  # the Upload tab: kept for a method switch
        (str(image), None),  # an editor value sent as paths: background and layer
        (str(image), None),
        (str(image), temp_files.UPLOAD_KEEP_S),  # the method switch on the Draw tab: the upload
        (str(image), None),
        (str(image), None),
    ]


def test_an_upload_no_longer_on_the_server_asks_for_it_again(toys, tmp_path):
    handlers = page_handlers.Handlers(toys)
    source, status, *cards, steps = handlers.on_method(
        "upload", None, str(tmp_path / "gone.png"), "mnist"
    )
    assert source == "upload" and status == page_handlers.UPLOAD_GONE
    assert [card_digit(c) for c in cards] == ["", ""]


def test_finished_uploads_leave_gradios_progress_table_at_the_second_pass():
    from gradio.route_utils import FileUploadProgress

    progress = FileUploadProgress()
    for upload_id in ("done", "running"):
        progress.track(upload_id)
    progress.set_done("done")
    progress._signals["waited-on"].clear()  # a progress stream for an id never uploaded
    finished = app.forget_finished(progress, set())
    assert finished == {"done", "waited-on"} and "done" in progress._statuses
    finished = app.forget_finished(progress, finished)
    assert set(progress._statuses) == {"running"} and set(progress._signals) == {"running"}
    assert finished == set()


def test_page_never_imports_jax_flax_or_matplotlib(toy_dir):
    result = subprocess.run(
        command("heavy_imports", "--page", toy_dir), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["heavy"] == []


def test_launch_options_are_loopback_private_and_capped():
    options = app.launch_options()
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7860
    assert options["share"] is False
    assert options["max_file_size"] == MAX_FILE_BYTES
    assert options["enable_monitoring"] is False
    assert options["num_workers"] == 0  # no static file workers serving uploads past the guard
    assert options["state_session_capacity"] == budgets.SESSIONS  # made-up session hashes
    assert app.launch_options("0.0.0.0", 8000, True)["share"] is True  # noqa: S104 - passed through, binds nothing


def test_launch_configures_pillow_then_serves_behind_the_guard(toy_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(app, "configure_pillow", lambda: calls.append("configure_pillow"))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **options: calls.append(options))
    for name in ("GRADIO_TEMP_DIR", "FORWARDED_ALLOW_IPS"):  # launch sets them
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.delenv("FLAXDIGITS_TRUSTED_PROXIES", raising=False)
    demo = app.launch(models_dir=toy_dir, port=8123, threads=1, block=False)
    assert isinstance(demo, gr.Blocks)
    assert calls[0] == "configure_pillow"
    options = calls[1]
    app_kwargs = options.pop("app_kwargs")
    (middleware,) = app_kwargs["middleware"]
    assert callable(app_kwargs["lifespan"])  # puts the guard before CORS, removes the temp dir
    expected = app.launch_options("127.0.0.1", 8123)
    del expected["app_kwargs"]
    assert options == {**expected, "prevent_thread_lock": True}
    assert middleware.cls is Guard and middleware.kwargs["trusted_proxies"] == ()
    # Its own temp dir, bounded by the guard's ledger; uvicorn trusts no forwarded header.
    temp_files = middleware.kwargs["temp_files"]
    # (under this process's root, which Gradio's upload checks see after the launch)
    assert temp_files.root.is_dir() and temp_files.root.name.startswith("page-")
    assert os.environ["GRADIO_TEMP_DIR"] == str(temp_files.root.parent)
    assert os.environ["FORWARDED_ALLOW_IPS"] == ""
    assert demo._queue.default_concurrency_limit == app.concurrency_limit(1)
    monkeypatch.setenv("FLAXDIGITS_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2")
    app.launch(models_dir=toy_dir, port=8123, threads=1, block=False)
    assert calls[-1]["app_kwargs"]["middleware"][0].kwargs["trusted_proxies"] == (
        "10.0.0.1",
        "10.0.0.2",
    )
    assert os.environ["FORWARDED_ALLOW_IPS"] == "10.0.0.1,10.0.0.2"


# --------------------------------------------------------------------- served, end to end


@pytest.fixture(scope="module")
def served(exported_models):
    """The real page with the 1-epoch exports, in this process, on a free loopback port."""
    with pytest.MonkeyPatch.context() as mp:
        # configure_pillow is process-wide (tested with preprocess): keep it out of the session.
        mp.setattr(app, "configure_pillow", lambda: None)
        for name in ("GRADIO_TEMP_DIR", "FORWARDED_ALLOW_IPS"):  # launch sets them: restore
            mp.setenv(name, os.environ.get(name, ""))
        demo = app.launch(
            models_dir=exported_models, host="127.0.0.1", port=free_port(), block=False
        )
        try:
            yield demo
        finally:
            demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served.local_url, verbose=False)


@pytest.fixture(scope="module")
def answering_client(answering_toy_dir):
    """The page over the toys that answer "not a digit" to a letter, with a client."""
    from gradio_client import Client

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app, "configure_pillow", lambda: None)
        for name in ("GRADIO_TEMP_DIR", "FORWARDED_ALLOW_IPS"):
            mp.setenv(name, os.environ.get(name, ""))
        demo = app.launch(
            models_dir=answering_toy_dir, host="127.0.0.1", port=free_port(), block=False
        )
        try:
            yield Client(demo.local_url, verbose=False)
        finally:
            demo.close()


def test_api_answers_not_a_digit_for_a_letter(answering_client, tmp_path):
    from gradio_client import handle_file

    for lines, answer, digit in ((LETTER_X, "not a digit", 0), (ONE, "digit", 1)):
        png = tmp_path / f"{answer}.png"
        strokes(lines).save(png)
        result = answering_client.predict(handle_file(str(png)), "mnist", api_name="/predict")
        assert_result_shape(result, "mnist")
        assert {m["answer"] for m in result["models"].values()} == {answer}
        assert {m["digit"] for m in result["models"].values()} == {digit}


def clear_digits(mnist, models_dir, count=3) -> list[tuple[np.ndarray, int]]:
    """Test digits that both models get right with confidence > 0.9 on the raw 28x28."""
    predictors = [Predictor(models_dir / f"{n}.onnx") for n in contract.MODEL_NAMES]
    images = mnist.test_images[:200].astype(np.float32) / 255
    probs = [p.predict_batch(images) for p in predictors]
    labels = mnist.test_labels[:200]
    clear = np.all([(p.argmax(1) == labels) & (p.max(1) > 0.9) for p in probs], axis=0)
    picked, seen = [], set()
    for i in np.flatnonzero(clear):  # distinct labels, so one wrong class cannot pass twice
        if int(labels[i]) not in seen:
            seen.add(int(labels[i]))
            picked.append((mnist.test_images[i], int(labels[i])))
        if len(picked) == count:
            break
    assert len(picked) == count
    return picked


def as_canvas_png(digit: np.ndarray, path) -> str:
    """A (28, 28) MNIST digit as a 400x400 black-on-white PNG, like a drawing on the page."""
    Image.fromarray(255 - digit).resize((400, 400), Image.Resampling.BICUBIC).save(path)
    return str(path)


def test_served_page_is_on_loopback_with_upload_cap_and_no_monitoring(served):
    url = served.local_url
    assert url.startswith("http://127.0.0.1:")
    assert served.share_url is None
    with urllib.request.urlopen(url + "config", timeout=10) as r:
        config = json.load(r)
    assert config["max_file_size"] == MAX_FILE_BYTES
    assert config["analytics_enabled"] is False
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "monitoring", timeout=10)
    assert e.value.code in (403, 404)


def test_direct_http_post_cannot_bypass_the_queue(served):
    request = urllib.request.Request(
        served.local_url + "gradio_api/api/predict/",
        data=json.dumps({"data": [None, "mnist"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 404
    assert "join the queue" in e.value.read().decode()


def test_api_lists_one_predict_endpoint_taking_a_file_and_a_method(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/predict"]
    assert not api["unnamed_endpoints"]
    params = api["named_endpoints"]["/predict"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["image", "method"]
    assert params[1]["parameter_default"] == "mnist"


def assert_result_shape(result: dict, method: str) -> None:
    assert result["method"] == method
    assert list(result["models"]) == ["mlp", "cnn"]
    for model in result["models"].values():
        assert set(model) == {"digit", "confidence", "probabilities", "answer"}
        assert model["answer"] in contract.ANSWERS
        assert len(model["probabilities"]) == 10
        assert sum(model["probabilities"]) == pytest.approx(1.0, abs=1e-3)
        assert model["confidence"] == max(model["probabilities"])
        assert model["digit"] == model["probabilities"].index(model["confidence"])


def test_api_reads_real_mnist_digits_drawn_large(client, exported_models, mnist, tmp_path):
    from gradio_client import handle_file

    for i, (digit, label) in enumerate(clear_digits(mnist, exported_models)):
        png = handle_file(as_canvas_png(digit, tmp_path / f"digit{i}.png"))
        result = client.predict(image=png, method="mnist", api_name="/predict")
        assert_result_shape(result, "mnist")
        assert {name: m["digit"] for name, m in result["models"].items()} == {
            "mlp": label,
            "cnn": label,
        }
        # The box method frames digits differently from MNIST: shape only, no accuracy claim.
        assert_result_shape(client.predict(png, "box", api_name="/predict"), "box")
        # Its name before 0.2 still works, and the answer names it as it is called now.
        assert_result_shape(client.predict(png, "seed", api_name="/predict"), "box")


def test_api_on_an_empty_canvas_is_a_clear_error_not_a_prediction(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    Image.new("RGB", (400, 400), "white").save(tmp_path / "blank.png")
    with pytest.raises(AppError, match="Draw a digit first: the canvas is empty."):
        client.predict(image=handle_file(str(tmp_path / "blank.png")), api_name="/predict")


def test_api_on_an_unreadable_file_says_what_is_wrong(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    with pytest.raises(AppError, match="not an image|cannot decode"):
        client.predict(image=handle_file(str(tmp_path / "broken.png")), api_name="/predict")
    (tmp_path / "notes.txt").write_text("seven")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(image=handle_file(str(tmp_path / "notes.txt")), api_name="/predict")
