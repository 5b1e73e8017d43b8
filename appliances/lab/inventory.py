"""Lab remote hosts for Ansible: bring them up and describe them as an inventory.

``skiff lab remote-hosts --name <lab> --count N`` prepares the lab's local fabric
(it owns the underlay), starts remote hosts ``host1..hostN`` (namespaces running
their own sshd, appliances.lab.remote_hosts) and writes an inventory of the shape
of ansible/inventories/two-hosts/hosts.yml: this machine is the management server
and the ``netns://<lab>`` host (routers need the local fabric's public segment and
the lab's Internet), and each remote host is reached as root with the lab's key,
its host key pinned in a known_hosts file of the lab (StrictHostKeyChecking yes).
The skiff_host role reads the same host keys again over that authenticated
connection and puts them in each host's addHost URL (``hostkey=``).

JSON is YAML: the file is JSON behind a comment, which ansible's YAML inventory
plugin reads.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from appliances.lab.remote_hosts import RemoteHost, add_remote_host


async def bring_up(lab: str, count: int, state_dir: Path | None = None) -> list[RemoteHost]:
    """The local fabric, then remote hosts 1..count (each kept if it runs already)."""
    from mgmt.orchestration.hosts.netns import NetnsHostDriver

    local = NetnsHostDriver(lab, state_dir)
    try:
        await local.prepare()
    finally:
        await local.close()
    return [await add_remote_host(lab, k, local.state_dir) for k in range(1, count + 1)]


def known_hosts(hosts: list[RemoteHost], path: Path) -> Path:
    """OpenSSH known_hosts lines for the hosts' addresses (0644)."""
    lines = []
    for h in hosts:
        where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
        lines.append(f"{where} {h.host_key}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    path.chmod(0o644)
    return path


def inventory(
    lab: str, hosts: list[RemoteHost], known: Path, *, local_host: bool = True
) -> dict[str, Any]:
    """The inventory: group skiff_mgmt (this machine), skiff_hosts (this machine's
    netns host when local_host, and the remote hosts)."""
    ssh_args = shlex.join(
        [
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ]
    )
    # Debian's Python on this machine: the roles' modules use python3-apt from there
    local = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    members: dict[str, Any] = {"localhost": {}} if local_host else {}
    for h in hosts:
        home = Path(h.state_dir).parent
        members[h.name] = {
            "ansible_host": h.address,
            "ansible_port": h.port,
            "ansible_user": h.username,
            "ansible_ssh_private_key_file": h.key_path,
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
            "skiff_host_driver": "ssh",
            # the lab host's sshd reads these files (appliances.lab.remote_hosts)
            "skiff_host_authorized_keys_file": str(home / "authorized_keys"),
            "skiff_host_key_file": str(home / "ssh_host_ed25519_key.pub"),
            # the file system is this machine's: never persist sysctls from a lab host
            "skiff_host_sysctl_persist": False,
            "skiff_host_url_options": {"lab": lab, "prefix": h.prefix, "statedir": h.state_dir},
        }
    return {
        "all": {
            "vars": {"skiff_lab": lab},
            "children": {
                "skiff_mgmt": {"hosts": {"localhost": local}},
                "skiff_hosts": {"hosts": members},
            },
        }
    }


def write_inventory(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by `skiff lab remote-hosts` (JSON is YAML)\n" + json.dumps(data, indent=2) + "\n"
    )
    return path
