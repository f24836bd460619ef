"""``daskgmm --help`` and every subcommand's help: each option once, the exit statuses, no stale words."""

import re

import pytest

from daskgmm.cli import main
from daskgmm.cli.args import COMMANDS
from daskgmm.cli.config import options_for


def _help(capsys, *argv):
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    out = _help(capsys)
    assert "exit status" in out and "renamed into place" in out
    for code in ("0", "1", "2", "130", "143"):
        assert re.search(rf"^  {code}  ", out, re.M), code
    for cmd in COMMANDS:
        assert re.search(rf"^    {re.escape(cmd)}\s", out, re.M), cmd


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_subcommand_help(capsys, cmd):
    out = _help(capsys, cmd)
    assert "exit status" in out
    # only the commands that write outputs promise how they write them
    assert ("renamed into place" in out) == (cmd not in ("score", "info", "show-config"))
    for opt in options_for(cmd):
        assert opt.flag in out
    if cmd not in ("info", "show-config"):
        assert "--config FILE.yaml" in out
    # the bayesian-only options say so, the same way
    for opt in options_for(cmd):
        if "prior" in opt.dest:
            assert "(--estimator bayesian" in opt.help, opt.dest


def test_show_config_command(capsys):
    import json

    from daskgmm.kernels import compiled

    assert main(["show-config"]) == 0
    out = capsys.readouterr().out
    assert f"kernel: {compiled.kernel_name()}" in out and "variants built:" in out
    assert main(["show-config", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kernel"] == compiled.kernel_name()
    assert set(info["variants_built"]) <= set(compiled.variant_names())


def test_help_does_not_import_the_heavy_libraries():
    """``daskgmm --help`` answers fast: it never imports Dask, pyarrow or scikit-learn."""
    import subprocess
    import sys

    code = ("import sys; from daskgmm.cli import main; main(['--help']); main(['fit', '--help']); "
            "print(sorted(m for m in ('dask', 'pyarrow', 'sklearn', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_command_refused_before_its_model_is_read_does_not_import_scikit_learn(tmp_path):
    """A model path that holds no model is exit 2 at once: telling bad input from a failure imported
    scikit-learn (for its InvalidParameterError, which nothing could have raised yet), ~3 s of a 4.6 s refusal."""
    import subprocess
    import sys

    from .conftest import write_data

    write_data(tmp_path / "data", n=30)
    code = ("import sys; from daskgmm.cli import main; "
            f"status = main(['predict', {str(tmp_path / 'data')!r}, '--model', {str(tmp_path / 'nope')!r}, "
            f"'--out', {str(tmp_path / 'p')!r}]); print(status, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "no model here" in out.stderr, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2 False", out.stdout


def test_python_dash_m_runs_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "daskgmm", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("daskgmm ")
    bad = subprocess.run([sys.executable, "-m", "daskgmm", "fit"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "DATA is required" in bad.stderr


def test_a_kernel_choice_that_cannot_run_is_bad_usage_before_any_cluster(tmp_path):
    """DASKGMM_KERNEL naming no usable variant: exit 2 naming it, no cluster started; show-config reports it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DASKGMM_KERNEL": "sse9"}
    out = subprocess.run([sys.executable, "-m", "daskgmm", "fit", str(tmp_path / "none.parquet"), "--model-out",
                          str(tmp_path / "m")], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2, out.stderr
    assert "daskgmm: error: DASKGMM_KERNEL must be one of" in out.stderr and "cluster:" not in out.stderr
    shown = subprocess.run([sys.executable, "-m", "daskgmm", "show-config"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert shown.returncode == 0 and "kernel: none (DASKGMM_KERNEL must be one of" in shown.stdout


def test_a_bad_option_value_names_the_flag_once(capsys):
    assert main(["fit", "data", "--tol", "abc"]) == 2
    err = capsys.readouterr().err
    assert "--tol: expected a number, got 'abc'" in err and "tol: tol" not in err


def test_missing_inputs_are_bad_input_before_any_cluster(tmp_path, capsys):
    """A wrong DATA or --model path exits 2 at once: no cluster is started to find out."""
    from daskgmm.engine import cluster

    started = []
    real = cluster.connect
    cluster.connect = lambda *a, **k: started.append(1) or real(*a, **k)
    try:
        assert main(["fit", str(tmp_path / "nope"), "--model-out", str(tmp_path / "m")]) == 2
        assert "no such file or directory" in capsys.readouterr().err
        (tmp_path / "d").mkdir()
        assert main(["predict", str(tmp_path / "d"), "--model", str(tmp_path / "none"),
                     "--out", str(tmp_path / "p")]) == 2
        assert "holds no Parquet files" in capsys.readouterr().err
    finally:
        cluster.connect = real
    assert started == []
