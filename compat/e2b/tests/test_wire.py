"""The E2B listener's own checks, by raw HTTP: keys, access tokens, signed
file URLs, and bad input answered with E2B's error shape naming the value."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import pytest
from e2b import Sandbox


@pytest.fixture
def api() -> httpx.Client:
    with httpx.Client(
        base_url=os.environ["E2B_API_URL"],
        headers={"X-API-KEY": os.environ["E2B_API_KEY"]},
        timeout=60,
    ) as c:
        yield c


def test_keys_and_bad_bodies(api: httpx.Client, template: str) -> None:
    r = httpx.get(os.environ["E2B_API_URL"] + "/v2/sandboxes")
    assert r.status_code == 401 and "API key" in r.json()["message"]
    r = api.post("/v2/sandboxes", json={"templateID": template, "colour": "red"})
    assert r.status_code == 400 and "colour" in r.json()["message"], r.text
    r = api.post("/v2/sandboxes", json={"templateID": template, "timeout": 0})
    assert r.status_code == 400 and "timeout 0" in r.json()["message"], r.text
    r = api.post("/v2/sandboxes", json={"templateID": template, "mcp": {"x": {}}})
    assert r.status_code == 400 and "mcp" in r.json()["message"], r.text
    r = api.get("/v2/sandboxes", params={"state": "sleeping"})
    assert r.status_code == 400 and "sleeping" in r.json()["message"], r.text
    r = api.get("/v2/sandboxes", params={"limit": 0})
    assert r.status_code == 400 and "limit 0" in r.json()["message"], r.text
    r = api.get("/sandboxes/0123456789abcdef")
    assert r.status_code == 404


def test_paging(api: httpx.Client, template: str) -> None:
    a = Sandbox.create(template=template, metadata={"page": "p1"})
    b = Sandbox.create(template=template, metadata={"page": "p1"})
    try:
        q = {"metadata": "page=p1", "limit": 1}
        first = api.get("/v2/sandboxes", params=q)
        assert first.status_code == 200 and len(first.json()) == 1
        token = first.headers["x-next-token"]
        second = api.get("/v2/sandboxes", params={**q, "nextToken": token})
        assert len(second.json()) == 1 and "x-next-token" not in second.headers
        assert {first.json()[0]["sandboxID"], second.json()[0]["sandboxID"]} == {
            a.sandbox_id,
            b.sandbox_id,
        }
        r = api.post(f"/sandboxes/{a.sandbox_id}/fork", json={"count": 21})
        assert r.status_code == 400 and "count 21" in r.json()["message"], r.text
    finally:
        a.kill()
        b.kill()


def test_in_sandbox_traffic_needs_the_sandbox_token(sbx: Sandbox, template: str) -> None:
    url = os.environ["E2B_SANDBOX_URL"]
    other = Sandbox.create(template=template)
    try:
        rpc = {"Content-Type": "application/json", "E2b-Sandbox-Id": sbx.sandbox_id}
        ok = sbx._envd_access_token  # what the create answer carried
        r = httpx.post(url + "/process.Process/List", json={}, headers=rpc)
        assert r.status_code == 401, r.text
        wrong = other._envd_access_token
        r = httpx.post(url + "/process.Process/List", json={}, headers={**rpc, "X-Access-Token": wrong})
        assert r.status_code == 401, r.text
        r = httpx.post(url + "/process.Process/List", json={}, headers={**rpc, "X-Access-Token": ok})
        assert r.status_code == 200 and "processes" in r.json(), r.text
        r = httpx.get(url + "/health", headers={**rpc, "E2b-Sandbox-Port": "8080"})
        assert r.status_code == 502 and "49983" in r.json()["message"], r.text

        sbx.files.write("/tmp/signed.txt", "signed")
        raw = f"/tmp/signed.txt:read::{ok}".encode()
        sig = "v1_" + base64.b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
        h = {"E2b-Sandbox-Id": sbx.sandbox_id}
        r = httpx.get(url + "/files", params={"path": "/tmp/signed.txt", "signature": sig}, headers=h)
        assert r.status_code == 200 and r.content == b"signed", r.text
        r = httpx.get(url + "/files", params={"path": "/etc/shadow", "signature": sig}, headers=h)
        assert r.status_code == 401, r.text
    finally:
        other.kill()


def test_e2b_calls_are_audited_and_counted(sbx: Sandbox, daemon) -> None:
    import json

    sbx.commands.run("true")
    lines = [json.loads(l) for l in (daemon.home / "audit.log").read_text().splitlines()]
    starts = [l for l in lines if l["path"] == "/process.Process/Start"]
    assert starts and starts[-1]["sandbox"] == sbx.sandbox_id, starts[-3:]
    assert any(l["path"] == "/v2/sandboxes" and l["method"] == "POST" for l in lines)
    t = httpx.HTTPTransport(uds=daemon.socket)
    with httpx.Client(transport=t, base_url="http://zygote") as c:
        text = c.get("/metrics").text
    assert 'route="e2b"' in text, text[:2000]
