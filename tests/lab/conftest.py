"""Fixtures for the lab's own tests. Other folders use appliances.lab.testing directly."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from appliances.lab.testing import lab_skip_reason

STUB_AGENT = [sys.executable, str(Path(__file__).with_name("stub_agent.py"))]


@pytest.fixture
def needs_lab() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def stub_agent() -> list[str]:
    """agent_cmd for a lab whose agent only answers (configures nothing)."""
    return list(STUB_AGENT)


@pytest.fixture
def host_resolv_conf():
    """Fails the test if the host's /etc/resolv.conf changed while it ran."""
    path = Path("/etc/resolv.conf")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    yield path
    after = hashlib.sha256(path.read_bytes()).hexdigest()
    assert after == before, "the host's /etc/resolv.conf was modified"


@pytest.fixture
def state_root():
    """A folder for lab state that daemons running as nobody can enter (unlike tmp_path)."""
    root = Path(tempfile.mkdtemp(prefix="skiff-lab-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)
