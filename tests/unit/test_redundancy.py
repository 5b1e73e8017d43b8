"""Redundant pair logic that needs no daemons: VIP split, the network plan in a
pair, notify lines, the SIGHUP throttle, transitions and giving up primary."""

from __future__ import annotations

import asyncio
import copy
import shutil

import pytest
from pair_docs import pair_document

from appliances.agent.service import AgentContext, Change, Service
from appliances.common.errors import ApplyError
from appliances.router.services import keepalived as ka
from appliances.router.services.network import _address_commands, _route_commands
from appliances.router.verify import parse_document
from appliances.router.vips import shared_by_interface, vip_plan
from appliances.router.vrrp_events import ReloadThrottle, parse_notify


def doc(**redundancy):
    return parse_document(pair_document(**redundancy))


def addr_info(*addrs: str) -> dict:
    return {
        "addr_info": [
            {
                "family": "inet",
                "scope": "global",
                "local": a.split("/")[0],
                "prefixlen": int(a.split("/")[1]),
            }
            for a in addrs
        ]
    }


# -- VIPs ---------------------------------------------------------------------------


def test_vip_plan_guest_gateway_first_even_when_not_listed_first():
    raw = pair_document()
    raw["interfaces"][0]["addresses"] = ["10.1.1.254/24", "10.1.1.1/24"]
    plan = vip_plan(parse_document(raw))
    assert [v.address for v in plan.primary] == ["10.1.1.1/24", "203.0.113.10/24"]
    assert "10.1.1.254/24" in [v.address for v in plan.excluded]


def test_shared_by_interface():
    shared = shared_by_interface(doc())
    assert shared["eth0"] == {"10.1.1.1/24"}
    assert shared["eth2"] == {
        "203.0.113.10/24",
        "198.51.100.1/28",
        "203.0.113.11/32",
        "203.0.113.12/32",
    }
    assert "eth1" not in shared


def test_verify_refuses_own_address_that_is_shared_and_peer_outside_the_sync_subnet():
    from appliances.common.errors import DocumentError

    with pytest.raises(DocumentError) as err:
        doc(own_addresses=[{"interface": "eth0", "address": "10.1.1.1/24"}])
    assert "shared" in str(err.value.errors)
    with pytest.raises(DocumentError) as err:
        doc(peer_ip="10.9.9.9")
    assert "redundancy.peer_ip" in str(err.value.errors)


# -- the network service in a pair ----------------------------------------------------


def test_pair_puts_own_addresses_and_leaves_shared_ones_alone():
    d = doc()
    guest, public = d.interfaces[0], d.interfaces[2]
    # Backup: no VIP on the interface; nothing shared is added.
    assert _address_commands(guest, addr_info(), d) == ["address add 10.1.1.2/24 dev eth0"]
    # Primary: keepalived added the VIPs; they are not removed.
    assert _address_commands(guest, addr_info("10.1.1.2/24", "10.1.1.1/24"), d) == []
    assert (
        _address_commands(
            public, addr_info("203.0.113.20/24", "203.0.113.10/24", "203.0.113.11/32"), d
        )
        == []
    )
    # Something that is neither own nor shared goes.
    assert _address_commands(guest, addr_info("10.1.1.2/24", "10.1.1.77/24"), d) == [
        "address del 10.1.1.77/24 dev eth0"
    ]


def test_pair_leaves_the_default_route_to_keepalived():
    d = doc()
    have = [{"dst": "default", "gateway": "203.0.113.1"}]
    assert _route_commands(d, have) == ["route del default proto 95"]
    single = parse_document({k: v for k, v in pair_document().items() if k != "redundancy"})
    assert _route_commands(single, have) == []


# -- notify FIFO lines and the throttle ------------------------------------------------


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ('INSTANCE "skiff" MASTER 150', ("skiff", "PRIMARY")),
        ('INSTANCE "skiff" BACKUP 150\n', ("skiff", "BACKUP")),
        ('INSTANCE "skiff" FAULT 0', ("skiff", "FAULT")),
        ('INSTANCE "skiff" STOP 0', ("skiff", "STOPPED")),
        ('GROUP "g" MASTER', None),
        ('INSTANCE "skiff" MASTER_RX_LOWER_PRI 150', None),
        ("", None),
    ],
)
def test_parse_notify(line, parsed):
    assert parse_notify(line) == parsed


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_throttle_sends_at_once_then_coalesces_within_the_interval():
    clock, sent = FakeClock(), []
    throttle = ReloadThrottle(1.5, lambda: sent.append(clock.now), clock)
    assert throttle.request() is True and sent == [100.0]
    clock.now = 100.5
    assert throttle.request() is False  # scheduled for 101.5 (1.0 s of real time later)
    assert throttle.request() is False and throttle.request() is False  # folded in
    assert throttle.pending and len(sent) == 1
    clock.now = 101.5
    await asyncio.wait_for(throttle._pending, 5)
    assert sent == [100.0, 101.5] and throttle.sent == 2
    clock.now = 110.0  # a quiet period: at once again
    assert throttle.request() is True and len(sent) == 3


async def test_throttle_cancel_drops_the_pending_reload():
    clock, sent = FakeClock(), []
    throttle = ReloadThrottle(30, lambda: sent.append(1), clock)
    throttle.request()
    throttle.request()
    await throttle.cancel()
    assert sent == [1] and not throttle.pending


# -- transitions and giving up primary -----------------------------------------------


class FakePrimaryOnly(Service):
    """Stands in for dnsmasq/strongSwan: records pause/resume and reports health."""

    name = "fake"
    primary_only = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.calls: list[str] = []
        self.up = True

    async def prepare(self, doc):
        return Change(self.name, False)

    async def commit(self, change):
        pass

    async def pause(self):
        self.calls.append("pause")

    async def resume(self):
        self.calls.append("resume")

    def healthy(self) -> bool:
        return self.up


@pytest.fixture
def pair(tmp_path):
    ctx = AgentContext("r-pair", tmp_path, 8443)
    service, fake = ka.KeepalivedService(ctx), FakePrimaryOnly(ctx)
    service.attach([service, fake])
    service.vrrp_state = "INIT"
    service.paths.dir.mkdir(parents=True)
    return service, fake


async def test_transitions_pause_and_resume_primary_only_services(pair):
    service, fake = pair
    await service.transition("BACKUP")
    await service.transition("PRIMARY")
    await service.transition("PRIMARY")  # repeated lines change nothing
    await service.transition("FAULT")
    assert fake.calls == ["pause", "resume", "pause"]
    status = service.status()
    assert status["vrrp"]["state"] == "FAULT" and status["vrrp"]["transitions"] == 3
    assert status["vrrp"]["since"].endswith("+00:00")


async def test_a_primary_whose_daemon_is_down_gives_up_and_recovers(pair, monkeypatch):
    service, fake = pair
    await service.transition("PRIMARY")
    fake.up = False
    service.check_health()
    assert service.fault_reason is None  # one poll may be a restart in progress
    service.check_health()
    assert service.fault_reason == "fake down"
    assert service.paths.health.read_text() == "1\n"
    # keepalived goes FAULT; the paused service counts as healthy, but the hold time
    # keeps the router out of the election until the peer has taken over.
    await service.transition("FAULT")
    fake.up = True
    service.check_health()
    assert service.paths.health.read_text() == "1\n"
    monkeypatch.setattr(service, "_fault_until", 0.0)
    service.check_health()
    assert service.fault_reason is None and service.paths.health.read_text() == "0\n"


async def test_a_backup_never_gives_up_for_a_paused_daemon(pair):
    service, fake = pair
    await service.transition("BACKUP")
    fake.up = False
    for _ in range(3):
        service.check_health()
    assert service.fault_reason is None


async def test_second_prepare_without_redundancy_changes_nothing(tmp_path):
    ctx = AgentContext("r-pair", tmp_path, 8443)
    service = ka.KeepalivedService(ctx)
    raw = copy.deepcopy(pair_document())
    del raw["redundancy"]
    change = await service.prepare(parse_document(raw))
    assert change.changed is False


# -- the daemons' own checkers refuse a bad configuration -------------------------------


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
async def test_keepalived_config_test_refuses_and_names_the_problem(tmp_path):
    """The check step runs the real keepalived --config-test (it only parses; run here
    in the host namespace it touches nothing) on the candidate file."""
    service = ka.KeepalivedService(AgentContext("r-pair", tmp_path, 8443))
    bad = "vrrp_instance skiff {\n\tinterface skf-no-such-if0\n\tvirtual_router_id 1\n}\n"
    change = Change("redundancy", True, "", ka._Plan(doc(), bad, "", True, False))
    with pytest.raises(ApplyError) as err:
        await service.check(change)
    assert "config-test" in str(err.value)
    assert "interface" in err.value.output.lower()
    # The running configuration was not touched; the refused candidate stays for a look.
    assert not service.paths.keepalived_conf.exists()
    assert (service.paths.dir / "keepalived.conf.new").read_text() == bad


@pytest.mark.skipif(shutil.which("conntrackd") is None, reason="conntrackd is not installed")
async def test_conntrackd_parser_refuses_a_bad_file_and_accepts_the_render(tmp_path):
    from appliances.router.ha_render import HaPaths, render_conntrackd
    from appliances.router.services.conntrackd import ConntrackSync

    paths = HaPaths(tmp_path)
    sync = ConntrackSync(paths.conntrackd_conf, lambda text: None)
    good = tmp_path / "good.conf"
    good.write_text(render_conntrackd(doc(), paths))
    await sync.check(good)  # not running: "can't connect" is not a refusal
    bad = tmp_path / "bad.conf"
    bad.write_text(good.read_text().replace("Port 3780", "Port x3780"))
    with pytest.raises(ApplyError) as err:
        await sync.check(bad)
    assert "x3780" in err.value.output


def test_verify_keeps_vrrp_on_the_guest_interface():
    from appliances.common.errors import DocumentError

    with pytest.raises(DocumentError) as err:
        doc(sync_interface="eth2", peer_ip="203.0.113.21")
    assert "redundancy.sync_interface" in str(err.value.errors)
