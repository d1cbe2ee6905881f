#!/usr/bin/env python3
"""Checks the reports of the scenario suite's run on the local target, as a CI system reads them.

Usage: check-reports.py ARTIFACTS_DIR SCENARIO_COUNT

- junit.xml parses, has one testcase per scenario, no failure, and its skipped cases are exactly
  the not-applicable ones of report.json;
- report.json says passed, lists every scenario, ends its phases with the teardown and carries a
  latency breakdown with the four hops;
- latency.svg is an SVG that names the hops.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def fail(message: str) -> None:
    print(f"check-reports: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        fail("usage: check-reports.py ARTIFACTS_DIR SCENARIO_COUNT")
    artifacts, expected = Path(sys.argv[1]), int(sys.argv[2])

    report = json.loads((artifacts / "report.json").read_text())
    if report["outcome"] != "passed":
        fail(f"report.json outcome is {report['outcome']}")
    if len(report["scenarios"]) != expected:
        fail(f"report.json lists {len(report['scenarios'])} scenarios, the suite has {expected}")
    if report["phases"][-1]["phase"] != "teardown":
        fail(f"the last phase is {report['phases'][-1]['phase']}, not the teardown")
    latency = report.get("latency") or fail("report.json has no latency breakdown")
    for hop in ("round_trip_ms", "gateway_overhead_ms", "sidecar_and_network_ms",
                "app_handling_ms", "fft_ms"):
        if set(latency[hop]) != {"p50", "p90", "p99"}:
            fail(f"latency.{hop} is {latency[hop]}")
    not_applicable = {s["name"] for s in report["scenarios"] if s["verdict"] == "not_applicable"}

    root = ET.parse(artifacts / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    if len(cases) != expected:
        fail(f"junit.xml has {len(cases)} testcases, the suite has {expected} scenarios")
    if root.findall(".//failure") or root.findall(".//error"):
        fail("junit.xml has failures")
    skipped = {f"{c.get('classname')}::{c.get('name')}" for c in cases if c.find("skipped") is not None}
    if skipped != not_applicable or not skipped:
        fail(f"junit.xml skips {sorted(skipped)}, report.json's not applicable: {sorted(not_applicable)}")

    svg = (artifacts / "latency.svg").read_text()
    ET.fromstring(svg)
    for label in ("gateway overhead", "sidecar + network", "app handling", "FFT"):
        if label not in svg:
            fail(f"latency.svg does not show {label!r}")
    print(f"reports ok: {expected} scenarios, {len(skipped)} skipped as not applicable, "
          f"round trip p50 {latency['round_trip_ms']['p50']:.3f} ms")


if __name__ == "__main__":
    main()
