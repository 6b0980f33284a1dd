"""Directory trees against a real daemon and guest: several files in one call,
a listing to a depth, mkdir, rename, get_info, and a watch that streams events."""

from __future__ import annotations

import io
import threading
import time

import pytest

from zygote import (
    BadRequestError,
    ConfigError,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    NotFoundError,
    Sandbox,
)


def test_write_files_list_depth_mkdir_rename_info(sandbox: Sandbox) -> None:
    f = sandbox.files
    out = f.write_files(
        [
            {"path": "/srv/app/main.py", "data": "print('hi')\n"},
            {"path": "/srv/app/static/x.bin", "data": b"\x00\x01\x02", "mode": 0o600},
            {"path": "/srv/app/static/deep/y.txt", "data": io.BytesIO(b"from a file")},
        ]
    )
    assert [(w.path, w.bytes) for w in out] == [
        ("/srv/app/main.py", 12),
        ("/srv/app/static/x.bin", 3),
        ("/srv/app/static/deep/y.txt", 11),
    ]
    assert sandbox.commands.run("cat /srv/app/static/deep/y.txt").stdout == "from a file"
    # depth 1: the entries; deeper: each directory right before its contents.
    assert [e.path for e in f.list("/srv/app")] == ["/srv/app/main.py", "/srv/app/static"]
    assert [e.path for e in f.list("/srv", depth=3)] == [
        "/srv/app",
        "/srv/app/main.py",
        "/srv/app/static",
        "/srv/app/static/deep",
        "/srv/app/static/x.bin",
    ]
    tree = {e.path: e for e in f.list("/srv", depth=4)}
    x = tree["/srv/app/static/x.bin"]
    assert (x.name, x.type, x.size, x.permissions) == ("x.bin", FileType.FILE, 3, "-rw-------")
    assert tree["/srv/app/static/deep"].type == "dir" and "/srv/app/static/deep/y.txt" in tree
    assert x.modified_time is not None and abs(x.modified_time.timestamp() - time.time()) < 3600
    with pytest.raises(ConfigError, match="depth"):
        f.list("/srv", depth=0)

    assert f.make_dir("/srv/new/a/b") is True
    assert f.make_dir("/srv/new/a/b") is False
    assert f.get_info("/srv/new/a/b").type == FileType.DIR
    with pytest.raises(BadRequestError):
        f.make_dir("/srv/app/main.py")  # a file is in the way

    moved = f.rename("/srv/app/main.py", "/srv/new/app.py")
    assert (moved.path, moved.name, moved.size, moved.type) == (
        "/srv/new/app.py",
        "app.py",
        12,
        "file",
    )
    assert not f.exists("/srv/app/main.py") and f.exists("/srv/new/app.py")
    assert f.read("/srv/new/app.py") == "print('hi')\n"
    with pytest.raises(NotFoundError):
        f.rename("/srv/nope", "/srv/x")
    with pytest.raises(NotFoundError):
        f.get_info("/srv/nope")
    f.remove("/srv", recursive=True)


def test_watch_dir_streams_events(sandbox: Sandbox) -> None:
    f = sandbox.files
    f.make_dir("/srv/w/sub")
    got: list[FilesystemEvent] = []
    done = threading.Event()
    ended: list[BaseException | None] = []

    def on_event(e: FilesystemEvent) -> None:
        got.append(e)
        if e.name == "sub/last.txt":
            done.set()

    w = f.watch_dir("/srv/w", on_event, recursive=True, on_exit=ended.append)
    try:
        # Once watch_dir returns the watch is in place: nothing is missed.
        f.write("/srv/w/one.txt", "1")
        sandbox.commands.run("echo 2 >> /srv/w/one.txt; mv /srv/w/one.txt /srv/w/two.txt")
        sandbox.commands.run("chmod 600 /srv/w/two.txt; rm /srv/w/two.txt")
        f.write("/srv/w/sub/last.txt", "in a subdirectory")
        assert done.wait(30), got
    finally:
        w.stop()
    kinds = {(e.type, e.name) for e in got}
    for want in [
        (FilesystemEventType.WRITE, "one.txt"),
        (FilesystemEventType.RENAME, "two.txt"),
        (FilesystemEventType.CHMOD, "two.txt"),
        (FilesystemEventType.REMOVE, "two.txt"),
        (FilesystemEventType.RENAME, "sub/last.txt"),
    ]:
        assert want in kinds, (want, got)
    assert all(e.path == "/srv/w/" + e.name for e in got)
    # The same events were queued for get_new_events (E2B's sync way).
    assert w.get_new_events() == got and w.get_new_events() == []
    assert ended == [None]
    # After stop nothing more arrives.
    f.write("/srv/w/after.txt", "x")
    time.sleep(0.5)
    assert not any(e.name == "after.txt" for e in got)
    with pytest.raises(NotFoundError):
        f.watch_dir("/srv/no-such-dir")
    f.remove("/srv", recursive=True)
