"""Every valid document renders to configs the real nft and dnsmasq accept.

Needs root: ``nft -c`` and ``nft -f`` run in one throwaway network namespace
(``skf-prop-<random>``) made for this module and deleted afterwards, so the
host's ruleset is never touched. dnsmasq only parses (``--test``).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from router_strategies import documents, later_versions, repair

from appliances.router import nft_model, nft_render
from appliances.router.parse import RouterParser
from appliances.router.services import dnsmasq
from appliances.router.verify import parse_document

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("nft") and shutil.which("dnsmasq")
                                  and shutil.which("ip")),
        reason="needs root, nft, ip and dnsmasq",
    ),
]

LAB = settings(max_examples=60, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GOLDEN = Path(__file__).parents[1] / "golden"
AGENT_PORT = 8443
DNSMASQ_DIR = "/var/lib/skiff/agent/dnsmasq"


class Namespace:
    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.workdir = workdir
        self._n = 0

    def write(self, text: str, suffix: str) -> Path:
        self._n += 1
        path = self.workdir / f"{self._n}{suffix}"
        path.write_text(text)
        return path

    def nft(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, "nft", *args],
                              capture_output=True, text=True, timeout=60, input=stdin)

    def nft_file(self, text: str, check_only: bool = False) -> None:
        path = self.write(text, ".nft")
        result = self.nft(*(["-c"] if check_only else []), "-f", str(path))
        assert result.returncode == 0, f"nft refused {path}:\n{result.stderr}\n{text[:4000]}"

    def elements(self) -> dict[str, list[str]]:
        """Each set's and map's elements in the kernel, normalised (sorted JSON)."""
        result = self.nft("-j", "list", "table", "ip", nft_model.TABLE)
        assert result.returncode == 0, result.stderr
        out: dict[str, list[str]] = {}
        for item in json.loads(result.stdout)["nftables"]:
            obj = item.get("set") or item.get("map")
            if obj is not None:
                out[obj["name"]] = sorted(json.dumps(e, sort_keys=True)
                                          for e in obj.get("elem", []))
        return out


@pytest.fixture(scope="module")
def netns(tmp_path_factory):
    name = f"skf-prop-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield Namespace(name, tmp_path_factory.mktemp("nft"))
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def dnsmasq_test(contents: dict[str, str], workdir: Path) -> None:
    conf = workdir / "check.conf"
    conf.write_text(dnsmasq.check_config(contents))
    result = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"dnsmasq --test: {result.stderr}\n{conf.read_text()}"


@LAB
@given(documents())
def test_valid_documents_render_to_accepted_configs(netns, data):
    doc = parse_document(data)
    netns.nft_file(nft_render.render_ruleset(nft_model.plan(doc, AGENT_PORT)), check_only=True)
    dnsmasq_test(dnsmasq.render(doc, DNSMASQ_DIR), netns.workdir)


@LAB
@given(later_versions())
def test_delta_after_full_equals_full_of_second(netns, pair):
    """As the agent does it: A applied whole, then B (parsed by a parser that accepted
    A, so unchanged items are shared) applied as an element delta. The kernel's sets
    must then hold exactly what applying B whole gives."""
    a, b = pair[0], repair(pair[1], parse_document)
    parser = RouterParser()
    doc_a = parser.parse(copy.deepcopy(a))
    parser.accept(a, doc_a)
    doc_b = parser.parse(b)
    netns.nft_file(nft_render.render_ruleset(nft_model.plan(doc_a, AGENT_PORT)))
    assert _counts(netns.elements()) == _counts_of(nft_model.plan(doc_a, AGENT_PORT))
    deletes, adds = nft_model.element_changes(doc_a, doc_b)
    context = {**nft_model.shape_context(doc_b, AGENT_PORT), "generation": doc_b.generation}
    delta = nft_render.render_delta(deletes, adds, context)
    if delta is not None:
        netns.nft_file(delta)
    after_delta = netns.elements()
    plan_b = nft_model.plan(doc_b, AGENT_PORT)
    netns.nft_file(nft_render.render_ruleset(plan_b))
    after_full = netns.elements()
    assert after_delta == after_full
    assert _counts(after_full) == _counts_of(plan_b)


def _counts(listing: dict[str, list[str]]) -> dict[str, int]:
    return {name: len(elems) for name, elems in listing.items()}


def _counts_of(plan: nft_model.NftPlan) -> dict[str, int]:
    return {name: len(elems) for name, elems in plan.elements.items()}


# --- the golden files are accepted too -------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in (GOLDEN / "expected").iterdir()
                                        if p.name != "delta"))
def test_golden_renders_are_accepted(netns, name):
    expected = GOLDEN / "expected" / name
    netns.nft_file((expected / "ruleset.nft").read_text(), check_only=True)
    contents = {f: (expected / f).read_text()
                for f in ("dnsmasq.conf", "dhcp-hosts", "dhcp-opts", "hosts", "servers")}
    dnsmasq_test(contents, netns.workdir)


@pytest.mark.parametrize("pair", sorted(p.stem for p in (GOLDEN / "expected" / "delta").iterdir()))
def test_golden_delta_applies(netns, pair):
    old, new = pair.split("__")
    netns.nft_file((GOLDEN / "expected" / old / "ruleset.nft").read_text())
    netns.nft_file((GOLDEN / "expected" / "delta" / f"{pair}.nft").read_text())
    after_delta = netns.elements()
    netns.nft_file((GOLDEN / "expected" / new / "ruleset.nft").read_text())
    assert after_delta == netns.elements()
