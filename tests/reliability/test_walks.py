"""Issue 18 part 3: folder listing. A linked folder is followed at most once per real folder (a loop
cannot multiply rows); a broken link is a bad item: one line naming it, or skipped and listed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import vitlab
from tests.conftest import write_images
from tests.reliability.conftest import one_line_error, tree
from vitlab.cli import app
from vitlab.data.folder import images_under

runner = CliRunner()


def test_a_symlink_loop_lists_each_image_once(tmp_path):
    root = write_images(tmp_path / "imgs", n_per_class=4)
    (root / "bag" / "loop").symlink_to("..", target_is_directory=True)  # bag/loop -> imgs
    (root / "coat" / "again").symlink_to(root / "coat", target_is_directory=True)  # a folder linking to itself
    src = vitlab.load_source(f"folder:{root}")
    assert len(src) == 12 and len(set(src.ids)) == 12


def test_a_folder_reached_through_two_links_is_listed_once(tmp_path):
    shared = write_images(tmp_path / "shared", n_per_class=2, classes=("x",), flat=True)
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one").symlink_to(shared, target_is_directory=True)
    (root / "a" / "two").symlink_to(shared, target_is_directory=True)
    assert [p.name for p in images_under(root)] == ["x_00.png", "x_01.png"]


def test_a_linked_folder_outside_the_root_is_followed(tmp_path):
    extra = write_images(tmp_path / "extra", n_per_class=3, classes=("x",), flat=True)
    root = write_images(tmp_path / "imgs", n_per_class=2)
    (root / "bag" / "more").symlink_to(extra, target_is_directory=True)
    assert len(vitlab.load_source(f"folder:{root}")) == 6 + 3


def test_a_broken_link_is_one_line_naming_it_or_skipped_and_listed(tmp_path):
    root = write_images(tmp_path / "imgs", n_per_class=3)
    broken = root / "bag" / "gone.png"
    broken.symlink_to(tmp_path / "nowhere.png")
    before = tree(root)
    args = ["embed", "-b", "pixels:8", "-d", f"folder:{root}", "--pool", "mean", "--num-workers", "0",
            "--cache-dir", str(tmp_path / "cache")]
    one_line_error(runner.invoke(app, args), f"{broken}: broken symbolic link (to {tmp_path / 'nowhere.png'}, "
                   "which does not exist)", "--on-error skip")
    res = runner.invoke(app, [*args, "--on-error", "skip", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["n"] == 9 and [s["id"] for s in doc["skipped"]] == ["bag/gone.png"]
    assert tree(root) == before


def test_a_broken_link_at_the_top_of_a_flat_folder_and_content_fingerprints(tmp_path):
    root = write_images(tmp_path / "flat", n_per_class=2, classes=("x",), flat=True)
    (root / "dead.png").symlink_to(tmp_path / "nowhere.png")
    src = vitlab.load_source(f"folder:{root}?fingerprint=content")
    assert len(src) == 3 and src.fingerprint  # fingerprinting does not fail; reading it does, as a bad item
    emb = vitlab.embed("pixels:8", src, pool="mean", on_error="skip", progress=False, num_workers=0,
                       cache_dir=tmp_path / "cache")
    assert len(emb) == 2 and "broken symbolic link" in emb.skipped[0]["reason"]
