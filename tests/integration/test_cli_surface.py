"""One CLI surface (issue 19 part 4): every shared option has one name and one default in every verb,
``-o/--out`` is always the folder for run records in an analysis verb, and old spellings keep working
as hidden aliases whose note goes to stderr only.

The option checks read the Click commands Typer builds (no verb runs); the behaviour checks run the
cheap paths (a refusal before any work, a small benchmark, precomputed features).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vitlab.cli import app

runner = CliRunner()

#: Verbs that analyse and write run records into -o/--out (a folder).
ANALYSIS = ("eval", "compare", "mil", "tune", "curate", "inspect", "robust", "bench", "tradeoff", "gen-eval",
            "pretrain", "distill", "quickstart")
#: Verbs whose product is one file (-o/--output FILE).
FILE_VERBS = ("report", "gen-stats", "cache export", "explore")


def _commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    out: dict[str, object] = {}

    def walk(cmd, name: str) -> None:
        if hasattr(cmd, "commands"):
            for n, c in cmd.commands.items():
                walk(c, f"{name} {n}".strip())
        else:
            out[name] = cmd

    walk(root, "")
    return out


COMMANDS = _commands()


def _option(cmd, name: str):
    """The (visible or hidden) option of ``cmd`` spelled ``name``, or None."""
    for p in cmd.params:
        if p.param_type_name == "option" and name in (*p.opts, *p.secondary_opts):
            return p
    return None


def _type(p) -> object:
    """The Python type an option parses to (typer >= 0.20 keeps it in type_descriptor, older click in .type)."""
    td = getattr(p, "type_descriptor", None)
    return td.annotation if td is not None else {"integer": int, "text": str}.get(p.type.name)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_audit_sees_every_verb():
    assert set(ANALYSIS) | set(FILE_VERBS) | {"embed", "ls", "cache ls", "cache clear"} == set(COMMANDS)


@pytest.mark.parametrize("option, default", [("--device", "auto"), ("--batch-size", 64), ("--seed", 0),
                                             ("--n-resamples", 1000), ("--json", False), ("--pretrained", True),
                                             ("--cache-dir", None), ("--quiet", False)])
def test_every_shared_option_has_one_default_everywhere(option, default):
    found = {name: _option(cmd, option) for name, cmd in COMMANDS.items()}
    found = {name: p for name, p in found.items() if p is not None}
    assert len(found) >= 3, option  # a shared option, in several verbs
    if option == "--n-resamples":  # gen-eval's default is each metric's own half-sample count (its help says so)
        assert found.pop("gen-eval").default is None
    assert {name: p.default for name, p in found.items()} == {name: default for name in found}


def test_every_verb_that_runs_a_model_takes_device_auto():
    for name in ("embed", "eval", "compare", "mil", "tune", "curate", "inspect", "robust", "bench", "tradeoff",
                 "gen-eval", "gen-stats", "pretrain", "distill", "explore", "cache export"):
        assert _option(COMMANDS[name], "--device").default == "auto", name


def test_o_is_the_records_folder_in_analysis_verbs_and_a_named_file_elsewhere():
    for name in ANALYSIS:
        p = _option(COMMANDS[name], "-o")
        assert p is not None and set(p.opts) == {"--out", "-o"}, name
        assert "folder" in p.help.lower(), name
        rep = _option(COMMANDS[name], "--report")
        if rep is not None:
            assert "-o" not in rep.opts and "FILE" in rep.help, name
    for name in FILE_VERBS:
        p = _option(COMMANDS[name], "-o")
        assert set(p.opts) == {"--output", "-o"} and "file" in p.help.lower(), name
    page = _option(COMMANDS["explore"], "--output")  # the page (issue 23's `explore ... -o explore.html`)
    assert "FILE" in page.help and _option(COMMANDS["explore"], "--out").opts == ["--out"]


def test_one_name_per_concept():
    for name, cmd in COMMANDS.items():
        m = _option(cmd, "-m")
        assert m is None or "--method" in m.opts, f"{name}: -m is only --method"
        b = _option(cmd, "-b")
        assert b is None or "--backbone" in b.opts, f"{name}: -b is --backbone"
        for old in ("--dtype", "--encoder", "-e", "--records"):
            p = _option(cmd, old)
            assert p is None or p.hidden, f"{name}: {old} is a hidden alias"
        layers = _option(cmd, "--layers")
        if layers is not None and not layers.hidden:  # --layers is a list; one block is --layer
            assert _type(layers) is str, name
    for name in ("curate", "explore", "mil", "inspect", "cache export"):
        assert _type(_option(COMMANDS[name], "--layer")) in (int, Optional[int]), name
    for name in ("bench", "tradeoff", "embed", "cache export", "tune", "pretrain", "distill"):
        assert not _option(COMMANDS[name], "--precision").hidden, name
    assert _option(COMMANDS["bench"], "--calib-images") and _option(COMMANDS["tradeoff"], "--calib-images")


def test_help_does_not_show_the_old_spellings():
    for verb, old in (("bench", "--dtype"), ("gen-eval", "--encoder"), ("curate", "--layers"),
                      ("explore", "--records"), ("cache export", "--out ")):
        res = runner.invoke(app, [*verb.split(), "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0 and old not in res.output, verb


B = ["-b", "demo:fmnist-vit"]
HTML_CASES = {  # verb args (without --out); what the one line tells to use instead
    "eval": (["eval", *B, "-d", "sample:digits"], "vitlab report <folder> --output"),
    "compare": (["compare", "-b", "demo:fmnist-vit,pixels", "-d", "sample:digits"], "vitlab report"),
    "mil": (["mil", *B, "-d", "sample:fashion-mnist-bags"], "vitlab report"),
    "tune": (["tune", *B, "-d", "sample:digits"], "vitlab report"),
    "curate": (["curate", *B, "-d", "sample:digits"], "--report"),
    "inspect": (["inspect", *B, "-d", "sample:digits"], "--report"),
    "robust": (["robust", *B, "-d", "sample:digits"], "--report"),
    "bench": (["bench", *B], "vitlab report"),
    "tradeoff": (["tradeoff", *B, "-d", "sample:digits"], "vitlab report"),
    "gen-eval": (["gen-eval", "--real", "sample:digits", "--fake", "sample:digits", *B], "--report"),
    "pretrain": (["pretrain", *B, "-d", "sample:digits"], "vitlab report"),
    "distill": (["distill", "-t", "demo:fmnist-vit", "-s", "random:demo:fmnist-vit", "-d", "sample:digits"],
                "vitlab report"),
    "explore": (["explore", *B, "-d", "sample:digits", "--output", "{tmp}/page.html"], "--output"),
}


@pytest.mark.parametrize("verb, flag", [(v, f) for v in HTML_CASES for f in ("--out", "-o")
                                        if not (v == "explore" and f == "-o")])  # explore's -o is its page
def test_an_html_out_is_refused_with_one_line(verb, flag, tmp_path):
    args, fix = HTML_CASES[verb]
    target = tmp_path / "r.html"
    cache = ["--cache-dir", str(tmp_path / "c")] if _option(COMMANDS[verb], "--cache-dir") else []
    res = runner.invoke(app, [*(a.replace("{tmp}", str(tmp_path)) for a in args), flag, str(target), *cache])
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and "Traceback" not in res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --out "), res.stderr
    assert "--out is the folder for run records" in lines[0] and fix in lines[0], lines[0]
    assert not target.exists() and not (tmp_path / "c").exists()  # refused before any work


def test_inspect_report_is_report_and_o_is_the_folder(tmp_path):
    (tmp_path / "x.html").write_text("<p>mine</p>")
    res = runner.invoke(app, ["inspect", *B, "-d", "sample:digits", "-o", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "--report" in _flat(res.stderr)
    assert (tmp_path / "x.html").read_text() == "<p>mine</p>"


def _one_json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # exactly one document: json.loads rejects anything after it


BENCH = ["bench", *B, "--accel", "none", "--batch-size", "2", "--warmup", "1", "--repeats", "2", "--min-time", "0",
         "--latency-repeats", "2", "--device", "cpu", "--json"]


def test_dtype_alias_runs_as_precision_and_notes_on_stderr_only():
    new = _one_json(runner.invoke(app, [*BENCH, "--precision", "fp32"]))
    res = runner.invoke(app, [*BENCH, "--dtype", "fp32"])
    old = _one_json(res)
    assert old["config"]["dtype"] == new["config"]["dtype"] == "fp32"
    assert "--dtype is deprecated; use --precision" in _flat(res.stderr)
    assert "deprecated" not in res.stdout
    assert "deprecated" not in _flat(runner.invoke(app, [*BENCH, "--precision", "fp32"]).stderr)


def test_old_and_new_spelling_together_is_one_error_line():
    res = runner.invoke(app, [*BENCH, "--dtype", "fp32", "--precision", "bf16"])
    assert res.exit_code == 2 and res.stdout == ""
    assert _flat(res.stderr) == "error: --dtype is the old spelling of --precision; pass only --precision."


@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("surface")
    rng = np.random.default_rng(0)
    np.save(root / "real.npy", rng.normal(size=(40, 8)).astype(np.float32))
    np.save(root / "fake.npy", rng.normal(0.3, 1.0, size=(40, 8)).astype(np.float32))
    return root


def test_encoder_alias_of_gen_eval_keeps_json_clean(feats):
    args = ["gen-eval", "--real-features", str(feats / "real.npy"), "--fake-features", str(feats / "fake.npy"),
            "--metrics", "fd", "--n-resamples", "0", "--json"]
    new = _one_json(runner.invoke(app, args))
    res = runner.invoke(app, [*args, "-e", "dinov2-s"])
    old = _one_json(res)
    assert old["metrics"]["fd"]["value"] == new["metrics"]["fd"]["value"]
    assert "deprecated" not in res.stdout and "--encoder is deprecated; use -b/--backbone" in _flat(res.stderr)


def test_gen_stats_encoder_alias_and_m_is_gone(feats, tmp_path):
    res = runner.invoke(app, ["gen-stats", "-d", str(feats / "real.npy"), "--encoder", "demo:fmnist-vit", "-o",
                              str(tmp_path / "s.stats"), "--json"])
    head = _one_json(res)
    assert head and "--encoder is deprecated" in _flat(res.stderr)
    res = runner.invoke(app, ["gen-eval", "--real-features", str(feats / "real.npy"), "--fake-features",
                              str(feats / "fake.npy"), "-m", "fd"])
    assert res.exit_code == 2 and "No such option: -m" in _flat(res.output)


def test_layers_alias_reaches_curate_and_explore(tmp_path):
    for verb, extra in (("curate", []), ("explore", ["--output", str(tmp_path / "p.html")])):
        res = runner.invoke(app, [verb, *B, "-d", "sample:digits?limit=20", "--layers", "99", *extra, "--json",
                                  "--num-workers", "0", "--cache-dir", str(tmp_path / "c")])
        assert res.exit_code == 2 and res.stdout == "", (verb, res.output)
        err = _flat(res.stderr)
        assert "--layers is deprecated; use --layer" in err and "99" in err, (verb, err)
        both = runner.invoke(app, [verb, *B, "-d", "sample:digits", "--layers", "-1", "--layer", "-2", *extra])
        assert both.exit_code == 2 and "pass only --layer" in _flat(both.stderr), verb


def test_records_alias_of_explore_and_out_alias_of_cache_export(tmp_path):
    res = runner.invoke(app, ["explore", *B, "-d", "sample:digits", "--output", str(tmp_path / "p.html"),
                              "--records", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "--records is deprecated; use --out" in _flat(res.stderr)
    assert "--out is the folder for run records; write the HTML report with --output" in _flat(res.stderr)
    res = runner.invoke(app, ["cache", "export", *B, "-d", "sample:digits?limit=4", "--out", str(tmp_path / "e.parquet"),
                              "--cache-dir", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 2 and res.stdout == ""  # nothing cached: the one error line, after the note
    err = _flat(res.stderr)
    assert "--out is deprecated; use -o/--output" in err and "is not in the cache" in err
    res = runner.invoke(app, ["cache", "export", *B, "-d", "sample:digits?limit=4"])
    assert res.exit_code == 2 and "cache export needs -o/--output" in _flat(res.stderr)


def test_tradeoff_protocol_keyword_is_deprecated():
    from vitlab.errors import UnknownNameError
    from vitlab.perf import tradeoff

    with pytest.warns(DeprecationWarning, match=r"tradeoff\(protocol=...\) is deprecated; use protocols="):
        with pytest.raises(UnknownNameError):
            tradeoff("demo:fmnist-vit", "sample:digits", accel="tomee:r=2", protocol="knn")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(UnknownNameError):
            tradeoff("demo:fmnist-vit", "sample:digits", accel="tomee:r=2", protocols="knn")
