"""`make demo`'s command runs the whole product end to end and shows real answers from each slot."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_serves_a_real_request_from_each_slot():
    name = f"pytest-demo-{os.getpid()}"
    result = subprocess.run([sys.executable, "-m", "funcplane.cli.main", "demo", "--name", name, "--down"],
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, f"demo failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    answers = [json.loads(line.strip()) for line in result.stdout.splitlines() if line.strip().startswith("{")]
    assert [(a["release"], a["environment"]) for a in answers] == [("1.0", "production"), ("2.0", "staging")]
    assert "functionapp.funcplane.io/demo   True" in result.stdout
