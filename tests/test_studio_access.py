"""Serving other people (studio/access.py, --allow-models): the access token on a real server on
127.0.0.1, the rule that keeps a token-less studio on loopback, and which runs are exposed."""
from __future__ import annotations

import pytest
import requests
from studio_runs import make_run, serving

from studio.access import COOKIE, TokenGate, check_host, is_loopback, token_from

TOKEN = "a-long-enough-test-token-0123"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"root": root, "a": make_run(root / "celeba" / "dcgan-a"), "b": make_run(root / "mnist" / "dcgan-b")}


@pytest.fixture(scope="module")
def server(runs):
    from studio.app import create_app
    from studio.models import ModelRegistry

    registry = ModelRegistry(runs["root"], runs["a"], allow=("celeba/*",))
    registry.get(None)
    with serving(TokenGate(create_app(registry), TOKEN)) as (url, _, session):
        yield {"url": url, "http": session, "registry": registry}
    registry.close()


def test_without_the_token_only_health_answers(server):
    http, url = server["http"], server["url"]
    assert http.get(f"{url}/api/health").status_code == 200
    for path in ("/", "/api/model", "/api/models"):
        r = requests.get(f"{url}{path}", proxies={"http": None})
        assert r.status_code == 401 and "access token" in r.json()["error"], path
    wrong = requests.get(f"{url}/api/model", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"},
                         proxies={"http": None})
    assert wrong.status_code == 401
    ok = requests.get(f"{url}/api/model", headers={"Authorization": f"Bearer {TOKEN}"}, proxies={"http": None})
    assert ok.status_code == 200 and ok.json()["id"] == "celeba/dcgan-a"


def test_the_page_opened_with_the_token_sets_a_cookie_and_cleans_the_address(server):
    s = requests.Session()
    s.trust_env = False
    first = s.get(f"{server['url']}/?token={TOKEN}", allow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert s.get(f"{server['url']}/").status_code == 200  # the cookie now opens the page
    assert s.get(f"{server['url']}/api/model").status_code == 200
    assert s.get(f"{server['url']}/?token=wrong-token-of-some-length", allow_redirects=False).status_code != 303


def test_only_the_allowed_runs_are_listed_or_served(server):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    listing = server["http"].get(f"{server['url']}/api/models", headers=headers).json()
    assert [m["id"] for m in listing["models"]] == ["celeba/dcgan-a"]
    r = server["http"].get(f"{server['url']}/api/model", params={"id": "mnist/dcgan-b"}, headers=headers)
    assert r.status_code == 404


def test_a_studio_for_other_machines_needs_a_token(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("FACEGAN_STUDIO_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    check_host("127.0.0.1", None)
    with pytest.raises(ValueError, match=r"--host 0\.0\.0\.0 lets other machines in: set an access token"):
        check_host("0.0.0.0", None)
    check_host("0.0.0.0", TOKEN)
    with pytest.raises(ValueError, match="at least 16"):
        token_from("short")
    monkeypatch.setenv("FACEGAN_STUDIO_TOKEN", TOKEN)
    assert token_from(None) == TOKEN
    monkeypatch.delenv("FACEGAN_STUDIO_TOKEN")
    from studio.cli import main
    assert main(["--host", "0.0.0.0", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FACEGAN_STUDIO_TOKEN" in err[0]


def test_a_first_run_outside_the_allow_list_is_one_clear_error(runs):
    from studio.models import ModelRegistry
    with pytest.raises(ValueError, match="not in --allow-models"):
        ModelRegistry(runs["root"], runs["b"], allow=("celeba/*",))


def test_a_remote_client_cannot_split_itself_with_a_client_id():
    """Per-client limits count a remote client by its address whatever X-Client-Id it sends;
    only pages on this machine (one per tab) are told apart by it."""
    from starlette.requests import Request

    from studio.routes.heavy import client_of

    def request(host, client_id):
        return Request({"type": "http", "method": "POST", "path": "/api/complete", "client": (host, 5000),
                        "headers": [(b"x-client-id", client_id.encode())]})

    assert client_of(request("192.0.2.7", "tab-1")) == client_of(request("192.0.2.7", "tab-2")) == "host:192.0.2.7"
    assert client_of(request("127.0.0.1", "tab-1")) != client_of(request("127.0.0.1", "tab-2"))


def test_a_model_warms_its_searches_and_close_waits_for_the_warm_up(runs):
    """Projection's and completion's graphs are built at load, in a thread that close() stops
    and joins (TensorFlow tracing in a thread at interpreter exit aborts the process)."""
    from studio.models import LoadedModel

    model = LoadedModel.load("celeba/dcgan-a", runs["a"])
    thread = model._warming[0]
    thread.join(120)
    assert model.warm == "ready" and model.info()["warm"] == "ready"
    model.close()
    early = LoadedModel.load("mnist/dcgan-b", runs["b"])
    early.close()  # at once: the warm-up stops between steps, or finishes, before close returns
    assert not early._warming[0].is_alive() and early.warm in ("cold", "ready")
