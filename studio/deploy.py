"""Deployment files for serving the studio to other people: a systemd unit and an nginx site.

    python -m studio.deploy systemd --workdir /srv/facegan --user facegan > facegan-studio.service
    python -m studio.deploy nginx --server-name faces.example.org --tls-cert /etc/ssl/faces.pem \\
        --tls-key /etc/ssl/faces.key > facegan-studio.conf

The templates are deploy/facegan-studio.service and deploy/nginx-facegan-studio.conf
(``string.Template``: ``${name}``, ``$$`` for nginx's own variables). The studio listens on
127.0.0.1 only; nginx is the door from outside (TLS, body cap, the client's address in
X-Forwarded-For, which uvicorn trusts from 127.0.0.1, so per-client limits see real clients).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).resolve().parents[1] / "deploy"
FILES = {"systemd": "facegan-studio.service", "nginx": "nginx-facegan-studio.conf"}


def render(kind: str, **values) -> str:
    """The ``kind`` (``systemd`` or ``nginx``) file with ``values`` filled in; a missing value
    is a ``KeyError`` naming it."""
    if kind not in FILES:
        raise ValueError(f"deployment file kind must be one of {tuple(FILES)}, got {kind!r}")
    return Template((TEMPLATES / FILES[kind]).read_text()).substitute(values)


def systemd_values(args) -> dict:
    executable = args.executable or shutil.which("facegan-studio") or str(Path(sys.executable).parent /
                                                                          "facegan-studio")
    return {"user": args.user, "workdir": args.workdir, "env_file": args.env_file, "executable": executable,
            "port": args.port, "models_root": args.models_root, "allow_models": args.allow_models,
            "memory_max": args.memory_max}


def nginx_values(args) -> dict:
    tls = ""
    if args.tls_cert:
        tls = f"ssl_certificate {args.tls_cert};\n    ssl_certificate_key {args.tls_key};"
    return {"listen": "443 ssl" if args.tls_cert else "80", "server_name": args.server_name, "tls": tls,
            "port": args.port, "read_timeout": args.read_timeout}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.deploy", description=__doc__.split("\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    unit = kinds.add_parser("systemd", help="a systemd unit running facegan-studio on 127.0.0.1")
    unit.add_argument("--workdir", required=True, help="the project folder (processed/models under it)")
    unit.add_argument("--user", default="facegan", help="the account it runs as (default: %(default)s)")
    unit.add_argument("--env-file", default="/etc/facegan/studio.env",
                      help="file holding FACEGAN_STUDIO_TOKEN=... (default: %(default)s)")
    unit.add_argument("--executable", help="facegan-studio's path (default: the one on PATH or beside python)")
    unit.add_argument("--models-root", default="processed/models", help="runs served (default: %(default)s)")
    unit.add_argument("--allow-models", default="*", help="model ids served, comma-separated globs "
                                                          "(default: %(default)s)")
    unit.add_argument("--memory-max", default="8G", help="systemd MemoryMax (default: %(default)s)")
    site = kinds.add_parser("nginx", help="an nginx site proxying to the studio")
    site.add_argument("--server-name", required=True, help="the host name clients use")
    site.add_argument("--tls-cert", help="certificate file (with --tls-key: HTTPS on 443; else HTTP on 80)")
    site.add_argument("--tls-key", help="its private key")
    site.add_argument("--read-timeout", type=int, default=120, help="seconds nginx waits for the studio "
                                                                    "(default: %(default)s; above the job deadline)")
    for sub in (unit, site):
        sub.add_argument("--port", type=int, default=8000, help="the studio's port (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.kind == "nginx" and bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    values = systemd_values(args) if args.kind == "systemd" else nginx_values(args)
    sys.stdout.write(render(args.kind, **values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
