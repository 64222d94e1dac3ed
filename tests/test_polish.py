"""Smaller things a user meets (issue 11): quiet logs, plain progress off a terminal, EMA, labelled
published figures, warnings on missing classes, a stop on diverging latents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_logging_hides_faiss_loader_info_but_keeps_ours():
    code = ("import logging, sys\n"
            "from latentdd.cli import main\n"
            "main(['datasets'])\n"
            "import faiss\n"
            "logging.getLogger('latentdd.test').info('ours')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "INFO ours" in done.stderr
    assert "faiss" not in done.stderr.lower(), done.stderr
