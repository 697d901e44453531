"""The deployment files (studio/deploy.py): rendered, and checked by the real tools that read
them, systemd-analyze for the unit and nginx -t for the site."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from components import require

from studio.deploy import main, render

SCRIPTS = Path(sys.executable).parent


def _render(capsys, argv) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_systemd_unit_is_valid_and_keeps_the_studio_on_loopback(tmp_path, capsys):
    unit = _render(capsys, ["systemd", "--workdir", str(tmp_path), "--user", "root",
                            "--executable", str(SCRIPTS / "facegan-studio"), "--allow-models", "celeba/*"])
    assert "${" not in unit and "--host 127.0.0.1" in unit and "--allow-models celeba/*" in unit
    assert "EnvironmentFile=/etc/facegan/studio.env" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on this machine")
    (tmp_path / "studio.env").write_text("FACEGAN_STUDIO_TOKEN=x\n")
    path = tmp_path / "facegan-studio.service"
    path.write_text(unit.replace("/etc/facegan/studio.env", str(tmp_path / "studio.env")))
    out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if str(path) in line
                and any(word in line for word in ("Unknown", "Invalid", "Failed", "not executable",
                                                  "Missing", "bad"))]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr


@pytest.mark.parametrize("tls", [False, True])
def test_nginx_site_passes_nginx_t(tmp_path, capsys, tls):
    argv = ["nginx", "--server-name", "faces.example.org", "--port", "8123"]
    if tls:
        cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=faces",
                        "-keyout", str(key), "-out", str(cert), "-days", "1"], check=True, capture_output=True)
        argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    site = _render(capsys, argv)
    assert "proxy_pass http://127.0.0.1:8123;" in site and "$host" in site and "${" not in site
    assert ("listen 443 ssl;" in site) == tls
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        require("nginx", "no nginx binary: apt-get install nginx-light (make test installs it)")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  include {tmp_path}/site.conf;\n}}\n")
    out = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_missing_value_names_it():
    with pytest.raises(KeyError, match="server_name"):
        render("nginx", listen="80", tls="", port=8000, read_timeout=120)
    with pytest.raises(ValueError, match="must be one of"):
        render("apache")
