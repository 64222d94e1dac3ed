"""The settings flags generated from the config registry: `--SECTION.KEY VALUE` for every key a command reads, the
short flags of one alias table, and their layering over YAML."""

from __future__ import annotations

import pytest

from latentdd.cli import SECTIONS, data_config, decoder_config, eval_config, latent_config, main, make_parser
from latentdd.cli.settings import ALIASES, resolve, settable
from latentdd.configs import CONFIG_SECTIONS


# The flags a command requires besides its settings.
REQUIRED = {"baseline": ["--out", "x"], "evaluate": ["--images", "x"], "encode": ["--out", "x"],
            "distill": ["--out", "x"], "render": ["--out", "x", "--synthetic", "s"], "calibrate": ["--out", "x"]}


def _args(*argv):
    return make_parser().parse_args(list(argv))


def test_dotted_flags_set_nested_keys_and_free_form_params():
    args = _args("distill", "--out", "x", "--latent.fit.max_steps", "3000", "--decoder.prior.lr", "1e-3",
                 "--distill.params.lr=0.5", "--latent.shard_size", "8")
    assert latent_config(args, {}).fit["max_steps"] == 3000 and latent_config(args, {}).shard_size == 8
    assert decoder_config(args, {}).prior["lr"] == 0.001
    assert resolve(args, SECTIONS)["distill.params.lr"] == 0.5


def test_flags_win_over_yaml_and_a_dotted_flag_over_its_short_alias():
    raw = {"evaluator": {"epochs": 3, "lr": 0.5}}
    cfg, _ = eval_config(_args("evaluate", "--images", "x", "--evaluator.epochs", "7", "--epochs", "5"), raw)
    assert (cfg.epochs, cfg.lr) == (7, 0.5)
    cfg, _ = eval_config(_args("evaluate", "--images", "x", "--epochs", "5"), raw)
    assert cfg.epochs == 5


def test_short_flags_and_key_value_flags_are_aliases_of_the_dotted_keys():
    pairs = [(("--set", "max_steps=30"), ("--latent.fit.max_steps", "30")),
             (("--prior-set", "lr=1e-3"), ("--decoder.prior.lr", "1e-3")),
             (("--param", "niter=3"), ("--distill.params.niter", "3")),
             (("--strength", "0.5"), ("--decoder.strength", "0.5")),
             (("--dataset", "digits"), ("--dataset.name", "digits")),
             (("--ipc", "4"), ("--distill.ipc", "4"))]
    for short, dotted in pairs:
        assert resolve(_args("distill", "--out", "x", *short), SECTIONS) == \
            resolve(_args("distill", "--out", "x", *dotted), SECTIONS)
    assert resolve(_args("run", "--ipc", "1,10", "--no-random-real"), SECTIONS) == \
        {"run.ipcs": ["1", "10"], "run.random_real": False}
    assert resolve(_args("evaluate", "--images", "x", "--no-dsa"), SECTIONS) == {"evaluator.dsa": False}


def test_text_keys_keep_the_text_and_other_keys_read_yaml():
    args = _args("baseline", "--out", "x", "--dataset.root", "2024", "--dataset.name", "true",
                 "--dataset.image_size", "16")
    assert resolve(args, SECTIONS) == {"dataset.root": "2024", "dataset.name": "true", "dataset.image_size": 16}
    assert data_config(args, {}).image_size == 16


@pytest.mark.parametrize("command", [c for c in SECTIONS if c != "datasets"])
def test_every_key_of_every_section_a_command_reads_is_a_flag(command):
    keys, free = settable(command, SECTIONS)
    sections = {s for s in SECTIONS[command] if s in CONFIG_SECTIONS}
    assert {k.split(".")[0] for k in keys} == sections
    argv = [a for k in keys for a in (f"--{k}", "1")] + [a for f in free for a in (f"--{f}.anything", "1")]
    assert set(resolve(_args(command, *REQUIRED.get(command, []), *argv), SECTIONS)) == set(keys) | {f"{f}.anything" for f in free}


def test_every_alias_names_a_key_of_a_section_some_command_reads():
    for alias in ALIASES:
        assert any(alias.key in settable(c, SECTIONS)[0] or alias.key.rsplit(".", 1)[0] in settable(c, SECTIONS)[1]
                   for c in SECTIONS), alias


def test_help_names_each_short_flags_key_and_help_config_lists_the_keys(capsys):
    sub = make_parser()._subparsers._group_actions[0].choices
    text = sub["evaluate"].format_help()
    assert "[evaluator.epochs]" in text and "--help-config" in text and "--SECTION.KEY VALUE" in text
    with pytest.raises(SystemExit):
        make_parser().parse_args(["fit-prior", "--help-config"])
    out = capsys.readouterr().out
    assert "--latent.fit.max_steps int >= 1" in out and "--decoder.prior.lr" in out


def test_unknown_dotted_flag_is_refused_before_any_work(tmp_path, capsys):
    assert main(["baseline", "--dataset", "digits", "--ipc", "1", "--out", str(tmp_path / "b"),
                 "--baseline.sed", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "did you mean '--baseline.seed'" in err and not (tmp_path / "b").exists()
