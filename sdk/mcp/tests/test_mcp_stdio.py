"""The zygote-mcp server driven by a real MCP client session over stdio
(`stdio_client` + `ClientSession`), against a real daemon and guests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from zygote.testing import TestDaemon
from zygote_mcp import TOOL_NAMES

pytestmark = pytest.mark.anyio


def _server_command() -> str:
    """The installed console script, next to this interpreter."""
    exe = Path(sys.executable).parent / "zygote-mcp"
    found = str(exe) if exe.exists() else shutil.which("zygote-mcp")
    assert found, "the zygote-mcp console script is not installed (pip install ./sdk/mcp)"
    return found


class Tools:
    def __init__(self, session: ClientSession) -> None:
        self.s = session

    async def call(self, name: str, **args: Any) -> dict[str, Any]:
        r = await self.s.call_tool(name, args)
        text = "".join(getattr(c, "text", "") for c in r.content)
        assert not r.is_error, f"{name}({args}) failed: {text}"
        doc = r.structured_content
        if doc is None:
            doc = json.loads(text)
        # Structured and text content say the same thing.
        assert json.loads(text) == doc
        return doc

    async def error(self, name: str, **args: Any) -> str:
        r = await self.s.call_tool(name, args)
        assert r.is_error, f"{name}({args}) should have failed: {r}"
        return "".join(getattr(c, "text", "") for c in r.content)


async def test_mcp_tools_over_stdio(daemon: TestDaemon) -> None:
    params = StdioServerParameters(
        command=_server_command(),
        args=[],
        env={"ZYGOTE_SOCKET": daemon.socket, "PATH": os.environ.get("PATH", "")},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = (await session.list_tools()).tools
            by_name = {t.name: t for t in listed}
            assert set(by_name) == set(TOOL_NAMES)
            for t in listed:
                assert t.description and len(t.description) > 30, t.name
                assert t.input_schema["type"] == "object"
            ann = by_name["list_sandboxes"].annotations
            assert ann is not None and ann.read_only_hint is True
            ann = by_name["kill_sandbox"].annotations
            assert ann is not None and ann.destructive_hint is True
            rc = by_name["run_command"].input_schema
            assert set(rc["required"]) == {"sandbox_id", "command"}
            assert rc["properties"]["timeout_secs"]["type"] == "number"
            wt = by_name["wait_for_text"].input_schema["properties"]
            assert {"text", "command", "path", "timeout_secs", "interval_secs", "regex"} <= set(wt)

            tools = Tools(session)
            info = await tools.call("create_sandbox", memory_mib=256)
            sid = info["id"]
            assert info["state"] == "running" and info["memory_mib"] == 256
            children: list[str] = []
            try:
                await _exercise(tools, sid, children)
            finally:
                for cid in children + [sid]:
                    await session.call_tool("kill_sandbox", {"sandbox_id": cid})
            listed_ids = {s["id"] for s in (await tools.call("list_sandboxes"))["sandboxes"]}
            assert not listed_ids & set(children + [sid])
            assert (await tools.call("kill_sandbox", sandbox_id=sid)) == {
                "id": sid,
                "removed": False,
            }


async def _exercise(tools: Tools, sid: str, children: list[str]) -> None:
    assert sid in {s["id"] for s in (await tools.call("list_sandboxes"))["sandboxes"]}

    r = await tools.call("run_command", sandbox_id=sid, command="echo hi; echo oops >&2; exit 3")
    assert (r["exit_code"], r["stdout"], r["stderr"], r["timed_out"]) == (
        3,
        "hi\n",
        "oops\n",
        False,
    )
    r = await tools.call(
        "run_command", sandbox_id=sid, command='echo "$A"; pwd', env={"A": "b"}, cwd="/tmp"
    )
    assert r["stdout"] == "b\n/tmp\n"
    r = await tools.call("run_command", sandbox_id=sid, command="sleep 30", timeout_secs=1)
    assert r["timed_out"] is True and r["exit_code"] is None
    msg = await tools.error("run_command", sandbox_id="no-such-sandbox", command="true")
    assert "no-such-sandbox" in msg

    w = await tools.call(
        "write_file", sandbox_id=sid, path="/root/m/note.txt", content="h\u00e9llo\n"
    )
    assert w == {"path": "/root/m/note.txt", "bytes": len("h\u00e9llo\n".encode())}
    r = await tools.call("read_file", sandbox_id=sid, path="/root/m/note.txt")
    assert r["content"] == "h\u00e9llo\n" and r["size"] == 7 and r["truncated"] is False
    blob = bytes(range(256)) * 3
    b64 = base64.b64encode(blob).decode()
    await tools.call(
        "write_file", sandbox_id=sid, path="/root/m/blob.bin", content=b64, encoding="base64"
    )
    r = await tools.call("read_file", sandbox_id=sid, path="/root/m/blob.bin", encoding="base64")
    assert base64.b64decode(r["content"]) == blob
    r = await tools.call(
        "read_file", sandbox_id=sid, path="/root/m/blob.bin", encoding="base64", max_bytes=10
    )
    assert (
        base64.b64decode(r["content"]) == blob[:10] and r["truncated"] is True and r["size"] == 768
    )
    assert "not valid base64" in await tools.error(
        "write_file", sandbox_id=sid, path="/root/m/x", content="%%%", encoding="base64"
    )
    assert "/root/m/missing" in await tools.error(
        "read_file", sandbox_id=sid, path="/root/m/missing"
    )

    assert (await tools.call("eval", sandbox_id=sid, code="x = 5"))["result"] is None
    r = await tools.call("eval", sandbox_id=sid, code="print('p'); x * 2")
    assert (r["result"], r["stdout"], r["error"]) == ("10", "p\n", None)
    r = await tools.call("eval", sandbox_id=sid, code="1/0")
    assert r["error"].startswith("ZeroDivisionError")

    snap = await tools.call("branch_sandbox", sandbox_id=sid, tag="mcp-branch")
    assert snap["tag"] == "mcp-branch" and snap["branched_from"] == sid
    assert "mcp-branch" in {s["tag"] for s in (await tools.call("list_snapshots"))["snapshots"]}
    child = await tools.call("create_sandbox", snapshot="mcp-branch")
    children.append(child["id"])
    assert (await tools.call("eval", sandbox_id=child["id"], code="x"))["result"] == "5"

    await tools.call("eval", sandbox_id=sid, code="x = 6")
    fork = await tools.call("fork_sandbox", sandbox_id=sid, n=2)
    kids = [c["id"] for c in fork["children"]]
    children.extend(kids)
    assert len(kids) == 2 and fork["snapshot_tag"]
    for k in kids:
        assert (await tools.call("eval", sandbox_id=k, code="x"))["result"] == "6"
        r = await tools.call("read_file", sandbox_id=k, path="/root/m/note.txt")
        assert r["content"] == "h\u00e9llo\n"

    # wait_for_text: a background job writes the marker after a delay.
    await tools.call(
        "run_command",
        sandbox_id=sid,
        command="setsid sh -c 'sleep 2; echo service READY-42 >> /tmp/svc.log' "
        ">/dev/null 2>&1 </dev/null &",
    )
    r = await tools.call(
        "wait_for_text",
        sandbox_id=sid,
        path="/tmp/svc.log",
        text="READY-42",
        timeout_secs=60,
        interval_secs=0.3,
    )
    assert r["found"] is True and r["match"] == "READY-42" and r["polls"] > 1, r
    r = await tools.call(
        "wait_for_text",
        sandbox_id=sid,
        command="cat /tmp/svc.log",
        text=r"READY-\d+",
        regex=True,
        timeout_secs=30,
    )
    assert r["found"] is True and r["match"] == "READY-42" and r["polls"] == 1
    r = await tools.call(
        "wait_for_text",
        sandbox_id=sid,
        command="echo not yet",
        text="NEVER",
        timeout_secs=1.5,
        interval_secs=0.2,
    )
    assert (
        r["found"] is False
        and r["match"] is None
        and "not yet" in r["output_tail"]
        and r["polls"] >= 2
    )
    assert "exactly one" in await tools.error("wait_for_text", sandbox_id=sid, text="x")

    await _processes(tools, sid)
    await _trees(tools, sid)
    await _pause_and_lifetime(tools, kids[0])

    warm = await tools.call(
        "create_snapshot",
        tag="mcp-warm",
        warmup="import json\nw = json.dumps([7])",
        # A server started by the warm-up runs on in every child.
        warmup_cmd="python3 -m http.server 8123 --bind 127.0.0.1",
        ready_port=8123,
    )
    assert warm["tag"] == "mcp-warm" and warm["image"] == "python"
    c = await tools.call(
        "create_sandbox", snapshot="mcp-warm", metadata={"agent": "mcp"}, timeout_secs=600
    )
    children.append(c["id"])
    assert c["metadata"] == {"agent": "mcp"} and c["expires_at_unix"] is not None
    assert (await tools.call("eval", sandbox_id=c["id"], code="w"))["result"] == repr("[7]")
    r = await tools.call(
        "run_command",
        sandbox_id=c["id"],
        command='python3 -c "import urllib.request as u; '
        "print(u.urlopen('http://127.0.0.1:8123/').status)\"",
    )
    assert r["stdout"] == "200\n", r
    labelled = await tools.call("list_sandboxes", metadata={"agent": "mcp"})
    assert [s["id"] for s in labelled["sandboxes"]] == [c["id"]]
    assert "mcp-warm" in await tools.error("create_snapshot", tag="mcp-warm")

    for k in children:
        assert (await tools.call("kill_sandbox", sandbox_id=k))["removed"] is True
    assert (await tools.call("kill_sandbox", sandbox_id=sid))["removed"] is True


async def _processes(tools: Tools, sid: str) -> None:
    p = await tools.call(
        "start_process",
        sandbox_id=sid,
        command="cat; echo done; exit 3",
        stdin=True,
        tag="catter",
    )
    pid = p["pid"]
    assert p["running"] is True and p["tag"] == "catter" and p["stdin"] is True
    listed = await tools.call("list_processes", sandbox_id=sid)
    assert pid in {q["pid"] for q in listed["processes"]}
    sent = await tools.call("send_stdin", sandbox_id=sid, pid=pid, data="hello\n")
    assert sent == {"pid": pid, "bytes": 6, "closed": False}
    for _ in range(20):
        out = await tools.call("process_output", sandbox_id=sid, pid=pid, wait_secs=0.5)
        if out["stdout"]:
            break
    assert (out["stdout"], out["running"], out["exit_code"]) == ("hello\n", True, None)
    await tools.call("send_stdin", sandbox_id=sid, pid=pid, data="", close=True)
    out = await tools.call("process_output", sandbox_id=sid, pid=pid, wait_secs=60)
    assert (out["stdout"], out["running"], out["exit_code"]) == ("hello\ndone\n", False, 3)
    ended = await tools.call("list_processes", sandbox_id=sid, include_exited=True)
    q = next(q for q in ended["processes"] if q["pid"] == pid)
    assert (q["running"], q["exit_code"]) == (False, 3)

    s = await tools.call("start_process", sandbox_id=sid, command="echo up; sleep 600")
    k = await tools.call("kill_process", sandbox_id=sid, pid=s["pid"])
    assert k == {"pid": s["pid"], "signal": 9, "killed": True}
    out = await tools.call("process_output", sandbox_id=sid, pid=s["pid"], wait_secs=60)
    assert (out["stdout"], out["running"], out["signal"]) == ("up\n", False, 9)
    assert (await tools.call("kill_process", sandbox_id=sid, pid=999_999))["killed"] is False
    assert "999999" in await tools.error("process_output", sandbox_id=sid, pid=999_999)


async def _trees(tools: Tools, sid: str) -> None:
    assert (await tools.call("make_dir", sandbox_id=sid, path="/root/t/a/b"))["created"] is True
    assert (await tools.call("make_dir", sandbox_id=sid, path="/root/t/a/b"))["created"] is False
    w = await tools.call(
        "write_files",
        sandbox_id=sid,
        files=[
            {"path": "/root/t/a/x.txt", "content": "x\n"},
            {
                "path": "/root/t/c.bin",
                "content": base64.b64encode(b"\x00\x01").decode(),
                "encoding": "base64",
                "mode": 0o600,
            },
        ],
    )
    assert w["files"] == [
        {"path": "/root/t/a/x.txt", "bytes": 2},
        {"path": "/root/t/c.bin", "bytes": 2},
    ]
    ls = await tools.call("list_files", sandbox_id=sid, path="/root/t", depth=3)
    assert [e["path"] for e in ls["entries"]] == [
        "/root/t/a",
        "/root/t/a/b",
        "/root/t/a/x.txt",
        "/root/t/c.bin",
    ]
    c = ls["entries"][3]
    assert (c["kind"], c["size"], c["mode"] & 0o777) == ("file", 2, 0o600)
    ls1 = await tools.call("list_files", sandbox_id=sid, path="/root/t")
    assert [e["name"] for e in ls1["entries"]] == ["a", "c.bin"]
    r = await tools.call("read_file", sandbox_id=sid, path="/root/t/c.bin", encoding="base64")
    assert base64.b64decode(r["content"]) == b"\x00\x01"


async def _pause_and_lifetime(tools: Tools, kid: str) -> None:
    t = await tools.call("set_timeout", sandbox_id=kid, timeout_secs=600)
    assert t["expires_at_unix"] is not None and t["on_expiry"] == "kill"
    p = await tools.call("pause_sandbox", sandbox_id=kid)
    assert p["paused"] is True and p["sandbox"]["state"] == "paused"
    assert (await tools.call("pause_sandbox", sandbox_id=kid))["paused"] is False
    listed = await tools.call("list_sandboxes", state="paused")
    assert [s["id"] for s in listed["sandboxes"]] == [kid]
    r = await tools.call("resume_sandbox", sandbox_id=kid)
    assert r["resumed"] is True and r["sandbox"]["state"] == "running"
    assert (await tools.call("eval", sandbox_id=kid, code="x"))["result"] == "6"
    # Any other tool on a paused sandbox resumes it first.
    await tools.call("pause_sandbox", sandbox_id=kid)
    assert (await tools.call("eval", sandbox_id=kid, code="x"))["result"] == "6"
    assert (await tools.call("resume_sandbox", sandbox_id=kid))["resumed"] is False
    # Its network: an exposed port and a new egress policy.
    port = await tools.call("expose_port", sandbox_id=kid, port=8000)
    assert port["port"] == 8000 and port["host"].startswith("127.0.0.1:")
    n = await tools.call("set_network", sandbox_id=kid, internet=False, allow_out=["198.18.0.2/32"])
    assert n["network"]["internet"] is False and n["network"]["allow_out"] == ["198.18.0.2/32"]
    assert n["network"]["ports"] == [port]
