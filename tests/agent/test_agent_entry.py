"""Every router runs ``skiff agent`` (``python -m mgmt.cli agent``): that command must not
load the management server (its database layer and commands), which would cost each
router about 0.6 s of CPU at start and 40 MiB for as long as it runs."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "mgmt.server.app", "mgmt.commands", "cs")


def test_the_skiff_command_loads_no_management_server_modules():
    probe = f"import sys, mgmt.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
