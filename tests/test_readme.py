"""The README's two quick-start commands are the ones the project promises; CI runs the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_commands_install_run_and_install_test():
    run, test = quick_start_commands()
    assert "torch==2.13.0" in run and run.endswith("edgeflow run")
    assert "torch==2.13.0" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    _, test = quick_start_commands()
    assert test in (ROOT / ".ci" / "run").read_text()
