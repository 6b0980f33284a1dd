"""E2B's JavaScript SDK (npm ``e2b``, pinned in compat/e2b/js), unmodified,
against the same daemon: ``node compat/e2b/js/smoke.mjs``. Runs once (in the
newest Python SDK's venv: ZYGOTE_E2B_JS=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from zygote.testing import TestDaemon

JS = Path(__file__).resolve().parent.parent / "js"


def test_js_sdk(template: str, daemon: TestDaemon) -> None:
    if os.environ.get("ZYGOTE_E2B_JS") != "1":
        pytest.skip("the JS SDK runs once, with the newest Python SDK (ZYGOTE_E2B_JS=1)")
    if shutil.which("node") is None:
        pytest.fail("node is needed for E2B's JavaScript SDK (Node.js >= 20)")
    if not (JS / "node_modules" / "e2b").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True)
    r = subprocess.run(
        ["node", "smoke.mjs", template], cwd=JS, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n--- daemon log ---\n{daemon.log()}"
    assert "js smoke: ok" in r.stdout
