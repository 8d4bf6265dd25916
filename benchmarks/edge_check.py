"""arm64 check under emulation: the edge install of flaxdigits on Debian arm64 reads a release
exactly as this machine does.

    python -m benchmarks.edge_check --release dist/flaxdigits-models-*.tar.gz   (make edge-check)

1. A Debian arm64 root filesystem from Debian's own packages (mmdebstrap --variant=extract:
   python3 and its standard library; nothing runs at build time, so no binfmt is needed).
2. The aarch64 wheels of the edge side, at the versions installed here (numpy, Pillow,
   onnxruntime and their dependencies), downloaded on this machine with
   `pip download --platform manylinux_2_28_aarch64 --only-binary :all:`; flaxdigits itself as a
   pure-Python wheel built here. Inside the root filesystem, under qemu-user, a venv and
   `pip install --no-index flaxdigits[edge]` from those wheels: pip on the arm64 interpreter
   decides whether the wheels fit its platform and glibc.
3. `python -m flaxdigits predict --json` (the `flaxdigits` CLI) on the release, for each of its
   model files (mlp and cnn, float and int8, and the gate's gate.onnx and gate.int8.onnx; a
   file the release lacks is named, not run), over the test corpus (tests/corpus) and N MNIST
   test digits written as PNG files, on arm64 (qemu-user, `-cpu cortex-a72`: the Raspberry Pi
   4's core, so an instruction it lacks is an illegal instruction here too) and on this machine.
4. Compared file by file (benchmarks/edge_compare.py): the same files fail with the same
   message; float files: identical argmax and max |dp| <= 1e-5; int8 files: argmax agreement
   and max |dp| reported. The JSON lines carry probabilities rounded to 6 decimals: |dp| is
   resolved to 1e-6.
5. For mlp and cnn under a gate (the gate of the variant in the release: predict applies the
   drawing rule), the `drawing` of every predicted file on both sides: float: the same "not a
   digit" answers, the same models' answers and max |d score| <= 1e-5; int8: agreement and max
   |d score| reported. A release without a gate (older releases) is checked as before, and the
   output says that the gate was not checked.

Timings under emulation are the emulator's, never a board's speed. Cached under .cache/edge:
the root filesystem tarball (by suite and packages) and the wheels (by pinned versions). Needs
root (chroot) and mmdebstrap + qemu-user-static (installed with apt-get when missing).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.edge_compare import compare, compare_drawing, summary_line
from flaxdigits.core import contract
from flaxdigits.release import reader

ROOT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3 and what the wheels link against beyond glibc (numpy and onnxruntime: libstdc++).
PACKAGES = ("python3", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "ca-certificates")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
EDGE_PINS = ("numpy", "pillow", "onnxruntime")
QEMU = "/usr/bin/qemu-aarch64-static"
QEMU_CPU = "cortex-a72"  # Raspberry Pi 4
# Every variant's file of the served models, then of the gate (contract.model_file).
MODEL_FILES = tuple(
    contract.model_file(n, v) for n in ("cnn", "mlp") for v in contract.VARIANT_SUFFIXES
)
GATE_FILES = tuple(contract.model_file(contract.GATE_NAME, v) for v in contract.VARIANT_SUFFIXES)
IMAGE_DIRS = ("images/corpus", "images/mnist")


def log(message: str) -> None:
    print(f"[edge-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)  # noqa: S603 - fixed tools, our arguments


def ensure_tools() -> None:
    """mmdebstrap and qemu-user-static from apt when missing (root only)."""
    missing = [t for t in ("mmdebstrap", QEMU) if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"edge-check: needs {missing} (apt-get install mmdebstrap qemu-user-static)")
    log(f"installing {missing} with apt-get")
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "mmdebstrap", "qemu-user-static"])


def rootfs_tarball(cache: Path) -> Path:
    """The arm64 root filesystem as a tarball, built once per (suite, packages)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    tarball = cache / f"rootfs-{SUITE}-arm64-{key}.tar"
    if not tarball.exists():
        log(f"building the Debian {SUITE} arm64 root filesystem (mmdebstrap)")
        partial = tarball.with_suffix(".partial.tar")
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=extract",
                "--arch=arm64",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(partial),
                MIRROR,
            ]
        )
        partial.rename(tarball)
    return tarball


def pins() -> list[str]:
    """The edge side's packages at the versions installed here: x86 and arm64 run the same."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in EDGE_PINS]


def wheels(cache: Path) -> Path:
    """aarch64 wheels of the pinned edge side (+ pip), downloaded once per pin set; flaxdigits'
    own pure-Python wheel rebuilt every run."""
    wanted = pins() + ["pip"]
    key = hashlib.sha256(" ".join(wanted + list(PLATFORMS)).encode()).hexdigest()[:12]
    folder = cache / f"wheels-{key}"
    if not (folder / ".complete").exists():
        log(f"downloading aarch64 wheels: {' '.join(wanted)}")
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:"]
            + platforms
            + ["--python-version", PYTHON_VERSION, "--implementation", "cp", "-d", str(folder)]
            + wanted
        )
        (folder / ".complete").touch()
    own = folder / "own"
    shutil.rmtree(own, ignore_errors=True)
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(own), str(ROOT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # setuptools' deprecation banners; a failure still raises
    )
    return folder


def mnist_pngs(folder: Path, n: int) -> None:
    """The first n MNIST test digits as PNG files NNNNN-LABEL.png (white on black, as MNIST)."""
    from PIL import Image

    from flaxdigits.data.mnist import load_mnist

    mnist = load_mnist()
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(
        zip(mnist.test_images[:n], mnist.test_labels[:n], strict=True)
    ):
        path = folder / f"{i:05d}-{label}.png"
        if not path.exists():
            Image.fromarray(image).save(path)


def in_root(root: Path, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an arm64 program inside root under qemu-user (chroot, cwd /work)."""

    def enter():
        os.chroot(root)
        os.chdir("/work")

    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
    return subprocess.run(  # noqa: S603 - the emulator on our own arguments
        [QEMU, "-cpu", QEMU_CPU, *args],
        preexec_fn=enter,  # this script runs one thread: preexec_fn is safe here
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def predict(cmd: list[str], cwd: Path | None, root: Path | None, file: str) -> dict:
    """One `flaxdigits predict --json` run over IMAGE_DIRS: {path: record}, seconds."""
    args = cmd + ["predict", "--json", "--threads", "1", "--model", "release.tar.gz"]
    args += ["--release-file", file, *IMAGE_DIRS]
    start = time.perf_counter()
    if root is None:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and CLI
            args, cwd=cwd, capture_output=True, text=True, check=False
        )
    else:
        proc = in_root(root, args)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not proc.stdout:
        raise SystemExit(f"edge-check: predict {file} failed ({proc.returncode}): {proc.stderr}")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return {"records": {r["file"]: r for r in records}, "seconds": round(seconds, 1)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.edge_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--release", required=True, help="dist/flaxdigits-models-*.tar.gz")
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "edge"))
    parser.add_argument("--digits", type=int, default=1000, help="MNIST test digits as PNG")
    parser.add_argument("--out", default=str(ROOT / "reports" / "edge_check.json"))
    return parser


def prepare_root(cache: Path, release: str, digits: int) -> Path:
    """A fresh arm64 root under cache: Debian's files, the emulator, the wheels, and in /work
    the release and the images (the test corpus, `digits` MNIST test digits)."""
    tarball = rootfs_tarball(cache)
    wheel_dir = wheels(cache)
    root = cache / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    run(["tar", "-xf", str(tarball), "-C", str(root)])
    shutil.copy2(QEMU, root / "usr/bin/qemu-aarch64-static")
    shutil.copytree(wheel_dir, root / "wheels")
    work = root / "work"
    work.mkdir()
    shutil.copy2(release, work / "release.tar.gz")
    shutil.copytree(ROOT / "tests" / "corpus", work / "images" / "corpus")
    mnist_pngs(work / "images" / "mnist", digits)
    return root


# Printed by the arm64 venv's interpreter: platform, glibc, Python, installed distributions, and
# whether JAX or Flax came in.
_PROBE = (
    "import platform, sys, importlib.metadata as m; "
    "print(platform.machine(), platform.libc_ver()[1], platform.python_version(), "
    "sorted(d.metadata['Name'] for d in m.distributions()), "
    "any(n.split('.')[0] in ('jax', 'flax') for n in sys.modules))"
)


def install_edge(root: Path) -> str:
    """flaxdigits[edge] into a venv inside root, from the wheels only; what the venv reports."""
    log("installing flaxdigits[edge] inside arm64 (qemu-user): venv + pip --no-index")
    pip = next((root / "wheels").glob("pip-*.whl")).name
    own = next((root / "wheels" / "own").glob("flaxdigits-*.whl")).name
    steps = [
        ["/usr/bin/python3", "-m", "venv", "--without-pip", "/opt/edge"],
        ["/opt/edge/bin/python", f"/wheels/{pip}/pip", "install", "--quiet", "--no-index"]
        + ["--no-compile", "--find-links", "/wheels", f"/wheels/own/{own}[edge]"],
    ]
    for step in steps:
        proc = in_root(root, step)
        if proc.returncode:
            sys.exit(f"edge-check: {' '.join(step)} failed: {proc.stdout}{proc.stderr}")
    arm_env = in_root(root, ["/opt/edge/bin/python", "-c", _PROBE]).stdout.strip()
    log(f"arm64 venv: {arm_env}")
    return arm_env


def release_files(release: str) -> set[str]:
    """The file names under models/ of the release (verified: a broken release stops here)."""
    files = reader.read_release(release).files
    return {name.removeprefix("models/") for name in files if name.startswith("models/")}


def check_model(root: Path, file: str, gate: bool) -> tuple[dict, dict]:
    """One model file predicted on both sides: the comparison (with the arm64 MNIST accuracy and
    both times; for mlp and cnn, the drawing rule's, under the gate when `gate`), and the count
    of images of each folder."""
    work = root / "work"
    log(f"{file}: x86_64")
    x86 = predict([sys.executable, "-m", "flaxdigits"], work, None, file)
    images = {d: sum(f.startswith(d) for f in x86["records"]) for d in IMAGE_DIRS}
    log(f"{file}: arm64 (emulated)")
    arm = predict(["/opt/edge/bin/python", "-m", "flaxdigits"], None, root, file)
    is_float = contract.variant_of(file) == "float32"
    result = compare(x86["records"], arm["records"], is_float=is_float)
    if not file.startswith(contract.GATE_NAME + "."):
        result["drawing"] = compare_drawing(
            x86["records"], arm["records"], is_float=is_float, gate=gate
        )
    mnist = [
        (r, int(Path(f).name.split("-")[1][0]))
        for f, r in arm["records"].items()
        if f.startswith("images/mnist/") and "digit" in r
    ]
    result["arm64_mnist_accuracy"] = sum(r["digit"] == y for r, y in mnist) / max(1, len(mnist))
    result["seconds"] = {"x86_64": x86["seconds"], "arm64_emulated": arm["seconds"]}
    log(f"{file}: {json.dumps(result)}")
    return result, images


def main(argv=None) -> int:
    """Build the arm64 root, install the edge side in it, compare every model file of the
    release (the gate's too); 1 if a float file or its drawing rule differs, or a file is refused
    or drawn on one side only."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    if platform.machine() not in ("x86_64", "AMD64"):
        sys.exit("edge-check: compares arm64 under emulation with an x86_64 host")
    in_release = release_files(args.release)
    files = files_to_check(in_release)
    if not any(f in MODEL_FILES for f in files):
        sys.exit(f"edge-check: {args.release} has none of {', '.join(MODEL_FILES)}")
    ensure_tools()
    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    root = prepare_root(cache, args.release, args.digits)
    setup_start = time.perf_counter()
    arm_env = install_edge(root)
    install_s = time.perf_counter() - setup_start
    report = {
        "what": "flaxdigits predict --json, arm64 under qemu-user emulation vs this x86_64 host",
        "emulation": f"qemu-user {QEMU_CPU} (timings are the emulator's, not a board's speed)",
        "release": Path(args.release).name,
        "rootfs": f"Debian {SUITE} arm64 ({', '.join(PACKAGES)})",
        "pins": pins(),
        "arm64_environment": arm_env,
        "not_in_release": [f for f in MODEL_FILES + GATE_FILES if f not in in_release],
        "gate": gate_status(files),
        "images": {},
        "models": {},
    }
    for file, gated in files.items():
        report["models"][file], report["images"] = check_model(root, file, gated)
    report["seconds"] = {
        "install_emulated": round(install_s, 1),
        "total": round(time.perf_counter() - start, 1),
    }
    ok = all(m["ok"] and m.get("drawing", {"ok": True})["ok"] for m in report["models"].values())
    report["ok"] = ok
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for file, m in report["models"].items():
        print(summary_line(file, m))
    if report["not_in_release"]:
        print(f"not in the release, not checked: {', '.join(report['not_in_release'])}")
    print(report["gate"])
    print(f"edge-check: {'ok' if ok else 'FAILED'} in {report['seconds']['total']} s -> {args.out}")
    return 0 if ok else 1


def files_to_check(in_release: set[str]) -> dict[str, bool]:
    """The model files of MODEL_FILES and GATE_FILES that the release holds, each with whether
    the gate of its variant lies beside it (predict then applies the drawing rule to mlp and
    cnn)."""
    files = [f for f in MODEL_FILES + GATE_FILES if f in in_release]
    gate = {f: contract.model_file(contract.GATE_NAME, contract.variant_of(f)) for f in files}
    return {f: gate[f] in in_release for f in files}


def gate_status(files) -> str:
    """What the output says about the gate: checked (which files), or not checked."""
    gates = [f for f in files if f in GATE_FILES]
    if not gates:
        return "gate: not checked (the release has no gate: a release from before it)"
    return f"gate: checked ({', '.join(gates)}, and the drawing rule of mlp and cnn beside it)"


if __name__ == "__main__":
    sys.exit(main())
