"""A storage agent loads only its own role's modules (not the router's or console's)."""

from __future__ import annotations

import subprocess
import sys


def test_a_storage_agent_loads_neither_router_nor_console():
    probe = (
        "import sys, appliances.agent.server as s; s.load_role('storage'); "
        "print(' '.join(m for m in sys.modules "
        "if m.startswith(('appliances.router', 'appliances.console'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
