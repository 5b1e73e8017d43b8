"""ansible-lint on the whole ansible/ tree, offline (no Galaxy): profile and rule
choices live in ansible/.ansible-lint."""

from __future__ import annotations

import subprocess

import pytest
from playbooks import ANSIBLE, BIN, ansible_env

pytestmark = pytest.mark.timeout(300)


def test_ansible_tree_is_lint_clean(tmp_path):
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--nocolor", "--config-file",
         str(ANSIBLE / ".ansible-lint")],
        cwd=ANSIBLE, env=ansible_env(tmp_path, ANSIBLE_LINT_SKIP_VERSION_CHECK="1",
                                     NO_COLOR="1"),
        capture_output=True, text=True, check=False, timeout=280)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout
