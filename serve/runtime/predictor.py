"""Load an exported flaxdigits ONNX model defensively and predict digits with onnxruntime (CPU).

numpy + onnxruntime only; the `onnx` package, when installed, adds its checker. A model is
refused (ModelLoadError) unless: the file is within the size cap, its sha256 and size match its
manifest entry (when a manifest is used), it holds no external-data references, it passes
onnx.checker (when available) and onnxruntime loads it, its I/O is the flaxdigits.core.contract
(`image` float [N, 28, 28, 1] -> `probabilities` float [N, 10]), its preprocessing spec is known,
and a probe run returns probabilities.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.core.files import ReadError, read_capped
from flaxdigits.serve.runtime import session as onnxrt
from flaxdigits.serve.runtime.onnx_wire import WireError, external_data_refs

MAX_MODEL_BYTES = 64 * 1024 * 1024  # the exported CNN is a few MB
MAX_MANIFEST_BYTES = 1024 * 1024
_CHUNK = 512  # images per onnxruntime call in predict_batch: bounds activation memory
_PROB_TOLERANCE = 0.05  # |sum - 1| allowed for a probe's probabilities (int8 softmax is coarse)


class ModelLoadError(ValueError):
    """The file is not a flaxdigits model this predictor can run safely."""


@dataclass(frozen=True)
class Prediction:
    """The predicted digit, its probability, all ten probabilities ("0".."9"), and the answer
    (contract.ANSWERS: "digit", "not sure" or "not a digit", by the model's answer rule)."""

    digit: int
    confidence: float
    probabilities: tuple[float, ...]  # 10 values
    answer: str = "digit"

    def to_json(self) -> dict:
        """JSON-ready numbers rounded to 6 decimals: the predict CLI's lines, the page's API."""
        return {
            "digit": self.digit,
            "confidence": round(self.confidence, 6),
            "probabilities": [round(p, 6) for p in self.probabilities],
            "answer": self.answer,
        }


class Predictor:
    """An exported model, checked and loaded into an onnxruntime CPU session."""

    def __init__(
        self,
        model_path,
        *,
        threads: int = 1,
        manifest="auto",
        max_bytes: int = MAX_MODEL_BYTES,
    ) -> None:
        """Check and load a model.

        Args:
            model_path: NAME.onnx (or NAME.int8.onnx) written by `flaxdigits export`.
            threads: onnxruntime intra-op threads (0: onnxruntime's default, all cores).
            manifest: "auto" uses NAME.json beside the model if it exists (a lone .onnx file is
                accepted on the structural checks alone, but a manifest that is there must list
                this file with its sha256); a path requires that manifest; None skips it.
            max_bytes: refuse larger model files.

        Raises:
            ModelLoadError: anything wrong with the file, its manifest or its graph; the message
                says what.
            ValueError: threads is negative.
        """
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {threads!r}")
        self.path = Path(model_path)
        data = _read_capped(self.path, max_bytes, what="model file")
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.manifest_entry = self._check_manifest(len(data), manifest)
        refs = _external_data_refs(data, str(self.path))
        if refs:
            names = ", ".join(sorted(r for r in refs if r)[:3]) or "data_location=EXTERNAL"
            raise ModelLoadError(
                f"{self.path}: refers to external data ({names}): "
                "only self-contained models are loaded"
            )
        _onnx_check(data, str(self.path))
        self._session = _session(data, threads, str(self.path))
        try:  # onnxruntime hands names and metadata over as bytes that need not be UTF-8
            meta = self._session.get_modelmeta()
            self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
            self._batch = self._check_io()
        except UnicodeDecodeError as e:
            raise ModelLoadError(
                f"{self.path}: not a valid ONNX model: a name or metadata entry is not UTF-8 "
                f"text ({e.reason} at byte {e.start})"
            ) from None
        self._check_metadata()
        self.name: str = self.metadata.get(contract.META_MODEL) or self.path.name.split(".")[0]
        self._probe()

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, name={self.name!r})"

    # ------------------------------------------------------------------------------ prediction

    def predict(self, image) -> Prediction:
        """Classify one preprocessed image.

        Args:
            image: (28, 28) or (28, 28, 1) float in [0, 1], white digit on black.

        Returns:
            The Prediction (argmax digit, its probability, all ten probabilities).

        Raises:
            ValueError: wrong shape, or values not finite or outside [0, 1].
        """
        image = np.asarray(image)
        if image.shape not in ((28, 28), (28, 28, 1)):
            raise ValueError(f"expected a (28, 28) or (28, 28, 1) image, got {image.shape}")
        probs = self.predict_batch(image[None])[0]
        digit = int(np.argmax(probs))
        confidence = float(probs[digit])
        return Prediction(
            digit=digit,
            confidence=confidence,
            probabilities=tuple(float(p) for p in probs),
            answer=contract.answer(confidence, self.answer_rule),
        )

    def predict_batch(self, images) -> np.ndarray:
        """Probabilities for a batch of preprocessed images.

        Args:
            images: (N, 28, 28) or (N, 28, 28, 1) float in [0, 1], white digits on black.

        Returns:
            (N, 10) float32 probabilities, rows in input order.

        Raises:
            ValueError: wrong shape, or values not finite or outside [0, 1].
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
            raise ValueError(
                f"expected images of shape (N, 28, 28) or (N, 28, 28, 1), got {np.shape(images)}"
            )
        if x.dtype.kind not in "buif":
            raise ValueError(f"expected a numeric image array, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all() or (x.size and (x.min() < 0.0 or x.max() > 1.0)):
            raise ValueError("image values must be finite and in [0, 1] (use preprocess())")
        chunk = self._batch or _CHUNK
        out = [self._run(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One session call; pads to the model's fixed batch size if it has one."""
        n = len(x)
        if self._batch and n < self._batch:
            x = np.concatenate([x, np.zeros((self._batch - n, 28, 28, 1), np.float32)])
        (probs,) = self._session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: x})
        return np.asarray(probs, np.float32)[:n]

    # -------------------------------------------------------------------------------- checks

    def _check_manifest(self, size: int, manifest) -> dict | None:
        """The manifest entry for this file after checking size and sha256, or None."""
        self.manifest: dict | None = None  # the whole manifest, once checked (a gate's rule)
        if manifest is None:
            return None
        if manifest == "auto":
            path = Path(contract.manifest_path_for(str(self.path)))
            if not path.is_file():
                return None
        else:
            path = Path(manifest)
        raw = _read_capped(path, MAX_MANIFEST_BYTES, what="manifest")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, a 5000-digit number,
            # or arrays nested deeper than the parser's recursion limit
            raise ModelLoadError(f"{path}: not a JSON manifest ({e})") from None
        if not isinstance(doc, dict) or doc.get("schema") != contract.MANIFEST_SCHEMA:
            raise ModelLoadError(f"{path}: not a {contract.MANIFEST_SCHEMA} manifest")
        files = doc.get("files")
        entries = [e for e in files if isinstance(e, dict)] if isinstance(files, list) else []
        entry = next((e for e in entries if e.get("file") == self.path.name), None)
        if entry is None:
            raise ModelLoadError(f"{path}: does not list {self.path.name}; re-export the model")
        if entry.get("size") != size or entry.get("sha256") != self.sha256:
            raise ModelLoadError(
                f"{self.path}: sha256 {self.sha256[:16]}… ({size} bytes) does not match its "
                f"manifest {path.name} ({str(entry.get('sha256'))[:16]}…, {entry.get('size')} "
                "bytes): the file was modified or truncated; re-export or restore it"
            )
        self.manifest = doc
        return entry

    def _check_io(self) -> int | None:
        """Check the graph I/O against contract.py; the fixed batch size, or None if dynamic."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        where = f"{self.path}: not a flaxdigits model:"
        if len(inputs) != 1 or inputs[0].name != contract.INPUT_NAME:
            names = [i.name for i in inputs]
            raise ModelLoadError(f"{where} inputs {names}, expected [{contract.INPUT_NAME!r}]")
        shape = list(inputs[0].shape)
        if inputs[0].type != "tensor(float)" or len(shape) != 4 or shape[1:] != [28, 28, 1]:
            raise ModelLoadError(
                f"{where} input {contract.INPUT_NAME!r} is {inputs[0].type} {shape}, "
                "expected tensor(float) [N, 28, 28, 1]"
            )
        out = next((o for o in outputs if o.name == contract.OUTPUT_NAME), None)
        if out is None:
            names = [o.name for o in outputs]
            raise ModelLoadError(f"{where} outputs {names}, expected {contract.OUTPUT_NAME!r}")
        # Output dims may be symbolic in a valid export; the probe run checks the real (1, 10).
        shape = list(out.shape or [])
        if out.type != "tensor(float)" or (
            shape and (len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != 10))
        ):
            raise ModelLoadError(
                f"{where} output {contract.OUTPUT_NAME!r} is {out.type} {shape}, "
                "expected tensor(float) [N, 10]"
            )
        batch = shape[0]
        return batch if isinstance(batch, int) and batch > 0 else None

    def _check_metadata(self) -> None:
        """Refuse a preprocessing spec or label set this serve code does not implement."""
        pre = self.metadata.get(contract.META_PREPROCESSING)
        if pre is None:
            raise ModelLoadError(
                f"{self.path}: no {contract.META_PREPROCESSING} metadata: not a flaxdigits export"
            )
        if pre not in contract.KNOWN_PREPROCESSING_SPECS:
            known = ", ".join(sorted(contract.KNOWN_PREPROCESSING_SPECS))
            raise ModelLoadError(
                f"{self.path}: expects preprocessing {pre!r}, but this version of flaxdigits "
                f"implements only {known}: upgrade flaxdigits or re-export the model"
            )
        labels = self.metadata.get(contract.META_LABELS)
        if labels is not None:
            try:
                parsed = json.loads(labels)
            except (ValueError, RecursionError):  # see _check_manifest
                parsed = None
            if parsed != list(contract.LABELS):
                shown = labels if len(labels) <= 80 else labels[:80] + "…"
                raise ModelLoadError(
                    f"{self.path}: labels {shown!r}, expected {json.dumps(list(contract.LABELS))}"
                )
        self.answer_rule: dict | None = self._answer_rule()

    def _answer_rule(self) -> dict | None:
        """The file's answer rule (contract.META_ANSWER_RULE), None in a file from before it."""
        raw = self.metadata.get(contract.META_ANSWER_RULE)
        if raw is None:
            return None
        try:
            return contract.check_answer_rule(json.loads(raw))
        except (ValueError, RecursionError) as e:  # json's errors are ValueErrors
            raise ModelLoadError(f"{self.path}: a bad {contract.META_ANSWER_RULE}: {e}") from None

    def _probe(self) -> None:
        """One run on a blank image: the output must be 10 finite probabilities summing to 1."""
        try:
            probs = self._run(np.zeros((1, 28, 28, 1), np.float32))
        except Exception as e:  # onnxruntime raises its own non-ValueError types
            raise ModelLoadError(f"{self.path}: onnxruntime cannot run the model: {e}") from None
        if (
            probs.shape != (1, 10)
            or not np.isfinite(probs).all()
            or probs.min() < 0
            or abs(float(probs.sum()) - 1.0) > _PROB_TOLERANCE
        ):
            raise ModelLoadError(
                f"{self.path}: output {contract.OUTPUT_NAME!r} is not a probability vector "
                f"(got shape {probs.shape}, sum {float(probs.sum()):.3g})"
            )


# ---------------------------------------------------------------------------------- helpers


def _read_capped(path: Path, max_bytes: int, what: str) -> bytes:
    """A whole file of at most max_bytes (files.read_capped), refused if empty."""
    try:
        data = read_capped(path, max_bytes, what)
    except ReadError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    if not data:
        raise ModelLoadError(f"{path}: empty file")
    return data


def _onnx_check(data: bytes, where: str) -> None:
    """onnx.checker on the parsed model, when the onnx package is installed."""
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as e:  # DecodeError, ValidationError, ...: all mean "not a valid model"
        raise ModelLoadError(f"{where}: not a valid ONNX model: {_first_line(e)}") from None


def _session(data: bytes, threads: int, where: str):
    """An onnxruntime CPU session over the bytes we checked (no second read of the file)."""
    try:
        return onnxrt.session(data, threads)
    except Exception as e:  # onnxruntime's Fail/InvalidGraph/InvalidProtobuf are not ValueErrors
        reason = _first_line(e)
        raise ModelLoadError(f"{where}: onnxruntime cannot load the model: {reason}") from None


def _external_data_refs(data: bytes, where: str) -> set[str]:
    """onnx_wire.external_data_refs, a malformed file refused as a ModelLoadError."""
    try:
        return external_data_refs(data)
    except WireError as e:
        raise ModelLoadError(f"{where}: not a valid ONNX file ({e})") from None


def _first_line(e: Exception) -> str:
    """The first line of an exception's message (parsers' messages run to many), or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def model_files(directory, *, gate: bool = False) -> list[Path]:
    """The .onnx files in a models directory, float models before their int8 variants; the
    gate's (contract.GATE_NAME: it answers no digits shown to anyone) only with gate=True."""
    paths = sorted(Path(directory).glob("*.onnx"))
    if not gate:
        paths = [p for p in paths if p.name.split(".")[0] != contract.GATE_NAME]
    return sorted(paths, key=lambda p: (p.name.split(".")[0], ".int8." in p.name))
