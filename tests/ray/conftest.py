"""Ray tests run in a network namespace that has only loopback, and report here as if they ran here.

Why: a Ray node listens on all interfaces even when told ``--node-ip-address=127.0.0.1`` (measured with
Ray 2.60), and its ports accept cloudpickle. Inside a fresh network namespace (``unshare -n``, as root) the
only interface is ``lo``, so nothing a test starts is reachable from outside the machine.

How: tests marked ``ray`` are not run by this pytest process. At the first of them, this conftest runs one
inner pytest over all the selected ``ray`` tests under ``unshare -n sh -c 'ip link set lo up; ...'`` (with
``EMBEDDIX_RAY_NETNS=1``, which makes the inner run execute them), collects each test's reports from it,
and replays them here (:func:`pytest_runtest_protocol`), so every test passes, fails or skips by name in the
ordinary run, with the inner traceback. Without Ray, or where ``unshare -n`` is not permitted, they skip
with the reason. Tests in this folder without the mark (the pure routing and catalog tests) run here as usual.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INNER = "EMBEDDIX_RAY_NETNS"
REPORTS = "EMBEDDIX_RAY_REPORTS"
_RESULTS = pytest.StashKey[dict[str, list[dict[str, Any]]]]()
_SELECTED = pytest.StashKey[list[str]]()
_WHY_NOT = pytest.StashKey[str | None]()


def _why_not() -> str | None:
    """Why the Ray tests cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'embeddix[ray]')"
    if sys.platform != "linux" or shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs Linux with unshare and ip (a loopback-only network namespace for Ray)"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"unshare -n is not permitted here ({probe.stderr.strip() or probe.returncode}): run as root"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(INNER):
        return
    selected = [item.nodeid for item in items if item.get_closest_marker("ray")]
    config.stash[_SELECTED] = selected
    config.stash[_WHY_NOT] = _why_not() if selected else None


def _run_inner(config: pytest.Config) -> dict[str, list[dict[str, Any]]]:
    """Run the selected Ray tests in the namespace; each test's reports (setup, call, teardown)."""
    with tempfile.TemporaryDirectory(prefix="embeddix-ray-tests-") as tmp:
        out = Path(tmp) / "reports.jsonl"
        log = Path(tmp) / "inner.log"
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=300"]
        inner = " ".join(["exec", *map(_quote, args + config.stash[_SELECTED])])
        env = {**os.environ, INNER: "1", REPORTS: str(out)}
        with open(log, "wb") as fh:
            proc = subprocess.run(
                ["unshare", "-n", "sh", "-c", f"ip link set lo up && {inner}"],
                cwd=config.rootpath,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        results: dict[str, list[dict[str, Any]]] = {}
        if out.exists():
            for line in out.read_text().splitlines():
                rep = json.loads(line)
                results.setdefault(rep["nodeid"], []).append(rep)
        tail = log.read_text(errors="replace")[-6000:]
        for nodeid in config.stash[_SELECTED]:
            if not any(r["when"] == "call" or r["outcome"] != "passed" for r in results.get(nodeid, [])):
                results[nodeid] = [
                    {
                        "nodeid": nodeid,
                        "when": "call",
                        "outcome": "failed",
                        "longrepr": f"no result from the inner Ray run (exit {proc.returncode}):\n{tail}",
                    }
                ]
        return results


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    config = item.config
    if os.environ.get(INNER) or not item.get_closest_marker("ray"):
        return None
    why_not = config.stash.get(_WHY_NOT, None)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    if why_not is not None:
        reports = [{"when": "setup", "outcome": "skipped", "longrepr": why_not}]
    else:
        if _RESULTS not in config.stash:
            config.stash[_RESULTS] = _run_inner(config)
        reports = config.stash[_RESULTS].get(item.nodeid) or [
            {"when": "setup", "outcome": "skipped", "longrepr": "not run by the inner Ray run"}
        ]
    for rep in reports:
        longrepr: Any = rep.get("longrepr")
        if rep["outcome"] == "skipped" and longrepr is not None:
            path, lineno = item.location[0], item.location[1] or 0
            longrepr = (
                path,
                lineno + 1,
                f"Skipped: {longrepr}" if not longrepr.startswith("Skipped") else longrepr,
            )
        report = pytest.TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords=dict.fromkeys(item.keywords, 1),
            outcome=rep["outcome"],
            longrepr=longrepr,
            when=rep["when"],
            duration=rep.get("duration", 0.0),
        )
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Inner run: write each report of a Ray test for the outer run to replay."""
    target = os.environ.get(REPORTS)
    if not os.environ.get(INNER) or not target:
        return
    longrepr = None
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        longrepr = str(report.longrepr[2])
    elif report.longrepr is not None:
        longrepr = str(report.longrepr)
    rep = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "longrepr": longrepr,
        "duration": report.duration,
    }
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rep) + "\n")


# -- fixtures of the inner run ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[str]:
    """A local Ray runtime on loopback (inside the namespace); its GCS address, for other processes."""
    if not os.environ.get(INNER):
        pytest.skip("Ray tests run only inside the loopback-only namespace (see tests/ray/conftest.py)")
    import ray

    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        # one machine playing the machines of a pinned store (RayEmbeddix.open(pin=True))
        resources={"embeddix_catalog": 1, "embeddix_shard_0": 1, "embeddix_shard_1": 1},
        namespace="embeddix",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
