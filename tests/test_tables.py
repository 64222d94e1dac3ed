"""The generated tables: the committed README / docs equal what scripts/tables.py makes from the records, and a
number edited by hand is caught."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("latentdd_tables_script", ROOT / "scripts" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tables):
    """Every table and block, generated once for the module."""
    return ({name: make() for name, make in tables.TABLES.items()},
            {name: make() for name, make in tables.BLOCKS.items()})


def test_committed_tables_are_current(tables, capsys):
    """`python scripts/tables.py --check` passes: README.md and docs/*.md hold exactly what the records give."""
    assert tables.main(["--check"]) == 0, capsys.readouterr().out
    names = {m.group("name") for path in tables.doc_files() for m in tables.TABLE_RE.finditer(path.read_text())}
    assert {"headline", "matching", "soft_labels", "calibration", "cross_arch"} <= names


def _edit_first_number(body: str) -> str:
    """`body` with the first accuracy-like number of its first table row changed by 0.01."""
    row = next(line for line in body.splitlines() if line.startswith("| ") and re.search(r"\d+\.\d\d", line)
               and not line.startswith("| IPC") and not line.startswith("| set"))
    m = re.search(r"(\d+)\.(\d\d)", row)
    bumped = f"{m.group(1)}.{(int(m.group(2)) + 1) % 100:02d}"
    return body.replace(row, row[:m.start()] + bumped + row[m.end():], 1)


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md", "docs/calibration.md"])
def test_a_number_edited_by_hand_is_detected(tables, generated, tmp_path, capsys, doc):
    """A copy of a doc with one table number changed is stale; regenerating it restores the committed text."""
    text = (ROOT / doc).read_text()
    m = tables.TABLE_RE.search(text)
    assert m, f"{doc} has no generated table"
    edited = text[:m.start("body")] + _edit_first_number(m.group("body")) + text[m.end("body"):]
    assert edited != text
    copy = tmp_path / Path(doc).name
    copy.write_text(edited)

    tables_, blocks = generated
    assert tables.render(edited, tables_, blocks) == text
    assert tables.main(["--check", str(copy)]) == 1
    assert "stale" in capsys.readouterr().out
    assert copy.read_text() == edited  # --check changes nothing
    assert tables.main([str(copy)]) == 0
    assert copy.read_text() == text


def test_an_edited_cli_reference_is_detected(tables, generated):
    text = (ROOT / "docs/cli.md").read_text()
    edited = text.replace("show this help message and exit", "show help", 1)
    assert edited != text
    assert tables.render(edited, *generated) == text


def test_an_unknown_table_is_an_error(tables):
    with pytest.raises(tables.UnknownTable, match="no_such_table"):
        tables.render("<!-- table:no_such_table:start -->\n<!-- table:no_such_table:end -->\n")


def test_headline_numbers_come_from_the_records(tables, generated):
    """Each accuracy in the headline table is a results.json row of the folder the table names."""
    import json

    body = generated[0]["headline"]
    records = next(line for line in body.splitlines() if line.startswith("Records: "))
    folders = re.findall(r"`(results/[^`]+)/`", records)
    means = {f"{row['mean']:.2f}" for folder in folders for row in json.loads((ROOT / folder / "results.json").read_text())}
    cells = re.findall(r"\| (\d+\.\d\d) ± \d+\.\d\d \(n=\d+\) \|", body)
    assert cells and set(cells) <= means


def test_readme_is_a_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert ".venv/bin/python -m pytest -q" in text
    example = re.search(r"<!-- example:start -->\n```python\n(.*?)```\n<!-- example:end -->", text, re.S)
    assert example and "latentdd.evaluate(" in example.group(1)
