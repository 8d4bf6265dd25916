"""export/site.py, the static demo's builder: what it copies (the gate and its drawing rule
included), what it refuses, the CSP it sets.

Toy models and a stand-in for web/node_modules: no Node, npm or browser needed here
(tests/test_web_parity.py and tests/test_web_browser.py run the site).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from html.parser import HTMLParser

import pytest

from flaxdigits.cli import main as cli
from flaxdigits.core import contract
from flaxdigits.export import site as web
from flaxdigits.serve.runtime import preprocess as pre
from flaxdigits.serve.runtime.predictor import ModelLoadError


@pytest.fixture
def web_dir(tmp_path):
    """A copy of web/'s sources with placeholder onnxruntime-web files."""
    out = tmp_path / "web"
    out.mkdir()
    for name in (*web.SOURCES, *web.LOCK_FILES):
        shutil.copy(web.WEB_DIR / name, out / name)
    dist = out / web.ORT_DIST
    dist.mkdir(parents=True)
    for name in web.ORT_FILES:
        (dist / name).write_bytes(f"stand-in for {name}".encode())
    (dist.parent / "package.json").write_text(json.dumps({"version": "9.9.9"}))
    return out


def test_site_holds_sources_runtime_models_and_the_reference_constants(toy_dir, web_dir, tmp_path):
    out = tmp_path / "site"
    written = web.build_site(toy_dir, out, web_dir=web_dir)
    expected = {*web.SOURCES, web.SITE_JSON, "_headers"}
    expected |= {f"{web.ORT_DIR}/{n}" for n in web.ORT_FILES}
    expected |= {f"{web.MODELS_DIR}/{n}.onnx" for n in contract.MODEL_NAMES}
    assert set(written) == expected
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected
    for name in contract.MODEL_NAMES:
        assert (out / web.MODELS_DIR / f"{name}.onnx").read_bytes() == (
            toy_dir / f"{name}.onnx"
        ).read_bytes()
    site = json.loads((out / web.SITE_JSON).read_text())
    assert [m["name"] for m in site["models"]] == list(contract.MODEL_NAMES)
    assert site["models"][0]["metadata"][contract.META_PARAMS] == "7850"
    assert site["ort"]["version"] == "9.9.9"
    c = site["preprocess"]
    assert c["box_padding"] == pre.BOX_PADDING and c["noise_level"] == pre.NOISE_LEVEL
    assert c["mnist_box"] == pre.MNIST_BOX and c["empty_message"] == pre.EMPTY_MESSAGE
    # Every constant web/preprocess.js reads comes from site.json.
    used = set(re.findall(r"\bc\.([a-z_]+)", (web.WEB_DIR / "preprocess.js").read_text()))
    assert used and used <= set(c)


def test_site_carries_each_models_answer_rule_for_web_answer_js(
    toy_dir, answering_toy_dir, web_dir, tmp_path
):
    from tests.support.toy_onnx import TOY_ANSWER_RULE

    assert "answer.js" in web.SOURCES
    assert 'from "./answer.js"' in (web.WEB_DIR / "app.js").read_text()
    for models, expected in ((answering_toy_dir, TOY_ANSWER_RULE), (toy_dir, None)):
        out = tmp_path / models.name
        web.build_site(models, out, web_dir=web_dir)
        site = json.loads((out / web.SITE_JSON).read_text())
        assert [m["answer_rule"] for m in site["models"]] == [expected] * 2


def test_int8_site_ships_the_int8_files(exported_like_dir, web_dir, tmp_path):
    web.build_site(exported_like_dir, tmp_path / "site", web_dir=web_dir, int8=True)
    site = json.loads((tmp_path / "site" / web.SITE_JSON).read_text())
    assert site["variant"] == "int8"
    shipped = (tmp_path / "site" / web.MODELS_DIR / "cnn.onnx").read_bytes()
    assert shipped == (exported_like_dir / "cnn.int8.onnx").read_bytes()


@pytest.fixture
def exported_like_dir(toy_dir, tmp_path):
    """toy_dir plus NAME.int8.onnx files that differ from the float ones."""
    from tests.support.toy_onnx import toy_model_bytes

    out = tmp_path / "models"
    shutil.copytree(toy_dir, out)
    for name, digit in (("mlp", 1), ("cnn", 2)):
        (out / f"{name}.int8.onnx").write_bytes(toy_model_bytes(name=name, ink_digit=digit))
    return out


class _Inline(HTMLParser):
    """Collects what a strict CSP would block in a page: inline scripts, styles, handlers."""

    def __init__(self):
        super().__init__()
        self.blocked = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script" and "src" not in names or tag == "style":
            self.blocked.append(tag)
        self.blocked += [a for a in names if a == "style" or a.startswith("on")]


def test_page_allows_only_its_own_origin_and_has_nothing_inline(toy_dir, web_dir, tmp_path):
    web.build_site(toy_dir, tmp_path / "site", web_dir=web_dir)
    page = (tmp_path / "site" / "index.html").read_text()
    assert web.csp_meta_tag() in page
    for policy in (web.CSP, web.CSP_META):
        assert "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "'unsafe-eval'" not in policy
        sources = re.findall(r"(?:https?:|\*|data:|blob:)", policy)
        assert not sources, sources
    parser = _Inline()
    parser.feed(page)
    assert parser.blocked == []
    headers = (tmp_path / "site" / "_headers").read_text()
    assert f"Content-Security-Policy: {web.CSP}" in headers


def test_without_node_modules_or_npm_the_error_names_what_to_install(
    toy_dir, web_dir, tmp_path, monkeypatch
):
    shutil.rmtree(web_dir / "node_modules")
    monkeypatch.setenv("FLAXDIGITS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm
    with pytest.raises(web.SiteError, match=r"npm is not on PATH: install Node.js and npm"):
        web.build_site(toy_dir, tmp_path / "site", web_dir=web_dir)
    assert not (tmp_path / "site").exists()


FAKE_NPM = """#!/bin/sh
# Stands in for `npm ci`: checks it runs beside the lock file, lays out onnxruntime-web's files.
[ "$1" = ci ] && [ -f package-lock.json ] && [ -f package.json ] || exit 3
echo called >> "$NPM_CALLS"
mkdir -p node_modules/onnxruntime-web/dist
echo '{"version": "8.8.8"}' > node_modules/onnxruntime-web/package.json
for f in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
  echo "installed $f" > node_modules/onnxruntime-web/dist/$f
done
"""


def test_an_installed_package_gets_onnxruntime_web_from_npm_ci_once_into_the_cache(
    toy_dir, web_dir, tmp_path, monkeypatch
):
    # An installed flaxdigits has web/'s sources as package data but no node_modules.
    shutil.rmtree(web_dir / "node_modules")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("NPM_CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("FLAXDIGITS_CACHE", str(tmp_path / "cache"))
    for n in (1, 2):
        web.build_site(toy_dir, tmp_path / f"site{n}", web_dir=web_dir)
        site = json.loads((tmp_path / f"site{n}" / web.SITE_JSON).read_text())
        assert site["ort"]["version"] == "8.8.8"
        assert (
            (tmp_path / f"site{n}" / "ort" / "ort.wasm.min.mjs").read_text().startswith("installed")
        )
    assert (tmp_path / "calls").read_text().count("called") == 1  # the second build reused it
    cached = list((tmp_path / "cache" / "web").iterdir())
    assert len(cached) == 1 and not cached[0].name.startswith(".")  # no temp folder left


def test_missing_or_tampered_models_are_refused(toy_dir, web_dir, tmp_path):
    with pytest.raises(web.SiteError, match="make all"):
        web.build_site(tmp_path / "nowhere", tmp_path / "site", web_dir=web_dir)
    with pytest.raises(web.SiteError, match=r"mlp\.int8\.onnx"):
        web.build_site(toy_dir, tmp_path / "site", web_dir=web_dir, int8=True)
    models = tmp_path / "models"
    shutil.copytree(toy_dir, models)
    (models / "cnn.json").write_text(
        json.dumps(
            {
                "schema": contract.MANIFEST_SCHEMA,
                "files": [{"file": "cnn.onnx", "size": 1, "sha256": "0" * 64}],
            }
        )
    )
    with pytest.raises(ModelLoadError, match="does not match its manifest"):
        web.build_site(models, tmp_path / "site", web_dir=web_dir)


def test_brush_is_the_gradio_pages(toy_dir):
    from flaxdigits.serve.page.layout import BRUSH_RADIUS

    source = (web.WEB_DIR / "app.js").read_text()
    assert re.search(r"const BRUSH_RADIUS = (\d+);", source).group(1) == str(BRUSH_RADIUS)


def test_package_lock_pins_the_runtime_the_builder_copies():
    package = json.loads((web.WEB_DIR / "package.json").read_text())
    lock = json.loads((web.WEB_DIR / "package-lock.json").read_text())
    wanted = package["dependencies"]["onnxruntime-web"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", wanted), "pin an exact version"
    locked = lock["packages"]["node_modules/onnxruntime-web"]
    assert locked["version"] == wanted and locked["integrity"].startswith("sha512-")


def test_cli_web_without_models_is_one_line(tmp_path, capsys):
    code = cli.main(["web", "--models", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "flaxdigits web: error:" in err


def test_the_site_knows_the_renamed_names_as_the_python_side_does(toy_dir, web_dir, tmp_path):
    web.build_site(toy_dir, tmp_path / "site", web_dir=web_dir)
    site = json.loads((tmp_path / "site" / web.SITE_JSON).read_text())
    assert site["recipes"] == list(contract.RECIPE_NAMES)
    assert site["renamed_recipes"] == contract.RENAMED_RECIPES == {"seed": "original"}
    assert site["preprocess"]["renamed_methods"] == contract.RENAMED_METHODS == {"seed": "box"}


def test_site_ships_the_gate_and_its_drawing_rule_for_web_answer_js(
    gated_toy_dir, toy_dir, web_dir, tmp_path
):
    out = tmp_path / "site"
    written = web.build_site(gated_toy_dir, out, web_dir=web_dir)
    gate_file = f"{web.MODELS_DIR}/{contract.GATE_NAME}.onnx"
    assert gate_file in written
    shipped = (out / gate_file).read_bytes()
    assert shipped == (gated_toy_dir / "gate.onnx").read_bytes()
    gate = json.loads((out / web.SITE_JSON).read_text())["gate"]
    manifest = json.loads((gated_toy_dir / "gate.json").read_text())
    assert gate["file"] == gate_file and gate["bytes"] == len(shipped)
    assert gate["sha256"] == hashlib.sha256(shipped).hexdigest()
    assert gate["drawing_rule"] == manifest["drawing_rule"]["float32"]
    assert 'from "./answer.js"' in (web.WEB_DIR / "app.js").read_text()
    # Without a gate: as before, and site.json says so.
    web.build_site(toy_dir, tmp_path / "plain", web_dir=web_dir)
    assert json.loads((tmp_path / "plain" / web.SITE_JSON).read_text())["gate"] is None
    assert not (tmp_path / "plain" / gate_file).exists()


@pytest.fixture
def gated_copy(gated_toy_dir, tmp_path):
    out = tmp_path / "gated"
    shutil.copytree(gated_toy_dir, out)
    return out


def test_a_stale_drawing_rule_refuses_to_build(gated_copy, web_dir, tmp_path):
    from tests.support.toy_onnx import toy_model_bytes

    # mlp re-exported since the gate's rule was fitted: the rule names other bytes.
    (gated_copy / "mlp.onnx").write_bytes(toy_model_bytes(name="mlp", ink_digit=5))
    with pytest.raises(ModelLoadError, match=r"gate\.onnx: its drawing rule was fitted with other"):
        web.build_site(gated_copy, tmp_path / "site", web_dir=web_dir)
    assert not (tmp_path / "site").exists()


def test_a_gate_without_its_manifest_or_rule_refuses_to_build(gated_copy, web_dir, tmp_path):
    manifest = json.loads((gated_copy / "gate.json").read_text())
    (gated_copy / "gate.json").write_text(json.dumps(manifest | {"drawing_rule": {}}))
    with pytest.raises(ModelLoadError, match="no drawing rule for its float32 file"):
        web.build_site(gated_copy, tmp_path / "site", web_dir=web_dir)
    (gated_copy / "gate.json").unlink()
    with pytest.raises(ModelLoadError, match=r"needs its manifest gate\.json"):
        web.build_site(gated_copy, tmp_path / "site", web_dir=web_dir)
    assert not (tmp_path / "site").exists()


def test_int8_site_ships_the_int8_gate_with_the_int8_rule(exported_like_dir, web_dir, tmp_path):
    from tests.support.toy_onnx import toy_model_bytes

    members = {
        n: hashlib.sha256((exported_like_dir / f"{n}.int8.onnx").read_bytes()).hexdigest()
        for n in contract.MODEL_NAMES
    }
    data = toy_model_bytes(name="cnn", ink_digit=4)
    (exported_like_dir / "gate.int8.onnx").write_bytes(data)
    entry = {"file": "gate.int8.onnx", "size": len(data), "variant": "int8"}
    rule = {"members": members, "not_a_digit_below": 0.25, "validation_rejected": 0.005}
    manifest = {
        "schema": contract.MANIFEST_SCHEMA,
        "model": "gate",
        "files": [entry | {"sha256": hashlib.sha256(data).hexdigest()}],
        "drawing_rule": {"int8": rule},
    }
    (exported_like_dir / "gate.json").write_text(json.dumps(manifest))

    web.build_site(exported_like_dir, tmp_path / "int8", web_dir=web_dir, int8=True)
    site = json.loads((tmp_path / "int8" / web.SITE_JSON).read_text())
    assert site["gate"]["drawing_rule"] == rule
    assert (tmp_path / "int8" / site["gate"]["file"]).read_bytes() == data
    # The float site has no gate of its own variant here: it ships none.
    web.build_site(exported_like_dir, tmp_path / "float", web_dir=web_dir)
    assert json.loads((tmp_path / "float" / web.SITE_JSON).read_text())["gate"] is None
