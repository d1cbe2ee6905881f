#!/usr/bin/env python3
"""Checks a `cargo nextest run --test e2e` on the local target, as its judge would.

Usage: check-nextest-run.py NEXTEST_OUTPUT ARTIFACTS_DIR

NEXTEST_OUTPUT is what `cargo nextest run --test e2e --status-level skip` printed (no filter, so
every SKIP line is a test listed as ignored).

- the environment was brought up once for the whole run: one server folder for the run id that
  nextest printed, one Envoy start in the phases of report.json, and the server finished (its
  `done` file) with no process of the run left;
- nextest reported the Kubernetes checks (not applicable on local) as skipped, and every other
  scenario as passed.
"""
import json
import os
import re
import sys
import time
from pathlib import Path

WAIT_FOR_TEARDOWN_S = 60


def fail(message: str) -> None:
    print(f"check-nextest-run: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        fail("usage: check-nextest-run.py NEXTEST_OUTPUT ARTIFACTS_DIR")
    output = Path(sys.argv[1]).read_text()
    artifacts = Path(sys.argv[2])
    match = re.search(r"Nextest run ID ([0-9a-f-]+)", output) or fail("no run id in nextest's output")
    run_dir = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "e2e-nextest" / match.group(1)

    # The server tears down once nextest has exited: give it a bounded moment.
    deadline = time.monotonic() + WAIT_FOR_TEARDOWN_S
    while not (run_dir / "done").exists():
        if time.monotonic() > deadline:
            fail(f"the environment server of {run_dir} did not finish within {WAIT_FOR_TEARDOWN_S} s")
        time.sleep(0.2)
    pid = int((run_dir / "server.pid").read_text())
    while Path(f"/proc/{pid}").exists() and not _zombie(Path(f"/proc/{pid}")):
        if time.monotonic() > deadline:
            fail(f"the environment server (pid {pid}) is still running")
        time.sleep(0.2)
    # The server and everything it started (Envoy, the replicas) carry its variable.
    marker = f"E2E_NEXTEST_SERVE={run_dir.resolve()}"
    left = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
            and marker in _environ(p).split("\0") and not _zombie(p)]
    if left:
        fail(f"processes of the run are left: {left}")

    report = json.loads((artifacts / "report.json").read_text())
    starts = [p for p in report["phases"] if p["phase"] == "envoy start"]
    if len(starts) != 1:
        fail(f"report.json has {len(starts)} Envoy starts, not one: {report['phases']}")
    if report["outcome"] != "passed":
        fail(f"report.json outcome is {report['outcome']}")

    def names(status: str) -> list:
        return sorted(m.group(1) for m in re.finditer(rf"^\s*{status} \[.*?\] .*?::e2e (\S+)\s*$", output, re.M))
    skipped, passed = names("SKIP"), names("PASS")
    failed = names("FAIL") + names("TIMEOUT") + names("SIGSEGV") + names("ABORT")
    if failed:
        fail(f"nextest reports failures: {failed}")
    kubernetes = [n for n in skipped if n.startswith("kubernetes::")]
    if len(kubernetes) != 4 or kubernetes != skipped:
        fail(f"nextest skipped {skipped}, expected the four kubernetes:: checks")
    scenarios = len(report["scenarios"])
    if len(passed) != scenarios:
        fail(f"nextest passed {len(passed)} tests, the server answered {scenarios} scenarios")
    ran = len(passed)
    print(f"nextest run ok: one bring-up ({run_dir.name}), {ran} scenarios passed, "
          f"{len(skipped)} skipped as not applicable")


def _zombie(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _environ(proc: Path) -> str:
    try:
        return (proc / "environ").read_text(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    main()
