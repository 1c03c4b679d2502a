"""README's install, main-job and test commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up and run", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", setup, flags=re.S)
    return [line.strip() for block in blocks[:2] for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_commands() -> None:
    commands = readme_commands()
    assert commands[1] == "pip install torch==2.13.0 -e '.[test]'"
    assert commands[2] == "python examples/driver_demo.py"
    assert commands[3] == "python -m pytest"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands[1:4]:
        assert command in ci, f"{command!r} is in README but not in .ci/run"
    assert ". .venv/bin/activate" in ci
