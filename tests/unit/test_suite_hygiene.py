"""The suite's own hygiene (tests/conftest.py), run on a small inner session: a failed test shows
the log tails its processes registered, and a process of a test cluster left running fails the
session, listed, and is stopped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
TESTS = Path(__file__).resolve().parents[1]
CONFTEST = (TESTS / "conftest.py").read_text()


@pytest.fixture(autouse=True)
def _helpers_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


def test_a_timed_out_test_shows_the_registered_log_tails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner="""
        import time
        import diagnostics

        def test_waits_forever():
            diagnostics.register("operator (ns)", lambda: chr(10).join(f"line {n}" for n in range(100)))
            time.sleep(30)
    """)
    result = pytester.runpytest_subprocess("--timeout=3", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "Timeout (>3.0s)" in output
    assert "operator (ns): last 40 lines" in output and "line 99" in output and "line 59" not in output


def test_a_process_of_a_test_cluster_left_running_fails_the_session(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner="""
        import subprocess, sys

        def test_leaves_a_process(tmp_path):
            (tmp_path / "c").mkdir()
            process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--data-dir={tmp_path}/c/etcd"],
                                       start_new_session=True)
            (tmp_path.parent.parent / "leaked.pid").write_text(str(process.pid))
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    pid = int((pytester.path / "leaked.pid").read_text())
    assert "1 process(es) of test clusters outlived the session (now stopped)" in output, output
    assert f"pid {pid}:" in output, output
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text(), (
        f"pid {pid} still runs after the session stopped it: {Path(f'/proc/{pid}/stat').read_text()}")


def test_no_test_module_imports_another() -> None:
    """Shared helpers and fixtures live in conftest.py and *_support.py modules: a test module that imports
    another one runs that module's fixtures and tests' imports twice and hides where things live."""
    importing = []
    for module in sorted(TESTS.rglob("*.py")):
        for number, line in enumerate(module.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("from test_", "import test_")):
                importing.append(f"{module.relative_to(TESTS)}:{number}: {stripped}")
    assert not importing, "move what is shared into a support module or a conftest:\n" + "\n".join(importing)
