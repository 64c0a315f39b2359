"""The README's two commands are a promise: CI must run exactly the documented test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command_after(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, f"README.md has no fenced bash block after <!-- {marker} -->"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _command_after("test-command") in ci_lines


def test_readme_main_command_runs_the_trainer_with_no_arguments():
    command = _command_after("main-command")
    assert command.startswith("python -m pip install torch==2.13.0 && ")
    assert command.endswith("python -m mmengine.train")


def test_torch_is_never_an_unpinned_requirement():
    # An unpinned torch would let pip replace the CPU wheel by a multi-GB CUDA build.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'"torch[<>=~!; ]|"torch"', pyproject)
