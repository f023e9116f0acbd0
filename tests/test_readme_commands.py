"""The README's two commands exist, CI runs the test one, and the main job's workflow runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from helpers import REPO_ROOT


def readme_command(marker: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```bash\n(.+)\n```", text)
    assert match, f"README.md has no {marker}"
    return match.group(1)


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
    command = readme_command("test-command")
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0")
    assert command.endswith(".venv/bin/pytest -q")


def test_main_command_runs_the_demo(tmp_path):
    command = readme_command("main-command")
    assert command.endswith(".venv/bin/invokeai-airflow demo")
    exe = Path(sys.executable).with_name("invokeai-airflow")
    args = [str(exe), "demo", "--model-root", str(tmp_path / "models"), "--artifacts", str(tmp_path / "art"),
            "--size", "64", "--steps", "2"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    [image] = json.loads(result.stdout)  # the image records of the DAG run
    assert (image["width"], image["height"]) == (64, 64)
    assert "task sd1_5_text_to_image: success (queue gpu)" in result.stderr  # it ran as an Airflow task
    assert (tmp_path / ".airflow" / "airflow.db").is_file()  # on the embedded SQLite home
    assert Path(unquote(urlparse(image["uri"]).path)).is_file()
    assert image["uri"].startswith((tmp_path / "art").as_uri())
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "building the tiny" not in again.stderr  # the model is built once


def test_prompt_variations_workflow_runs(tmp_path):
    exe = Path(sys.executable).with_name("invokeai-airflow")
    result = subprocess.run([str(exe), "graph", "run", "dags/workflows/prompt-variations.json", "--artifacts",
                             str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    prompts = out["prompts"][0]["collection"]
    assert len(prompts) == 12 and len(set(prompts)) == 12
    assert all(p.endswith(", watercolor, soft light") for p in prompts)
    assert out["seeds"][0]["collection"] == list(range(1000, 1012))
