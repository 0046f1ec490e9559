"""The README's Python quickstart runs verbatim (on the real default model, SmolLM2-135M)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def quickstart_block(markdown: str) -> str:
    """The first ```python block under the heading that names "Quickstart"."""
    heading = re.search(r"^#+ .*quickstart.*$", markdown, flags=re.IGNORECASE | re.MULTILINE)
    assert heading, "the README has no Quickstart heading"
    block = re.search(r"^```python\n(.*?)^```", markdown[heading.end():], flags=re.DOTALL | re.MULTILINE)
    assert block, "the README's Quickstart section has no ```python block"
    return block.group(1)


def run_quickstart(readme: Path, folder: Path) -> dict:
    """Execute the block as written, in `folder` (where `assets/` is the repository's and files may be written)."""
    code = quickstart_block(readme.read_text(encoding="utf-8"))
    (folder / "assets").symlink_to(ROOT / "assets", target_is_directory=True)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, f"{readme.name} quickstart", "exec"), namespace)
    return namespace


def test_quickstart_block_is_found_under_its_heading():
    text = "# x\n```python\nwrong = 1\n```\n## Quickstart (Python)\n\nprose\n\n```python\nright = 2\n```\n"
    assert quickstart_block(text) == "right = 2\n"
    with pytest.raises(AssertionError, match="no Quickstart heading"):
        quickstart_block("# x\n```python\nx = 1\n```\n")


@pytest.mark.real_model
def test_the_readme_quickstart_runs_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_quickstart(README, tmp_path)
    assert "ai" in namespace
    saved = [p for p in tmp_path.iterdir() if (p / "config.json").exists()]
    code = quickstart_block(README.read_text(encoding="utf-8"))
    assert ("save_model" in code) == bool(saved), "a model the quickstart saves is a loadable checkpoint folder"
