"""The `flaxdigits` command: parses arguments and calls one library function per subcommand.

The arguments are declared in `flaxdigits.cli.parser`; here, one `_cmd_*` handler per subcommand
(`HANDLERS`) and `main`, which turns expected failures into one line and an exit status. Heavy
imports (JAX, onnxruntime, gradio) happen inside the subcommand that needs them, so
`flaxdigits predict` on a board without JAX never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flaxdigits.cli.parser import build_parser

# 128 + SIGPIPE: what a shell reports for a command its downstream reader closed on.
EXIT_BROKEN_PIPE = 141


def _cmd_data(args: argparse.Namespace) -> int:
    from flaxdigits.data.mnist import load_mnist

    mnist = load_mnist(args.source, data_dir=args.data_dir, tfds_dir=args.tfds_dir, log=print)
    print(
        f"train {mnist.train_images.shape} {mnist.train_images.dtype}, "
        f"test {mnist.test_images.shape} {mnist.test_images.dtype} from {mnist.source}"
    )
    return 0


def _train_config(args: argparse.Namespace):
    from flaxdigits.training.config import TrainConfig

    return TrainConfig.for_recipe(
        args.recipe,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from flaxdigits.training import distributed

    config = _train_config(args)  # a bad flag fails before the job forms
    if args.distributed or args.coordinator is not None:
        job = distributed.Job(
            coordinator=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            join_timeout_s=args.join_timeout,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
        distributed.join(job)
    elif args.num_processes is not None or args.process_id is not None:
        raise ValueError("--num-processes and --process-id need --coordinator (or --distributed)")
    from flaxdigits.data.mnist import load_mnist, subset
    from flaxdigits.training.train import train

    main_process = distributed.process_index() == 0  # the one that logs and writes metrics
    mnist = load_mnist(args.source, log=print if main_process else lambda _: None)
    metrics = train(
        config,
        Path(args.out),
        data=mnist if args.limit is None else subset(mnist, args.limit),
        resume=args.resume,
        snapshot_epochs=args.snapshot_epochs,
        devices=args.devices,
        tensorboard=not args.no_tensorboard,
    )
    if not main_process:
        return 0
    print(
        f"{metrics['model']}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"train accuracy {metrics['train_accuracy']:.4f}, "
        f"{metrics['seconds_per_epoch']:.1f} s/epoch -> {Path(args.out) / 'metrics.json'}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from flaxdigits.runs import evaluate_run, format_evaluation

    result = evaluate_run(Path(args.run_dir), data_source=args.source)
    print(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from flaxdigits.report.compare import compare

    path = compare(
        epochs=args.epochs,
        seeds=args.seeds,
        batch_size=args.batch_size,
        out=Path(args.out),
        data_source=args.source,
        runs_dir=Path(args.runs),
        robust_runs_dir=Path(args.robust_runs) if args.robust_runs else None,
    )
    print(f"report: {path}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from flaxdigits.runs import migrate_run

    migrate_run(Path(args.run_dir))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from flaxdigits.export.onnx_export import export_run

    manifest = export_run(Path(args.run_dir), Path(args.out), int8=args.int8)
    for entry in manifest["files"]:
        print(
            f"{entry['file']}: {entry['size']} bytes, test accuracy "
            f"{entry['test_accuracy']:.4f}, sha256 {entry['sha256'][:12]}…"
        )
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from flaxdigits.export.latency import benchmark, format_rows

    print(format_rows(benchmark([Path(p) for p in args.models], args.batch, args.threads)))
    return 0


def _cmd_compat(args: argparse.Namespace) -> int:
    from flaxdigits.export.compat import check_files

    report = check_files(args.python, [Path(p) for p in args.models], args.images)
    print(json.dumps(report, indent=2))
    return 0 if all(f["loads"] for f in report["files"].values()) else 1


def _cmd_canvas_eval(args: argparse.Namespace) -> int:
    from flaxdigits.evaluation import canvases as canvas_eval

    outs = args.out or ["reports/canvas_accuracy.json"]
    if len(outs) != len(args.models):
        raise ValueError(
            f"{len(args.models)} --models directories but {len(outs)} --out reports: "
            "give one --out per directory, in the same order"
        )
    canvas_eval.run(
        [Path(d) for d in args.models],
        [Path(o) for o in outs],
        limit=args.limit,
        seed=args.seed,
        workers=args.workers,
    )
    return 0


def _cmd_robustness(args: argparse.Namespace) -> int:
    from flaxdigits.evaluation import robustness

    robustness.run(
        [Path(d) for d in args.models], Path(args.out), limit=args.limit, workers=args.workers
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from flaxdigits.serve.predict import predict_files
    from flaxdigits.serve.runtime.decode import configure_pillow

    configure_pillow()  # pixel cap and decoder allow-list for this process
    return predict_files(
        args.model,
        args.files,
        method=args.preprocess,
        as_json=args.json,
        threads=args.threads,
        release_file=args.release_file,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from flaxdigits.release import reader as release
    from flaxdigits.serve.page import hosting

    try:
        from flaxdigits.serve.page.app import launch
    except ImportError as e:  # the edge install: no gradio
        raise RuntimeError(f"the page needs {e.name}: pip install 'flaxdigits[serve]'") from None

    host, port, warning = hosting.bind(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)
    # A release is verified, its models loaded from a private copy, and the copy removed before
    # the page serves (the predictors hold what they read).
    with release.models_dir(args.models) as models:
        demo = launch(
            models_dir=models,
            host=host,
            port=port,
            share=args.share,
            threads=args.threads,
            block=False,
            # absent: launch reads $FLAXDIGITS_TRUSTED_PROXIES
            **({"trusted_proxies": args.trusted_proxy} if args.trusted_proxy else {}),
        )
    demo.block_thread()  # until Ctrl-C, as Blocks.launch blocks; it closes the server
    _exit_within(SHUTDOWN_S)
    return 0


# After Ctrl-C the page's process ends within this many seconds, even when a thread that Gradio or
# a request left behind would hold interpreter shutdown open.
SHUTDOWN_S = 10.0


def _exit_within(seconds: float) -> None:
    """A daemon timer that ends the process if interpreter shutdown still runs after seconds.

    It acts only once the main thread has stopped (Python is joining the other threads at exit);
    a caller that goes on running (a test calling main()) is left alone. Before exiting it prints
    every thread's stack, so a hang says where it was.
    """
    import faulthandler
    import threading

    def give_up() -> None:
        if threading.main_thread().is_alive():
            return
        print(f"shutdown took over {seconds:.0f} s; the threads holding it:", file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(130)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


def _cmd_release(args: argparse.Namespace) -> int:
    from flaxdigits.export.release import build_release

    build_release(
        args.models,
        args.out,
        reports_dir=args.reports,
        version=args.version,
        latency=not args.no_latency,
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from flaxdigits.release.reader import read_release

    verified = read_release(args.release)
    total = sum(len(data) for data in verified.files.values())
    of = "its SHA256SUMS" if Path(args.release).is_dir() else "the archive"
    print(
        f"{args.release}: {verified.name}: {len(verified.files)} files, {total:,} bytes, "
        f"every sha256 matches; sha256 of {of}: {verified.sha256}"
    )
    return 0


def _cmd_space(args: argparse.Namespace) -> int:
    from flaxdigits.export.space import build_space

    out = build_space(args.release, args.out)
    print(
        f"{out}: app.py, requirements.txt, README.md, release/, flaxdigits/ "
        f"(run: python {out / 'app.py'})"
    )
    return 0


def _cmd_web(args: argparse.Namespace) -> int:
    from flaxdigits.export.site import build_site
    from flaxdigits.release import reader as release

    with release.models_dir(args.models) as models:  # a release: verified before it is read
        written = build_site(models, args.out, int8=args.int8)
    print(f"{args.out}: {len(written)} files, {sum(written.values()):,} bytes (static site)")
    return 0


# Subcommand -> handler: every subcommand cli_parser declares, and nothing else (tests/test_cli.py).
HANDLERS = {
    "data": _cmd_data,
    "train": _cmd_train,
    "migrate": _cmd_migrate,
    "evaluate": _cmd_evaluate,
    "compare": _cmd_compare,
    "export": _cmd_export,
    "benchmark": _cmd_benchmark,
    "compat": _cmd_compat,
    "canvas-eval": _cmd_canvas_eval,
    "robustness": _cmd_robustness,
    "predict": _cmd_predict,
    "serve": _cmd_serve,
    "web": _cmd_web,
    "release": _cmd_release,
    "verify": _cmd_verify,
    "space": _cmd_space,
}


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that the interpreter's exit-time flush of the
    closed pipe cannot raise again. A stdout that is no real file (tests' StringIO) is left be."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # None, or io.UnsupportedOperation
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; expected failures print one line, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`flaxdigits predict *.png | head -1`): stop quietly
        # with the shell's SIGPIPE status, as coreutils do.
        if os.environ.get("FLAXDIGITS_DEBUG"):
            raise
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (OSError, ValueError, RuntimeError) as e:
        # Our errors (MNISTError, CheckpointError, ExportError, ModelLoadError, ...) subclass
        # these and carry a message that says what to do. FLAXDIGITS_DEBUG=1: the traceback.
        if os.environ.get("FLAXDIGITS_DEBUG"):
            raise
        print(f"flaxdigits {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
