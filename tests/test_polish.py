"""Smaller things a user meets (issue 11): quiet logs, plain progress off a terminal, EMA, labelled
published figures, warnings on missing classes, a stop on diverging latents."""

from __future__ import annotations

import re

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from latentdd.data import SyntheticImages, load_dataset
from latentdd.evaluate.trainer import EvalConfig, evaluate_synthetic
from latentdd.prior import fit as prior_fit
from latentdd.progress import PlainProgress, progress_bar
from latentdd.published import PROTOCOL, PUBLISHED, published
from latentdd.pipelines.compare import _with_costs, comparison_markdown
from latentdd.pipelines.tables import Row

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


def test_nested_progress_off_a_terminal_prints_plain_lines(capsys):
    test, train = load_dataset("digits", "test"), load_dataset("digits", "train")
    synthetic = SyntheticImages(train.images[:50], train.labels[:50], list(train.class_names))
    config = EvalConfig(width=8, depth=2, epochs=3, batch_size=64, dsa=False, num_eval=2, compile="off")
    evaluate_synthetic(synthetic, test, config, mean=torch.tensor([0.5]), std=torch.tensor([0.25]), flip=False,
                       progress=True)  # an evaluation's bar over runs, each with a bar over epochs
    err = capsys.readouterr().err
    assert "\x1b[" not in err and "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "evaluate 50 images: start 0/2 it"
    assert lines[1].startswith("train seed 0: done 3/3 it in ")
    assert lines[-1].startswith("evaluate 50 images: done 2/2 it in ") and "acc=" in lines[-1]
    assert len(lines) == 5  # start, 50%, done, and one line per inner bar


def test_plain_progress_prints_at_most_one_line_per_tenth_and_resumes():
    out = io.StringIO()
    bar = progress_bar(total=1000, initial=200, desc="fit prior", unit="step", file=out)
    for _ in range(800):
        bar.update(1)
    bar.set_postfix(loss="0.1")
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "fit prior: resume 200/1000 step"
    assert [line.split()[2] for line in lines[1:-1]] == [f"{p}%" for p in range(30, 100, 10)]
    assert all(re.search(r", ETA \d+ s$", line) for line in lines[1:-1])  # the time left at the rate so far
    assert lines[-1].startswith("fit prior: done 1000/1000 step in ") and lines[-1].endswith("loss=0.1")
    assert "ETA" not in lines[-1]


def test_a_nested_bar_in_a_log_prints_its_tenths_only_once_it_runs_long(monkeypatch):
    import latentdd.progress as progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])

    def lines(seconds_an_epoch: float) -> list[str]:
        out = io.StringIO()
        for _ in progress_bar(range(10), desc="train seed 0", unit="epoch", leave=False, file=out):
            now[0] += seconds_an_epoch
        return out.getvalue().splitlines()

    # 10 s an epoch: quiet for the first minute, then each tenth, then the end line
    assert [line.split()[3] for line in lines(10.0)] == ["60%", "70%", "80%", "90%", "done"]
    assert [line.split()[3] for line in lines(1.0)] == ["done"]  # a short training: its end line only


def test_progress_on_a_terminal_is_tqdm():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress_bar(range(3), file=Terminal()), tqdm)
    assert isinstance(progress_bar(range(3), file=io.StringIO()), PlainProgress)


def test_prior_ema_is_diffusers_ema_model_with_a_constant_capped_decay():
    model = torch.nn.Linear(3, 2)
    ema = prior_fit._ema(model, decay=0.2)
    expected = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(0)
    for n in range(1, 6):  # n / (9 + n) passes the cap 0.2 at n = 3
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        ema.step(model.parameters())
        decay = 0.0 if n == 1 else min(0.2, n / (9 + n))
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
        for e, s in zip(expected, ema.shadow_params):
            torch.testing.assert_close(s, e)


def test_compare_table_labels_each_published_figure_with_its_protocol(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"wall_seconds": 5.0, "record": {"stage_seconds": {"distill": 1.0}}}))
    rows = [_with_costs(Row(method, label, 10, 77.2, 0.2, 3, str(report)), "fashion_mnist")
            for method, label in (("random", "random-real (pixels)"), ("herding", "herding"), ("bacon", "bacon"),
                                  ("kmeans", "kmeans"))]
    table = comparison_markdown(rows, "fashion_mnist", EvalConfig())
    assert "| random-real (pixels) | 10 | 77.20 ± 0.20 (n=3) | 73.8 (DC protocol: 300 ep, no aug) |" in table
    assert "| herding | 10 | 77.20 ± 0.20 (n=3) | 71.1 (DC protocol: 300 ep, no aug) |" in table
    assert "| bacon | 10 | 77.20 ± 0.20 (n=3) | 84.23 (IDM/BACON protocol: 1000 ep, DSA aug, factorized --aug" in table
    assert "| kmeans | 10 | 77.20 ± 0.20 (n=3) |  |" in table
    assert [r.csv()["published_protocol"] for r in rows][::3] == ["DC protocol: 300 ep, no aug", None]


def test_published_figures_carry_their_protocol():
    assert published("fashion_mnist", "dsa", 10) == (84.6, 0.3, "DSA protocol: 1000 ep, DSA aug")
    assert published("mnist", "dc", 10).protocol == "DC protocol: 300 ep, crop/scale/rotate aug"
    assert published("fashion_mnist", "kmeans", 10) is None
    assert all(method in PROTOCOL for figures in PUBLISHED.values() for method in figures)
