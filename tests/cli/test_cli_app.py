"""pneumo.cli: the command line's own contract (no servers)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_leaves_prefect_and_tensorflow_unloaded():
    """Prefect reads PREFECT_API_URL once, when it is first imported: a CLI that imported it before
    exporting the stack's address ran flows on a throwaway local server, out of the operator's UI."""
    code = "import sys, pneumo.cli; print(sorted(m for m in ('prefect', 'tensorflow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
