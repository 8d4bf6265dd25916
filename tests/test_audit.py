"""benchmarks/audit.py: pip-audit's report summed up for `make lint`."""

from __future__ import annotations

from benchmarks.audit import summary


def test_a_known_vulnerability_fails_the_lint_and_names_the_fix():
    report = {
        "dependencies": [
            {"name": "gradio", "version": "6.19.0", "vulns": [
                {"id": "CVE-2026-59806", "fix_versions": ["6.20.0"]}
            ]},
            {"name": "numpy", "version": "2.4.6", "vulns": []},
        ]
    }  # fmt: skip
    lines, status = summary(report)
    assert status == 1
    assert lines[0] == "audit: gradio 6.19.0: CVE-2026-59806 (fixed in 6.20.0)"
    assert lines[-1] == "audit: 1 known vulnerabilities in 2 audited dependencies"


def test_dependencies_that_could_not_be_audited_are_counted_not_passed_in_silence():
    reason = "Dependency not found on PyPI and could not be audited: numpy (2.4.6)"
    report = {"dependencies": [{"name": "numpy", "skip_reason": reason}, {"name": "pillow"}]}
    lines, status = summary(report)
    assert status == 0 and len(lines) == 1
    assert lines[0].startswith("audit: 0 known vulnerabilities in 1 audited dependencies; 1 could")
    assert reason in lines[0]
