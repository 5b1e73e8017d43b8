"""`make docs` writes a page for every declared command and lists each in the index,
so a new command (those of the orchestration issue among them) is documented."""

from __future__ import annotations

from pathlib import Path

from mgmt.api import docs
from mgmt.api.registry import REGISTRY

#: A few of the orchestration issue's commands, by area.
ORCHESTRATION = (
    "deployVirtualMachine",
    "listNics",
    "listCapacity",
    "restartNetwork",
    "associateIpAddress",
    "createPortForwardingRule",
    "enableStaticNat",
    "createLoadBalancerRule",
    "createLBHealthCheckPolicy",
    "createRemoteAccessVpn",
    "addVpnUser",
    "createVpnCustomerGateway",
    "createVpnConnection",
    "resetVpnConnection",
    "listRouters",
    "getRouterHealthCheckResults",
)


def test_every_command_has_a_page_and_an_index_line(tmp_path: Path):
    assert docs.write(tmp_path) == len(REGISTRY)
    index = (tmp_path / "index.md").read_text()
    names = {cmd.name for cmd in REGISTRY.values()}
    assert set(ORCHESTRATION) <= names
    for name in names:
        page = (tmp_path / f"{name}.md").read_text()
        assert page.startswith(f"# {name}\n")
        assert f"| [{name}]({name}.md) |" in index
