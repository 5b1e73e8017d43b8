"""The agent's own certificate must name its appliance id; clients check it."""

from __future__ import annotations

import pytest

from appliances.agent.tls import certificate_names, check_identity
from appliances.lab.pki import create_lab_pki


def test_certificate_names_include_the_appliance_id(tmp_path):
    paths = create_lab_pki(tmp_path, "r-abc", "169.254.100.2")
    assert "r-abc" in certificate_names(paths.server_cert)
    check_identity(paths.server_cert, "r-abc")


def test_agent_refuses_a_certificate_for_another_appliance(tmp_path):
    paths = create_lab_pki(tmp_path, "r-abc", "169.254.100.2")
    with pytest.raises(SystemExit, match="names .*r-abc.*not this appliance \\(r-other\\)"):
        check_identity(paths.server_cert, "r-other")
