"""Every registered role loads, and an agent loads only its own role's modules."""

from __future__ import annotations

import subprocess
import sys

from appliances.roles import ROLES, load_role


def test_every_role_loads_with_its_contract():
    for name in ROLES:
        role = load_role(name)()
        assert role.name == name
        assert hasattr(role.model, "model_json_schema")
        assert hasattr(role.parser(), "parse")


def test_a_console_agent_does_not_load_the_router():
    probe = (
        "import sys, appliances.agent.server as s; s.load_role('console'); "
        "print(' '.join(m for m in sys.modules if m.startswith('appliances.router')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
