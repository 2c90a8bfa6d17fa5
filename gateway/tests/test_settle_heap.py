"""The gateway freezes what its startup left alive (shop_common.server.settle_heap), in a process
of its own: freezing is per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_gateway_settles_its_heap_when_it_starts() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
        import gc
        from starlette.testclient import TestClient
        from gateway.main import create_app

        app = create_app()
        before = gc.get_freeze_count()
        with TestClient(app):
            print(before, gc.get_freeze_count())
        """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    before, serving = completed.stdout.split()
    assert int(before) == 0
    assert int(serving) > 10_000
