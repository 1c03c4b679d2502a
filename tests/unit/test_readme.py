"""README's install, main-job and test commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up and run", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", setup, flags=re.S)
    return [line.strip() for block in (blocks[0], blocks[2]) for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_commands() -> None:
    venv, install, main_job, browser, test = readme_commands()
    assert install == "pip install torch==2.13.0 -e '.[test]'"
    assert main_job == "rayrec serve"
    assert browser == "apt-get update && apt-get install -y chromium"  # the browser test's Chromium
    assert test == "python -m pytest"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and browser in ci and test in ci
    assert ci.index(browser) < ci.index(test)
    # The main job once, on a fresh models root (as on a new machine): stopped once it answered from the
    # model it trained in the background and swapped to; no other start of it without a --model.
    assert f'{main_job} --models-root "$(mktemp -d)" --exit-after-swap' in ci
    assert [line for line in ci if line.startswith(main_job) and "--model " not in line] == [
        f'{main_job} --models-root "$(mktemp -d)" --exit-after-swap']
    assert ". .venv/bin/activate" in ci and venv.startswith("python3 -m venv .venv")
