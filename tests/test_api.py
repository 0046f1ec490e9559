"""The flat public API (`import ace_interp as ai`): lazy, complete, and every docstring's opening example runs."""

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ace_interp as ai

ROOT = Path(__file__).resolve().parents[1]
# the names the README and the issue promise
PROMISED = ["load_model", "save_model", "top_value_neurons", "query_scores", "rank_layers", "ablate", "EditRequest",
            "edit", "evaluate", "load_mquake"]


def opening_example(doc: str) -> str:
    """The indented code block after a docstring's summary paragraph."""
    lines = inspect.cleandoc(doc).splitlines()
    after_summary = lines.index("") if "" in lines else len(lines)
    start = next((i for i, line in enumerate(lines) if i > after_summary and line.strip()), len(lines))
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    code = textwrap.dedent("\n".join(block)).strip()
    assert code.startswith("import ace_interp as ai"), f"the docstring does not open with an example:\n{doc[:300]}"
    return code


def test_importing_the_package_imports_no_torch():
    """`ace --help` and `import ace_interp` stay fast: the API's modules load on first use."""
    code = "import sys, ace_interp, ace_interp.cli; ace_interp.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_every_promised_name_is_public_and_documented():
    assert set(PROMISED) <= set(ai.__all__) and set(ai.__all__) <= set(dir(ai))
    for name in ai.__all__:
        assert getattr(ai, name).__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        ai.load_modle  # noqa: B018
    from ace_interp import plotting  # submodules still import through the face

    assert plotting.__name__ == "ace_interp.plotting"
    code = "import ace_interp as ai; print(ai.model.hf_parameters.__module__)"  # and as attributes, on first use
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "ace_interp.model.architecture"


@pytest.mark.parametrize("name", PROMISED)
def test_the_docstring_example_runs(name, tmp_path, monkeypatch):
    """Each example, verbatim, in a folder where `assets/` is the repository's and files may be written."""
    (tmp_path / "assets").symlink_to(ROOT / "assets", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    code = opening_example(getattr(ai, name).__doc__).replace('"/tmp/toy-copy"', repr(str(tmp_path / "toy-copy")))
    namespace: dict = {}
    exec(compile(code, f"<{name} docstring>", "exec"), namespace)
    assert "ai" in namespace
