"""A road-warrior VPN client: a charon of its own (own /run, own STRONGSWAN_CONF and
vici socket) in a namespace on the lab's Internet side, driven over VICI.

Used by the router VPN tests (the lab's ``rw`` namespace) and the orchestration
VPN tests (a namespace they add to the zone fabric's public segment).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from e2e_traffic import until

from appliances.router.services.strongswan import BASE_PLUGINS

CLIENT_CONF = """charon {{
	load = {plugins}
	install_virtual_ip = yes
	install_routes = yes
	port = 0
	port_nat_t = 0
	filelog {{
		stderr {{
			path = stderr
			default = 1
		}}
	}}
	plugins {{
		vici {{
			socket = unix://{socket}
		}}
	}}
}}
"""

#: The router's own plugin set plus what a road-warrior client needs.
CLIENT_PLUGINS = [
    *BASE_PLUGINS,
    "kernel-libipsec",
    "kernel-netlink",
    "socket-default",
    "vici",
    "eap-identity",
    "eap-mschapv2",
    "xauth-generic",
]

#: charon with a private /run (its pid file) in a mount namespace of its own.
CHARON_ARGV = [
    "unshare", "--mount", "--propagation", "private", "--",
    sys.executable, "-m", "appliances.lab.nsinit", "--tmpfs", "/run", "--",
    "/usr/lib/ipsec/charon",
]  # fmt: skip

#: Starts argv (with env) in the client's namespace, logging to ``log``.
Spawn = Callable[[list[str], Mapping[str, str]], Any]


class Client:
    """One client charon; ``server`` is the VPN's public address, ``guest_cidr`` what
    the client asks to reach, ``psk`` the VPN's preshared key, ``passwords`` by user."""

    def __init__(
        self,
        directory: Path,
        spawn: Spawn,
        log: Path,
        *,
        server: str,
        guest_cidr: str,
        psk: str,
        passwords: Mapping[str, str],
    ):
        self.dir = directory
        self.socket = directory / "charon.vici"
        self.spawn = spawn
        self.log = log
        self.server = server
        self.guest_cidr = guest_cidr
        self.psk = psk
        self.passwords = passwords

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "strongswan.conf"
        conf.write_text(CLIENT_CONF.format(socket=self.socket, plugins=" ".join(CLIENT_PLUGINS)))
        self.spawn(list(CHARON_ARGV), {"STRONGSWAN_CONF": str(conf)})
        await until(lambda: asyncio.sleep(0, self.socket.exists()), bool, timeout=20)
        assert self.socket.exists(), self.log.read_text() if self.log.exists() else self.log

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        import vici

        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(str(self.socket))
        try:
            return fn(vici.Session(sock))
        finally:
            sock.close()

    async def _load_and_initiate(self, user: str, conn: dict, secret: dict) -> None:
        def run(s):
            s.load_shared(secret)
            s.load_shared({"id": "ike", "type": "IKE", "data": self.psk, "owners": [self.server]})
            s.load_conn({user: conn})
            for _ in s.initiate({"ike": user, "child": user, "timeout": "20000"}):
                pass

        await asyncio.to_thread(self._call, run)

    def _conn(self, **auth: Any) -> dict:
        return {
            "remote_addrs": [self.server],
            "vips": ["0.0.0.0"],
            "encap": "yes",
            **auth,
        }

    async def connect(self, user: str) -> None:
        """IKEv2, EAP-MSCHAPv2 with the user's password; the server proves itself with
        the preshared key."""
        conn = self._conn(
            version="2",
            local={"auth": "eap-mschapv2", "eap_id": user},
            remote={"auth": "psk", "id": self.server},
            children={user: {"remote_ts": [self.guest_cidr], "start_action": "none"}},
        )
        secret = {
            "id": f"eap-{user}",
            "type": "EAP",
            "data": self.passwords[user],
            "owners": [user],
        }
        await self._load_and_initiate(user, conn, secret)

    async def connect_xauth(self, user: str) -> None:
        """An IKEv1 client: main mode with the remote-access PSK, then XAuth."""
        conn = self._conn(
            version="1",
            **{
                "local-1": {"auth": "psk"},
                "local-2": {"auth": "xauth", "xauth_id": user},
                "remote-1": {"auth": "psk", "id": self.server},
            },
            children={user: {"remote_ts": [self.guest_cidr], "start_action": "none"}},
        )
        secret = {
            "id": f"xauth-{user}",
            "type": "XAUTH",
            "data": self.passwords[user],
            "owners": [user],
        }
        await self._load_and_initiate(user, conn, secret)

    async def disconnect(self, name: str) -> None:
        def terminate(s):
            for _ in s.terminate({"ike": name, "timeout": "10000"}):
                pass

        await asyncio.to_thread(self._call, terminate)

    async def sas(self) -> dict[str, dict]:
        def list_sas(s):
            out = {}
            for entry in s.list_sas():
                for name, sa in entry.items():
                    out[name] = {
                        k: (v.decode() if isinstance(v, bytes) else v) for k, v in sa.items()
                    }
            return out

        return await asyncio.to_thread(self._call, list_sas)
