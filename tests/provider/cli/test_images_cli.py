"""``invokeai-airflow images`` and ``boards`` on a local artifact root: upload, list, show, star, boards, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invokeai_provider.cli.app import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("invokeai_metadata", json.dumps({"positive_prompt": "a red fox", "seed": 42}))
    path = tmp_path / "fox.png"
    Image.new("RGB", (32, 24), (180, 60, 20)).save(path, pnginfo=info)
    return path


def test_images_and_boards_from_the_shell(tmp_path: Path, png_file: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__INVOKEAI__LIBRARY_INDEX_DIR", str(tmp_path / "index"))
    where = ["--tenant", "acme", "--artifacts", (tmp_path / "artifacts").as_uri()]
    code, out, _ = run_cli(capsys, "boards", "create", "foxes", *where)
    board = json.loads(out)["board_id"]
    code, out, _ = run_cli(capsys, "images", "upload", str(png_file), str(png_file), "--board", board, *where)
    first, second = out.split()
    assert code == 0 and first != second

    code, out, err = run_cli(capsys, "images", "list", "--board", board, "--json", *where)
    listed = json.loads(out)
    assert listed["total"] == 2 and {r["image_name"] for r in listed["images"]} == {first, second}

    code, out, _ = run_cli(capsys, "images", "show", first, *where)
    shown = json.loads(out)
    assert shown["record"]["board_id"] == board and shown["metadata"] == {"positive_prompt": "a red fox", "seed": 42}

    assert run_cli(capsys, "images", "star", first, *where)[0] == 0
    code, out, err = run_cli(capsys, "images", "list", "--starred", *where)
    assert out.split()[0] == first and "1 of 1 images" in err

    assert run_cli(capsys, "boards", "delete", board, *where)[0] == 0  # images kept, on no board
    code, out, _ = run_cli(capsys, "images", "list", "--board", "none", "--json", *where)
    assert json.loads(out)["total"] == 2
    assert run_cli(capsys, "images", "delete", second, *where)[0] == 0
    code, out, err = run_cli(capsys, "images", "show", second, *where)
    assert code == 1 and f"image '{second}' not found in tenant 'acme'" in err
    # another tenant sees nothing of acme's
    code, out, err = run_cli(capsys, "images", "show", first, "--tenant", "beta", "--artifacts",
                             (tmp_path / "artifacts").as_uri())
    assert code == 1 and "not found in tenant 'beta'" in err


def test_uploading_a_file_that_is_not_an_image_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = run_cli(capsys, "images", "upload", str(text), "--artifacts", (tmp_path / "a").as_uri())
    assert code == 1 and "not an image PIL can read" in err
