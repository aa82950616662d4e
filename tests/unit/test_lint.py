"""The house rules CI enforces through the test suite: ruff (lint and format) and mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_ruff_lint_passes():
    run = _run(str(BIN / "ruff"), "check", ".")
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_format_is_applied():
    run = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_passes():
    """Every package we ship, against the generated message stubs (strict on the domain,
    the ports and the wire mappings: pyproject.toml)."""
    run = _run(sys.executable, "-m", "mypy", "core", "policy", "api_gateway", "adapters", "scripts")
    assert run.returncode == 0, run.stdout + run.stderr
