"""`skiff lab`: build, inspect and remove a zone-in-a-box made of network namespaces."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from appliances.lab import names, netns
from appliances.lab.agentclient import AgentError
from appliances.lab.lab import Lab, LabError, check_root

EPILOG = """\
The lab lives in namespaces named skf-<name>-<role> (switch, internet, router, g1..gN;
with --networks 2 also router2 and h1..hN; with --redundant rb; with --roadwarrior rw)
plus one bridge skf-<name>-ctl in the root namespace (169.254.N.1/24, the control
network) and one control veth per router. Agents listen with mutual TLS on
169.254.N.2:8443 (router), .3 (rb) and .4 (router2).
Network 1: guests 10.1.1.0/24, router public 203.0.113.10 (spares .11 .12).
Network 2: guests 10.1.2.0/24, router2 public 203.0.113.20 (spares .21 .22).
rw: 203.0.113.50 on the public segment, default route via the internet 203.0.113.1.
State folder: --state-dir, else $SKIFF_LAB_DIR/<name>, else /var/lib/skiff/lab/<name>.
"""


def _progress(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def _name(value: str) -> str:
    try:
        return names.check_name(value)
    except names.LabNameError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser, state_dir: bool = True) -> None:
    p.add_argument("--name", type=_name, default=names.DEFAULT_NAME,
                   help=f"lab name, 1-6 of [a-z0-9], letter first (default {names.DEFAULT_NAME})")
    if state_dir:
        p.add_argument("--state-dir", type=Path, default=None,
                       help="state folder (default $SKIFF_LAB_DIR/<name> or "
                            "/var/lib/skiff/lab/<name>)")


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="build a virtual router lab in network namespaces",
                         description="Build a zone in a box on this host: a switch, an "
                         "'internet', a virtual router running the agent, and guests "
                         "that get their addresses by DHCP from the router. Needs root.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    p = cmds.add_parser("up", help="build the lab (removing leftovers of the same name first)",
                        description="Build the namespaces, start the internet's HTTP and DNS "
                        "servers and the router agent, apply the baseline router document, "
                        "start the guests and wait for their leases. Prints the lab "
                        "description as JSON (also saved as lab.json in the state folder).")
    _common(p)
    p.add_argument("--guests", type=int, default=2,
                   help="guests per network: g1..gN, and h1..hN in network 2 (default 2)")
    p.add_argument("--networks", type=int, choices=(1, 2), default=1,
                   help="isolated guest networks; 2 adds router2 with guests h1..hN in "
                   "10.1.2.0/24 and public IP 203.0.113.20 on the same public segment")
    p.add_argument("--redundant", action="store_true",
                   help="add router rb on the same guest and public segments as router, "
                   "with its own agent (169.254.N.3), and make the two a redundant pair: "
                   "both get the pair's documents (VRRP, shared 10.1.1.1 and "
                   "203.0.113.10-.12) and the lab waits for one PRIMARY and one BACKUP")
    p.add_argument("--roadwarrior", action="store_true",
                   help="add the client namespace rw (203.0.113.50 on the public segment, "
                   "default route via 203.0.113.1)")
    p.add_argument("--image", type=Path, metavar="ARCHIVE",
                   help="run the routers from this system-VM root file system archive "
                   "(build/out/skiff-systemvm-rootfs.tar.zst of make image): the image's "
                   "own Python, agent and daemons, unpacked once per image into "
                   "/var/lib/skiff/image-roots ($SKIFF_IMAGE_ROOTS)")
    p.set_defaults(func=_up)

    p = cmds.add_parser("down", help="remove everything of the lab",
                        description="Kill every process in the lab's namespaces and remove the "
                        "namespaces, root-namespace links, /etc/netns entries and the state "
                        "folder. Works from the name alone, also after a crash.")
    _common(p)
    p.set_defaults(func=_down)

    p = cmds.add_parser("remote-hosts", help="start lab remote hosts (namespaces running sshd) "
                        "and write an Ansible inventory of them",
                        description="Prepare the lab's local fabric (netns://NAME), start "
                        "remote hosts host1..hostN: namespaces skf-NAME-hostK on the lab's "
                        "underlay, each running its own sshd that accepts the lab's key for "
                        "root, and print (or write) an inventory of this machine and them "
                        "for ansible/lab.yml (ansible/inventories/two-hosts/hosts.yml is one "
                        "of that shape). Hosts that run already are kept. skiff lab down "
                        "removes them with the rest of the lab.")
    _common(p)
    p.add_argument("--count", type=int, default=2, help="how many hosts (default 2)")
    p.add_argument("--inventory", type=Path, metavar="FILE",
                   help="write the inventory there (else it is printed)")
    p.add_argument("--no-local-host", action="store_true",
                   help="leave this machine's netns://NAME host out of group skiff_hosts")
    p.set_defaults(func=_remote_hosts)

    p = cmds.add_parser("status", help="print the lab description and what is alive",
                        description="Print the saved description with the liveness of "
                        "namespaces, processes and the agent. Exit code 0 when all is alive.")
    _common(p)
    p.set_defaults(func=_status)

    p = cmds.add_parser("exec", help="run a command in a lab namespace",
                        description="Run CMD in the namespace TARGET (internet, switch, a router: "
                        "router, router2, rb; rw, or a guest g1..gN, h1..hN); its exit code is "
                        "passed through. In a router, the command also sees its agent's "
                        "private /run.",
                        usage="%(prog)s [--name NAME] [--state-dir DIR] TARGET -- CMD...")
    _common(p)
    p.add_argument("target", metavar="TARGET",
                   help="internet, switch, router, router2, rb, rw, g1..gN or h1..hN")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    p.set_defaults(func=_exec)

    p = cmds.add_parser("apply", help="PUT a router document file to the lab's agent",
                        description="Send FILE (JSON; - for stdin) to the agent's PUT /v1/config "
                        "with the lab's client certificate and print the reply. Exit code 0 "
                        "when the agent applied it.")
    _common(p)
    p.add_argument("--router", default="router",
                   help="the router whose agent gets it: router (default), router2 or rb")
    p.add_argument("file", metavar="FILE", help="router document (JSON), or - for stdin")
    p.set_defaults(func=_apply)

    p = cmds.add_parser("demo", help="build a lab, show NAT, forwarding and firewall, tear it down",
                        description="Build a lab named NAME (default demo), show source NAT, a "
                        "port forward, static NAT and a source-limited firewall rule with real "
                        "traffic, print what each side saw, and remove the lab. Exit code 0 "
                        "when every step worked.")
    p.add_argument("--name", type=_name, default="demo", help="lab name (default demo)")
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    p.set_defaults(func=_demo)


def _lab(args: argparse.Namespace) -> Lab:
    return Lab(args.name, args.state_dir, progress=_progress)


def _load(args: argparse.Namespace) -> Lab:
    return Lab.load(args.name, args.state_dir, progress=_progress)


def _fail(exc: Exception) -> int:
    print(f"skiff lab: error: {exc}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    try:
        check_root()
    except LabError as exc:
        return _fail(exc)
    lab = Lab(args.name, args.state_dir, progress=_progress, image=args.image)
    try:
        desc = asyncio.run(lab.up(guests=args.guests, networks=args.networks,
                                  redundant=args.redundant, roadwarrior=args.roadwarrior))
        if args.redundant:
            desc = asyncio.run(_make_pair(lab))
    except (LabError, AgentError, netns.CommandError) as exc:
        hint = ""
        if asyncio.run(lab.leftovers()):
            hint = ("\n(what was built is still there for inspection; remove it with: "
                    f"skiff lab down --name {args.name})")
        return _fail(f"{exc}{hint}")
    print(json.dumps(desc, indent=2))
    return 0


async def _make_pair(lab: Lab) -> dict:
    """Apply the pair documents to router and rb and wait for the election."""
    from appliances.lab import pair

    _progress("making router and rb a redundant pair (VRRP id "
              f"{pair.VRID}, shared 10.1.1.1 and 203.0.113.10-.12)")
    await pair.apply_pair(lab)
    await pair.wait_state(lab, "router", "PRIMARY")
    await pair.wait_state(lab, "rb", "BACKUP")
    _progress("router is PRIMARY, rb is BACKUP")
    lab.save()
    return lab.describe()


def _down(args: argparse.Namespace) -> int:
    try:
        check_root()
        asyncio.run(_lab(args).down())
    except (LabError, netns.CommandError) as exc:
        return _fail(exc)
    return 0


def _remote_hosts(args: argparse.Namespace) -> int:
    from appliances.lab import inventory
    from appliances.lab.remote_hosts import RemoteHostError
    from mgmt.orchestration.hosts.driver import HostError

    if not 1 <= args.count <= names.MAX_REMOTE_HOSTS:
        return _fail(f"--count is 1..{names.MAX_REMOTE_HOSTS}")
    try:
        check_root()
        hosts = asyncio.run(inventory.bring_up(args.name, args.count, args.state_dir))
    except (LabError, RemoteHostError, HostError, netns.CommandError, ValueError) as exc:
        return _fail(exc)
    known = inventory.known_hosts(hosts, Path(hosts[0].key_path).parent / "known_hosts")
    data = inventory.inventory(args.name, hosts, known, local_host=not args.no_local_host)
    for h in hosts:
        _progress(f"{h.name}: ssh {h.username}@{h.address} (namespace {h.namespace})")
    if args.inventory:
        inventory.write_inventory(data, args.inventory)
        _progress(f"inventory: {args.inventory}")
    else:
        print(json.dumps(data, indent=2))
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        check_root()
        lab = _load(args)
    except LabError as exc:
        left = asyncio.run(_lab(args).leftovers())
        if left:
            print(json.dumps({"name": args.name, "saved_state": None, "leftovers": left},
                             indent=2))
        return _fail(exc)
    desc = asyncio.run(lab.status())
    print(json.dumps(desc, indent=2))
    alive = desc["alive"]
    healthy = (all(alive["namespaces"].values()) and all(alive["processes"].values())
               and all(h.get("status") == 200 for h in alive["agents_health"].values()))
    return 0 if healthy else 1


def _exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        return _fail("no command given: skiff lab exec TARGET -- CMD...")
    try:
        check_root()
        try:
            lab = _load(args)
        except LabError:
            lab = _lab(args)  # no saved state: the names are derived from the lab name
        ns = lab.ns(args.target)
    except (LabError, ValueError) as exc:
        return _fail(exc)
    if not netns.namespace_exists(ns):
        return _fail(f"namespace {ns} does not exist: run skiff lab up --name {args.name}")
    argv = lab.argv_in(args.target, command)
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        return _fail(f"cannot run {argv[0]}: {exc}")
    return 127  # not reached


def _apply(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read a JSON document from {args.file}: {exc}")
    try:
        lab = _load(args)
        reply = asyncio.run(lab.agent(args.router).put_config(document))
    except (LabError, OSError) as exc:
        return _fail(exc)
    except Exception as exc:  # noqa: BLE001 - aiohttp errors: say where we tried to connect
        return _fail(f"cannot reach the agent at {lab.agent_url_of(args.router)}: "
                     f"{type(exc).__name__}: {exc}")
    print(f"HTTP {reply.status}", file=sys.stderr)
    print(json.dumps(reply.body, indent=2) if not isinstance(reply.body, str) else reply.body)
    return 0 if reply.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from appliances.lab.demo import main as demo

    try:
        check_root()
    except LabError as exc:
        return _fail(exc)
    return demo(args.name, args.keep)
