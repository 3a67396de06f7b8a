"""Write examples/max_of_4.ipynb from examples/max_of_4.py (cells split at `# %%` lines;
`# %% [markdown]` cells have their `# ` prefixes removed). tests/test_examples.py checks that
the notebook in the repository is what this script writes, so the two never drift apart.

    python scripts/build_example_notebook.py
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cells(script: str) -> list[dict]:
    out: list[dict] = []
    for chunk in script.split("# %%")[1:]:
        header, _, body = chunk.partition("\n")
        lines = body.strip("\n").splitlines()
        if header.strip() == "[markdown]":
            text = [line.removeprefix("#").removeprefix(" ") for line in lines]
            out.append({"cell_type": "markdown", "metadata": {}, "source": _source(text)})
        else:
            out.append({"cell_type": "code", "metadata": {}, "execution_count": None,
                        "outputs": [], "source": _source(lines)})  # fmt: skip
    return out


def _source(lines: list[str]) -> list[str]:
    return [line + "\n" for line in lines[:-1]] + lines[-1:]


def notebook(script: str) -> str:
    nb = {
        "cells": cells(script),
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(nb, indent=1) + "\n"


def main() -> None:
    text = notebook((EXAMPLES / "max_of_4.py").read_text())
    (EXAMPLES / "max_of_4.ipynb").write_text(text)


if __name__ == "__main__":
    main()
