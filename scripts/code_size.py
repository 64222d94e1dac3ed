"""The size of the code at git revisions, side by side: what issue 33's closing note measures.

For each revision: the lines of latentdd/ and pipelines/ (Python files), the five largest files and the five
largest functions (by lines, from the AST), and the number of pairs the `duplicates` tool lists in those two
folders (a pair: two places sharing six or more lines, the same or of the same shape).

    python scripts/code_size.py 1b8dea3 HEAD > results/internals/code_size.md
"""

from __future__ import annotations

import argparse
import io
import ast
import re
import shutil
import subprocess
import tarfile
import tempfile

FOLDERS = ("latentdd", "pipelines")


def sources(rev: str) -> dict[str, str]:
    """path -> text of every Python file under FOLDERS at `rev`."""
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "--", *FOLDERS], check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], check=True, capture_output=True, text=True).stdout
            for n in names if n.endswith(".py")}


def functions(path: str, text: str):
    """(lines, 'path:qualified.name') of every function and method."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield child.end_lineno - child.lineno + 1, f"{path}:{name}"
                yield from walk(child, name + ".")

    yield from walk(ast.parse(text), "")


def duplicate_pairs(rev: str) -> int:
    """How many pairs `duplicates` lists for FOLDERS at `rev` (all of them: --most 200)."""
    if not shutil.which("duplicates"):
        return -1
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", "--format=tar", rev, "--", *FOLDERS], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        out = subprocess.run(["duplicates", "--repo", tmp, "--most", "200", "--seconds", "120"], check=True,
                             capture_output=True, text=True).stdout
    rows = len(re.findall(r"^D\d+ ", out, re.MULTILINE))
    more = re.search(r"\(\+(\d+) more pairs\)", out)
    return rows + (int(more.group(1)) if more else 0)


def measure(rev: str) -> dict:
    files = sources(rev)
    lines = {p: t.count("\n") for p, t in files.items()}
    funcs = sorted((f for p, t in files.items() for f in functions(p, t)), reverse=True)
    return {"rev": subprocess.run(["git", "rev-parse", "--short", rev], check=True, capture_output=True,
                                  text=True).stdout.strip(),
            "lines": {folder: sum(n for p, n in lines.items() if p.startswith(folder + "/")) for folder in FOLDERS},
            "files": len(files),
            "largest_files": sorted(((n, p) for p, n in lines.items()), reverse=True)[:5],
            "largest_functions": funcs[:5],
            "duplicate_pairs": duplicate_pairs(rev)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="+", help="git revisions, e.g. the commit before a refactor and HEAD")
    args = parser.parse_args()
    measured = [measure(r) for r in args.revs]
    print("| | " + " | ".join(m["rev"] for m in measured) + " |")
    print("|---" * (len(measured) + 1) + "|")
    for folder in FOLDERS:
        print(f"| lines of {folder}/ | " + " | ".join(str(m["lines"][folder]) for m in measured) + " |")
    print("| Python files | " + " | ".join(str(m["files"]) for m in measured) + " |")
    print("| `duplicates` pairs | " + " | ".join(str(m["duplicate_pairs"]) for m in measured) + " |")
    for key, title in (("largest_files", "largest file"), ("largest_functions", "largest function")):
        for i in range(5):
            print(f"| {title} {i + 1} | " + " | ".join(f"`{m[key][i][1]}` ({m[key][i][0]})" for m in measured)
                  + " |")


if __name__ == "__main__":
    main()
