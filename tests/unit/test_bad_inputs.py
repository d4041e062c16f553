"""Bad inputs end in one clear line naming the file or value and the fix (exit code 2), never a traceback,
and they are caught before anything expensive runs."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import vitlab
from tests.conftest import write_images
from vitlab.cli import app
from vitlab.cli.common import friendly_errors
from vitlab.data.images import MAX_PIXELS_ENV, ImageDecodeError, max_image_pixels, open_rgb
from vitlab.errors import ConfigError, DataError
from vitlab.report import RunRecord, load_records
from vitlab.record import SkippedRecordWarning

runner = CliRunner()


def _flat(text: str) -> str:
    """Output as one line: rich's error box borders and line wraps removed."""
    return " ".join(text.replace("│", " ").split())


def _one_line_error(res, *needles: str) -> str:
    """The CLI failed with exit code 2 and one ``error:`` line holding every needle."""
    text = " ".join(res.stderr.split())
    assert res.exit_code == 2, res.stderr + res.stdout
    assert "Traceback" not in res.stderr + res.stdout and res.stdout == ""
    for n in needles:
        assert n in text, text
    return text


# -- images over the pixel limit (decompression bombs) ----------------------------------------
@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A real 20000 x 20000 PNG (400 MP): 1-bit and blank, so ~50 kB on disk and ~1.5 s to write."""
    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    return path


def test_decompression_bomb_is_a_decode_error_naming_file_size_and_fix(bomb, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    with pytest.raises(ImageDecodeError, match=r"huge\.png: image is 20000x20000 = 400,000,000 pixels, over the "
                                               r"89,478,485-pixel limit .* VITLAB_MAX_IMAGE_PIXELS=400000000"):
        open_rgb(bomb)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's global is left alone


def test_the_limit_is_set_by_the_environment(tmp_path, monkeypatch):
    img = tmp_path / "a.png"
    Image.new("L", (40, 30)).save(img)  # 1,200 pixels
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageDecodeError, match=r"a\.png: image is 40x30 = 1,200 pixels, over the 1,000-pixel limit"):
        open_rgb(img)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1200")
    assert open_rgb(img).size == (40, 30)
    for unlimited in ("0", "none", "None"):
        monkeypatch.setenv(MAX_PIXELS_ENV, unlimited)
        assert max_image_pixels() is None and open_rgb(img).size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # restored after each decode
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=r"VITLAB_MAX_IMAGE_PIXELS='lots' is not a pixel count"):
        max_image_pixels()


def test_cli_skips_the_bomb_with_on_error_skip_and_names_it_otherwise(bomb, tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    folder = write_images(tmp_path / "imgs", n_per_class=2, classes=("a", "b"))
    (folder / "a" / "huge.png").write_bytes(bomb.read_bytes())
    base = ["embed", "-b", "demo:fmnist-vit", "-d", f"folder:{folder}", "--num-workers", "0",
            "--cache-dir", str(tmp_path / "c")]
    _one_line_error(runner.invoke(app, base), "huge.png: image is 20000x20000", "VITLAB_MAX_IMAGE_PIXELS=400000000",
                    "--on-error skip")
    res = runner.invoke(app, [*base, "--on-error", "skip", "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n"] == 4 and "20000x20000" in json.dumps(summary)  # the skip is listed with its reason


def test_cli_rejects_a_bad_pixel_limit_before_work(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "-5")
    res = runner.invoke(app, ["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist",
                              "--cache-dir", str(tmp_path / "c")])
    _one_line_error(res, "VITLAB_MAX_IMAGE_PIXELS='-5' is not a pixel count", "0 / none for no limit")
    assert not (tmp_path / "c").exists()


# -- manifests ------------------------------------------------------------------------------
def test_manifest_duplicate_id_names_the_id_and_both_lines(tmp_path):
    folder = write_images(tmp_path / "imgs", n_per_class=3, classes=("a",))
    m = tmp_path / "m.csv"
    m.write_text("path,label,id\nimgs/a/a_00.png,a,x1\nimgs/a/a_01.png,a,x2\nimgs/a/a_02.png,a,x1\n")
    assert folder.exists()
    with pytest.raises(DataError, match=r"id 'x1' appears twice, on lines 2 and 4\. Give each row its own id"):
        vitlab.load_source(f"csv:{m}")
    m.write_text("path,label\nimgs/a/a_00.png,a\nimgs/a/a_01.png,a\nimgs/a/a_00.png,a\nimgs/a/a_00.png,a\n")
    with pytest.raises(DataError, match=r"path 'imgs/a/a_00.png' is listed 3 times, on lines 2, 4 and 5"):
        vitlab.load_source(f"csv:{m}")


# -- report folders with JSON that is not a run record ----------------------------------------
@pytest.fixture
def runs_dir(tmp_path) -> Path:
    runs = tmp_path / "runs"
    RunRecord(kind="generic", config={"what": "test"}, metrics={"m": {"value": 0.5, "low": None, "high": None}}).save(runs)
    (runs / "list.json").write_text("[1, 2, 3]")
    (runs / "partial.json").write_text(json.dumps({"kind": "eval", "schema_version": 1}))
    return runs


def test_load_records_skips_non_records_with_a_warning_per_file(runs_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_records(runs_dir)
    assert [r.kind for r in records] == ["generic"]
    msgs = sorted(str(w.message) for w in caught if issubclass(w.category, SkippedRecordWarning))
    assert len(msgs) == 2
    assert "list.json: skipped: not a run record: the JSON is a list" in msgs[0]
    assert "partial.json: skipped: not a run record: missing field(s) config, metrics" in msgs[1]
    with pytest.raises(DataError, match=r"list\.json: not a run record: the JSON is a list"):
        load_records(runs_dir / "list.json")  # a file named directly must be a record


def test_cli_report_warns_on_stderr_and_fails_when_nothing_is_left(runs_dir, tmp_path):
    res = runner.invoke(app, ["report", str(runs_dir), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "" and (tmp_path / "r.html").exists()
    err = " ".join(res.stderr.split())
    assert "warning:" in err and "list.json: skipped" in err and "partial.json: skipped" in err
    for f in runs_dir.glob("generic-*.json"):
        f.unlink()
    res = runner.invoke(app, ["report", str(runs_dir), "-o", str(tmp_path / "r2.html")])
    _one_line_error(res, "none of the 2 *.json file(s) is a run record", "Point at the folder given to --out")
    assert not (tmp_path / "r2.html").exists()


# -- --num-workers -1 on every verb that has it -----------------------------------------------
@pytest.mark.parametrize("verb", [
    ["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist"],
    ["eval", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist"],
    ["compare", "-b", "demo:fmnist-vit,pixels", "-d", "sample:fashion-mnist"],
    ["tradeoff", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist"],
    ["gen-eval", "--real", "sample:fashion-mnist", "--fake", "sample:fashion-mnist", "-b", "demo:fmnist-vit"],
    ["gen-stats", "-d", "sample:fashion-mnist", "-b", "demo:fmnist-vit", "-o", "x.stats"],
], ids=lambda v: v[0])
def test_negative_num_workers_is_rejected_by_every_verb(verb, tmp_path):
    res = runner.invoke(app, [*verb, "--num-workers", "-1", "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2 and res.stdout == ""
    text = _flat(res.stderr)
    assert "--num-workers" in text and "must be >= 0 (0 = load images in the main process), got -1" in text
    assert not (tmp_path / "c").exists()


def test_evaluate_rejects_negative_num_workers_before_loading_anything():
    with pytest.raises(ConfigError, match="num_workers must be a whole number >= 0"):
        vitlab.evaluate("no-such-backbone", "folder:/no/such/dir", num_workers=-1)


# -- output locations and config values are checked before any work ---------------------------
@pytest.fixture
def places(tmp_path) -> dict[str, Path]:
    f = tmp_path / "taken.json"
    f.write_text("{}")
    d = tmp_path / "a_dir"
    d.mkdir()
    return {"file": f, "dir": d, "cache": tmp_path / "cache"}


OUTPUT_CASES = {  # verb args, the path kind that is wrong, the expected message
    "eval -o": (["eval", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "-o", "{file}"], "--out",
                "is an existing file"),
    "compare -o": (["compare", "-b", "demo:fmnist-vit,pixels", "-d", "sample:fashion-mnist", "-o", "{file}"], "--out",
                   "is an existing file"),
    "report -o": (["report", "{runs}", "-o", "{dir}"], "--output", "is a folder, not a file"),
    "report --csv": (["report", "{runs}", "--csv", "{dir}"], "--csv", "is a folder, not a file"),
    "gen-eval --out": (["gen-eval", "--real", "sample:fashion-mnist", "--fake", "sample:fashion-mnist", "-b",
                        "demo:fmnist-vit", "--out", "{file}"], "--out", "is an existing file"),
    "gen-eval --report": (["gen-eval", "--real", "sample:fashion-mnist", "--fake", "sample:fashion-mnist", "-b",
                           "demo:fmnist-vit", "--report", "{dir}"], "--report", "is a folder, not a file"),
    "gen-stats -o": (["gen-stats", "-d", "sample:fashion-mnist", "-b", "demo:fmnist-vit", "-o", "{dir}"], "--output",
                     "is a folder, not a file"),
    "tradeoff --out": (["tradeoff", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--out", "{file}"], "--out",
                       "is an existing file"),
    "tradeoff --plot": (["tradeoff", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--plot", "{dir}"],
                        "--plot", "is a folder, not a file"),
    "bench --out": (["bench", "-b", "demo:fmnist-vit", "--out", "{file}"], "--out", "is an existing file"),
    "embed --export": (["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--export", "{dir}"],
                       "--export", "is a folder, not a file"),
    "quickstart --out": (["quickstart", "--out", "{file}"], "--out", "is an existing file"),
    "eval -o under a file": (["eval", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "-o", "{file}/runs"],
                             "--out", "cannot be created because"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_unusable_output_paths_fail_before_any_work(case, places, runs_dir):
    args, option, message = OUTPUT_CASES[case]
    args = [a.format(runs=runs_dir, **places) for a in args]
    if args[0] not in ("report", "bench"):
        args += ["--cache-dir", str(places["cache"])]
    _one_line_error(runner.invoke(app, args), option, message)
    assert not places["cache"].exists()  # nothing was embedded


def test_read_only_output_folder_fails_before_any_work(places, monkeypatch):
    from vitlab import outputs

    real = outputs._writable
    monkeypatch.setattr(outputs, "_writable", lambda p: p != places["dir"] and real(p))  # root ignores chmod
    args = ["eval", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--cache-dir", str(places["cache"])]
    _one_line_error(runner.invoke(app, [*args, "-o", str(places["dir"])]), "--out", "the folder is not writable")
    _one_line_error(runner.invoke(app, [*args, "-o", str(places["dir"] / "new" / "runs")]), "--out",
                    f"cannot be created because {places['dir']} is not writable")
    assert not places["cache"].exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user for chmod")
def test_read_only_output_folder_for_real(places):
    places["dir"].chmod(0o555)
    try:
        res = runner.invoke(app, ["eval", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "-o",
                                  str(places["dir"]), "--cache-dir", str(places["cache"])])
    finally:
        places["dir"].chmod(0o755)
    _one_line_error(res, "the folder is not writable")


@pytest.mark.parametrize("verb", [["eval", "-b", "demo:fmnist-vit"], ["compare", "-b", "demo:fmnist-vit,pixels"],
                                  ["tradeoff", "-b", "demo:fmnist-vit"]], ids=lambda v: v[0])
def test_bad_test_fraction_fails_before_embedding(verb, tmp_path):
    res = runner.invoke(app, [*verb, "-d", "sample:fashion-mnist", "--test-fraction", "1.5",
                              "--cache-dir", str(tmp_path / "c")])
    _one_line_error(res, "test_fraction must be between 0 and 1 (exclusive), e.g. 0.2; got 1.5.")
    assert not (tmp_path / "c").exists()


def test_evaluate_and_compare_validate_config_before_loading_backbones():
    # the backbone name is bad too: the config error must come first, so nothing was loaded
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1"):
        vitlab.evaluate("no-such-backbone", "sample:fashion-mnist", test_fraction=1.5)
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1"):
        vitlab.compare(["no-such-backbone", "pixels"], "sample:fashion-mnist", test_fraction=0)
    with pytest.raises(ConfigError, match="is an existing file"):
        vitlab.evaluate("no-such-backbone", "sample:fashion-mnist", out=Path(__file__))


# -- Ctrl-C --------------------------------------------------------------------------------
class _InterruptedWithHint(KeyboardInterrupt):  # what vitlab.errors.Interrupted looks like
    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.resume_hint = hint


@pytest.mark.parametrize("exc, shown, not_shown", [
    (KeyboardInterrupt(), "interrupted.", ("kept", "resume")),
    (_InterruptedWithHint("16 of 30 rows (2 shards) are kept: run the same command again to resume."),
     "interrupted. 16 of 30 rows (2 shards) are kept: run the same command again to resume.", ()),
])
def test_ctrl_c_exits_130_with_the_stores_hint_or_no_claim(exc, shown, not_shown, capsys):
    @friendly_errors
    def verb() -> None:
        raise exc

    with pytest.raises(typer.Exit) as info:
        verb()
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.exit_code == 130
    assert err.startswith(shown)
    for text in not_shown:
        assert text not in err


def test_ctrl_c_hint_from_the_real_interrupted_class(capsys):
    Interrupted = pytest.importorskip("vitlab.errors").__dict__.get("Interrupted")
    if Interrupted is None:
        pytest.skip("vitlab.errors.Interrupted is not there yet")

    @friendly_errors
    def verb() -> None:
        raise Interrupted("3 of 9 rows are kept: run the same command again to resume.")

    with pytest.raises(typer.Exit) as info:
        verb()
    assert info.value.exit_code == 130
    assert "interrupted. 3 of 9 rows are kept" in " ".join(capsys.readouterr().err.split())


# -- --shard-size --------------------------------------------------------------------------
def test_shard_size_is_passed_only_when_given(monkeypatch, tmp_path):
    seen: list[dict] = []

    def fake_embed(backbone, data, **kwargs):
        seen.append(kwargs)
        raise ConfigError("stop here")

    monkeypatch.setattr(vitlab, "embed", fake_embed)
    base = ["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--cache-dir", str(tmp_path / "c")]
    assert runner.invoke(app, base).exit_code == 2
    assert runner.invoke(app, [*base, "--shard-size", "7"]).exit_code == 2
    assert "shard_size" not in seen[0] and seen[1]["shard_size"] == 7
    assert seen[0]["progress"] is None  # auto: a bar only when stderr is a terminal
    assert runner.invoke(app, [*base, "-q"]).exit_code == 2 and seen[2]["progress"] is False
    res = runner.invoke(app, [*base, "--shard-size", "0"])
    assert res.exit_code == 2 and "must be >= 1, got 0" in _flat(res.stderr) and len(seen) == 3
