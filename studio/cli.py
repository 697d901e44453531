"""``facegan-studio``: serve the face studio on 127.0.0.1 (``make studio``).

    facegan-studio                                  # the newest exported generator under processed/models
    facegan-studio --model processed/models/celeba/dcgan-1a2b3c4d5e --port 8000
    FACEGAN_STUDIO_TOKEN=... facegan-studio --host 0.0.0.0   # other machines, with an access token

Without an access token (``--token`` or ``FACEGAN_STUDIO_TOKEN``) it binds only loopback
addresses; behind a reverse proxy see ``python -m studio.deploy`` (docs/studio.md).

A missing or unreadable model, or a missing page dependency, is one line on stderr
and exit status 2; the server is never started half-working. Ctrl+C or SIGTERM stops it
gracefully (requests in flight answered, jobs cancelled, models closed): exit status 0.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from pipeline.console import quiet_start


def parse_args(argv=None) -> argparse.Namespace:
    from studio.jobs import DEADLINE_S

    p = argparse.ArgumentParser(prog="facegan-studio", description="Serve the face studio (edit a face through z).")
    p.add_argument("--model", help="run folder with generator.keras and model_card.json "
                                   "(default: the newest under --models-root)")
    p.add_argument("--models-root", default="processed/models",
                   help="folder searched for exported generators, listed in the model picker (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--token", default=None, help="access token every request must carry (Bearer header, or the "
                                                 "cookie /?token=... sets); needed for a --host other machines "
                                                 "reach (default: $FACEGAN_STUDIO_TOKEN, else none)")
    p.add_argument("--allow-models", default="*", help="model ids served (paths under --models-root), as comma-"
                                                       "separated globs, e.g. 'celeba/*' (default: %(default)s)")
    p.add_argument("--max-batch", type=_at_least_one, default=None,
                   help="most rows in one generator call (default: the engine's: two per OpenVINO stream, 4 on "
                        "TensorFlow; a longer call only makes the requests arriving during it wait longer)")
    p.add_argument("--batch-wait-ms", type=float, default=0.0,
                   help="extra wait for requests to join a batch (default: %(default)s: only those already queued)")
    p.add_argument("--engine", default="auto", choices=("auto", "openvino", "tensorflow"),
                   help="inference engine: auto is OpenVINO when installed (1.8-3.7x faster than TensorFlow per "
                        "face here while the CPU has cores to spare, pixels within a grey level: docs/benchmarks.md), "
                        "else TensorFlow (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"),
                   help="inference precision: auto is float32 on OpenVINO; on TensorFlow bfloat16 where the CPU "
                        "has AVX-512 BF16/AMX (about 2x faster there, pixels within a few levels), else float32 "
                        "(default: %(default)s)")
    p.add_argument("--max-jobs", type=_at_least_one, default=None,
                   help="projections and completions queued or running at once; more are refused with 429 "
                        "(default: the core count, at least 2)")
    p.add_argument("--max-jobs-per-client", type=_at_least_one, default=None,
                   help="a client's share of that queue (default: half of --max-jobs, at least 1)")
    p.add_argument("--job-deadline", type=float, default=DEADLINE_S, metavar="SECONDS",
                   help="a projection or completion still unfinished this long after it was asked for is "
                        "stopped and answered 504 (default: %(default)g)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="server log level; debug also shows TensorFlow's start-up lines (default: %(default)s)")
    args = p.parse_args(argv)
    if not args.job_deadline > 0:
        p.error(f"--job-deadline must be > 0 seconds, got {args.job_deadline:g}")
    return args


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def fail(message: str) -> int:
    print(f"facegan-studio: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    from studio.access import check_host, token_from

    try:
        token = token_from(args.token)
        check_host(args.host, token)
    except ValueError as exc:
        return fail(str(exc))
    quiet_start(verbose=args.log_level == "debug")  # before TensorFlow: no CUDA probe or oneDNN lines
    from studio.app import VUE

    if not VUE.is_file():
        return fail(f"{VUE} is missing: install the page's dependencies with `make studio` "
                    f"(or `npm ci --prefix studio`)")
    root = Path(args.models_root)
    if args.model:
        run = Path(args.model)
        if not run.is_dir():
            return fail(f"--model {run}: no such folder (give a run folder holding generator.keras "
                        f"and model_card.json)")
    else:
        from model.card import newest_run

        try:
            run = newest_run(root, "train one (`make run`) or pass --model <run folder>")
        except FileNotFoundError as exc:
            return fail(str(exc))

    from studio.app import create_app
    from studio.jobs import JobQueue
    from studio.models import ModelRegistry

    try:
        registry = ModelRegistry(root if root.is_dir() else None, run, args.max_batch, args.batch_wait_ms / 1000,
                                 args.precision, args.engine,
                                 tuple(g.strip() for g in args.allow_models.split(",") if g.strip()))
        model = registry.get(None)
    except Exception as exc:  # any load failure is one line, not a traceback
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return fail(f"--model {run}: cannot load the generator: {reason}")

    import uvicorn

    jobs = JobQueue(args.max_jobs, per_client=args.max_jobs_per_client, deadline_s=args.job_deadline)
    app = create_app(registry, jobs)
    if token is not None:
        from studio.access import TokenGate
        app = TokenGate(app, token)
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 only: behind the proxy a client is its real address
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    server = uvicorn.Server(config)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Face studio: http://{host}:{args.port}/  (model {model.id}, {model.card.variant}, "
          f"{model.card.dataset.get('name', '?')}, {model.forward.engine} {model.forward.precision}"
          f"{'; access token required' if token else ''}; Ctrl+C stops)", flush=True)
    # uvicorn shuts down gracefully on Ctrl+C or SIGTERM, then raises the signal again: Ctrl+C
    # would end in a KeyboardInterrupt traceback, and SIGTERM's default action would end the
    # process before the registry closes and before atexit removes TensorFlow's AutoGraph files
    # from the temporary folder. Both signals become a KeyboardInterrupt here, and a clean exit 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run()
    except KeyboardInterrupt:
        return 0
    finally:
        registry.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
