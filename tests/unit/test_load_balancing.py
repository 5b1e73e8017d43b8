"""Load-balancing rules: validation, the rendered haproxy.cfg (checked by the real
``haproxy -c``), runtime API commands and the server-state carried over reloads."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from router_docs import error_at, full

from appliances.router import haproxy_runtime as rt
from appliances.router.services import haproxy
from appliances.router.verify import parse_document


def lb(rule_id: str = "web", **fields) -> dict:
    base = {"id": rule_id, "public_ip": "203.0.113.10", "public_port": 80, "private_port": 8080,
            "members": [{"id": "vm1", "ip": "10.1.1.10"}, {"id": "vm2", "ip": "10.1.1.11",
                                                            "port": 8081, "weight": 3}]}
    return {**base, **fields}


def doc_with(*rules: dict):
    data = full()
    data["load_balancers"] = list(rules)
    return parse_document(data)


# -- validation ----------------------------------------------------------------------------


def test_rule_needs_a_known_public_ip_and_guest_members():
    data = full()
    data["load_balancers"] = [lb(public_ip="203.0.113.99",
                                 members=[{"id": "x", "ip": "10.9.9.9"}])]
    error_at(data, "load_balancers.0.public_ip", "not in public_ips")
    error_at(data, "load_balancers.0.members.0.ip", "not in the guest network")


def test_listener_clashes_are_named():
    data = full()
    data["load_balancers"] = [lb(), lb("two"), lb("three", public_ip="203.0.113.11",
                                                   public_port=2222)]
    error_at(data, "load_balancers.1.public_port", "already load_balancers.0")
    error_at(data, "load_balancers.2.public_port", "port forward")


def test_static_nat_ip_cannot_balance():
    data = full()
    data["load_balancers"] = [lb(public_ip="203.0.113.12")]
    error_at(data, "load_balancers.0.public_ip", "static NAT")


def test_policies_must_fit_the_protocol():
    data = full()
    data["load_balancers"] = [lb(stickiness={"method": "LbCookie"})]
    error_at(data, "load_balancers.0", "needs protocol http")
    data["load_balancers"] = [lb(protocol="http", stickiness={"method": "AppCookie"})]
    error_at(data, "load_balancers.0.stickiness", "cookie_name")
    data["load_balancers"] = [lb(health_check={"interval_s": 2, "response_timeout_s": 5})]
    error_at(data, "load_balancers.0.health_check", "must not exceed")


@pytest.mark.parametrize("path", ["/ok'", "/a b", "/x\\y", "no-slash", "/%0a\n"])
def test_health_path_refuses_what_would_escape_the_quotes(path):
    data = full()
    data["load_balancers"] = [lb(health_check={"ping_path": path})]
    error_at(data, "load_balancers.0.health_check.ping_path")


def test_member_ids_unique_within_a_rule():
    data = full()
    data["load_balancers"] = [lb(members=[{"id": "a", "ip": "10.1.1.10"},
                                          {"id": "a", "ip": "10.1.1.11"}])]
    error_at(data, "load_balancers.0.members.1.id", "same id")


# -- the configuration, checked by haproxy itself -----------------------------------------


def _self_signed() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lb.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def every_feature():
    cert, key = _self_signed()
    return doc_with(
        lb("rr"),
        lb("lc", public_port=81, algorithm="leastconn", protocol="http",
           stickiness={"method": "LbCookie", "cookie_name": "SRV"},
           health_check={"ping_path": "/health?x=1&y=$HOME", "interval_s": 3,
                         "response_timeout_s": 1, "healthy_threshold": 2,
                         "unhealthy_threshold": 4}),
        lb("app", public_port=82, protocol="http", source_cidrs=["198.51.100.0/24"],
           stickiness={"method": "AppCookie", "cookie_name": "JSESSIONID", "length": 32}),
        lb("src", public_port=83, algorithm="source", protocol="tcp-proxy",
           stickiness={"method": "SourceBased", "table_size": 1000, "expire_s": 60}),
        lb("tls", public_port=443, protocol="http", tls={"certificate": cert,
                                                          "private_key": key}),
        lb("off", public_port=84, members=[{"id": "vm1", "ip": "10.1.1.10", "enabled": False,
                                            "weight": 0}]),
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_every_feature_renders_a_config_haproxy_accepts(tmp_path: Path):
    doc = every_feature()
    service = haproxy.HaproxyService.__new__(haproxy.HaproxyService)
    service.dir = tmp_path
    certs = {r.id: service._cert(r)[0] for r in doc.load_balancers if r.tls}
    for rule in doc.load_balancers:
        if rule.tls:
            path, pem = service._cert(rule)
            path.parent.mkdir(exist_ok=True)
            path.write_text(pem)
    text = haproxy.render(doc, tmp_path, certs)
    (tmp_path / "haproxy.cfg").write_text(text)
    result = subprocess.run(["haproxy", "-c", "-q", "-f", str(tmp_path / "haproxy.cfg")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "http-check send meth GET uri '/health?x=1&y=$HOME'" in text
    assert "cookie SRV insert indirect nocache" in text
    assert "stick on req.cook(JSESSIONID)" in text and "stick store-response" in text
    assert "stick-table type ip size 1000 expire 60s" in text
    assert "send-proxy" in text and "option forwardfor" in text
    assert "server vm1 10.1.1.10:8080 weight 0 check disabled" in text
    assert "server vm2 10.1.1.11:8081 weight 3 check" in text


def test_same_rules_render_the_same_text_whatever_the_generation(tmp_path: Path):
    doc = doc_with(lb(), lb("two", public_port=81, protocol="http"))
    later = doc.model_copy(update={"generation": doc.generation + 5})
    assert haproxy.render(doc, tmp_path, {}) == haproxy.render(later, tmp_path, {})


# -- runtime API ---------------------------------------------------------------------------


def test_weight_and_enable_changes_become_runtime_commands():
    old = doc_with(lb())
    members = [{"id": "vm1", "ip": "10.1.1.10", "weight": 7},
               {"id": "vm2", "ip": "10.1.1.11", "port": 8081, "weight": 3, "enabled": False}]
    new = doc_with(lb(members=members))
    assert haproxy._same_structure(old.load_balancers, new.load_balancers)
    assert haproxy.runtime_commands(old.load_balancers, new.load_balancers) == [
        "set server lb_web/vm1 weight 7",
        "set server lb_web/vm2 state maint",
    ]


def test_any_other_change_is_structural():
    old = doc_with(lb())
    assert not haproxy._same_structure(old.load_balancers,
                                       doc_with(lb(algorithm="leastconn")).load_balancers)
    moved = [{"id": "vm1", "ip": "10.1.1.12"}, {"id": "vm2", "ip": "10.1.1.11", "port": 8081,
                                                 "weight": 3}]
    assert not haproxy._same_structure(old.load_balancers,
                                       doc_with(lb(members=moved)).load_balancers)


def test_batches_stay_under_the_line_limit():
    commands = [f"set server lb_r/m{i} weight {i % 256}" for i in range(2000)]
    lines = rt.batches(commands, max_line=1000)
    assert all(len(line) <= 1000 for line in lines)
    assert ";".join(lines).split(";") == commands


STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
lb_web,FRONTEND,,,2,5,100,40,1200,5600,0,0,0,,,,,OPEN,
lb_web,vm1,0,0,1,3,,20,600,2800,,0,,0,0,0,0,UP,1
lb_web,vm2,0,0,1,2,,20,600,2800,,0,,0,0,0,0,DOWN,3
lb_web,BACKEND,0,0,2,5,10,40,1200,5600,0,0,,0,0,0,0,UP,4
"""  # noqa: E501


def test_stat_becomes_per_rule_status():
    frontends, backends, servers = rt.parse_stat(STAT)
    status = haproxy.rule_status(doc_with(lb()).load_balancers, frontends, servers)["web"]
    assert status["members_up"] == 1 and status["members_down"] == 1
    assert status["sessions"] == 2 and status["bytes_in"] == 1200
    assert status["members"]["vm2"] == {"status": "DOWN", "weight": 3, "sessions": 1,
                                        "bytes_in": 600, "bytes_out": 2800}


# -- server state across reloads -----------------------------------------------------------

STATE_HEADER = ("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
                "srv_uweight srv_iweight srv_time_since_last_change srv_check_status "
                "srv_check_result srv_check_health srv_check_state srv_agent_state "
                "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord")


def _state_line(server: str, addr: str, port: int, op: int = 0, admin: int = 0,
                weight: int = 1) -> str:
    return (f"3 lb_web 1 {server} {addr} {op} {admin} {weight} {weight} 12 6 2 0 6 0 0 0 - "
            f"{port} - 0 0 - - 0")


def test_server_state_keeps_health_drops_moved_members_and_takes_desired_settings():
    text = "\n".join(["1", STATE_HEADER,
                      _state_line("vm1", "10.1.1.10", 8080, op=0, admin=1, weight=9),
                      _state_line("vm2", "10.1.1.11", 80, op=2),
                      _state_line("gone", "10.1.1.99", 80)]) + "\n"
    desired = {("lb_web", "vm1"): rt.DesiredServer("10.1.1.10", 8080, 4, True),
               ("lb_web", "vm2"): rt.DesiredServer("10.1.1.11", 8081, 1, True)}
    out = rt.carry_server_state(text, desired).splitlines()
    assert out[0] == "1" and out[1] == STATE_HEADER
    kept = [line.split(" ") for line in out[2:]]
    assert len(kept) == 1 and kept[0][3] == "vm1"
    assert kept[0][5] == "0"  # still down: health survives
    assert kept[0][6] == "0" and kept[0][7] == kept[0][8] == "4"  # enabled, weight 4


def test_unreadable_server_state_becomes_an_empty_one():
    assert rt.carry_server_state("garbage", {}) == "1\n"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_router_render_writes_and_checks_haproxy_cfg(tmp_path: Path, capsys):
    import argparse
    import json
    import os

    from appliances.router import cli as router_cli

    def main(argv: list[str]) -> int:
        parser = argparse.ArgumentParser()
        router_cli.register(parser.add_subparsers())
        args = parser.parse_args(argv)
        return args.func(args)

    cert, key = _self_signed()
    data = full()
    data["load_balancers"] = [lb(), lb("tls", public_port=443, protocol="http",
                                     tls={"certificate": cert, "private_key": key})]
    (tmp_path / "doc.json").write_text(json.dumps(data))
    argv = ["router", "render", str(tmp_path / "doc.json"), "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        argv.append("--check")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out" / "haproxy" / "haproxy.cfg").is_file()
    (pem,) = (tmp_path / "out" / "haproxy" / "certs").glob("tls-*.pem")
    assert pem.stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert "haproxy -c: ok" in out
