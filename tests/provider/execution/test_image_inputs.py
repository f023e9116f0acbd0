"""A run reads any image of its tenant by name (an upload, another run's image), and never another tenant's:
that is refused before any node runs, naming the node and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from invokeai_provider.execution.graph_runs import TaskEnvironment, run_graph_in_process
from invokeai_provider.execution.tenants import ArtifactReferenceError
from invokeai_provider.storage.base import LocalArtifactBackend
from invokeai_provider.storage.library.images import ImageLibrary


def uploaded(root: Path, tenant: str) -> str:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (0, 128, 0)).save(buffer, format="PNG")
    return ImageLibrary(LocalArtifactBackend(root), tenant).upload(buffer.getvalue())["image_name"]


def save_graph(image_name: str) -> dict:
    return {"id": "g", "nodes": {"save": {"id": "save", "type": "save_image", "image": {"image_name": image_name}}},
            "edges": []}


def env(root: Path, tenant: str, run_id: str) -> TaskEnvironment:
    return TaskEnvironment(dag_id="img2img", run_id=run_id, task_id="t", artifact_root=root.as_uri(), tenant=tenant)


def test_a_run_reads_an_uploaded_image_of_its_tenant(tmp_path: Path) -> None:
    name = uploaded(tmp_path, "acme")
    state = run_graph_in_process(save_graph(name), env(tmp_path, "acme", "r1"), {}, embedded_graph=None,
                                 workflow_json=None)
    [output] = state.outputs_of("save")
    assert output.image.image_name != name and (output.width, output.height) == (8, 6)
    saved = ImageLibrary(LocalArtifactBackend(tmp_path), "acme").get(output.image.image_name)
    assert (saved["dag_id"], saved["run_id"], saved["image_origin"]) == ("img2img", "r1", "internal")
    # and a later run reads that run's image
    later = run_graph_in_process(save_graph(output.image.image_name), env(tmp_path, "acme", "r2"), {},
                                 embedded_graph=None, workflow_json=None)
    assert later.outputs_of("save")[0].width == 8


def test_another_tenants_image_is_refused_before_any_node_runs(tmp_path: Path) -> None:
    name = uploaded(tmp_path, "acme")
    with pytest.raises(ArtifactReferenceError, match=rf"node save field image.image_name: image '{name}' not found "
                                                     "in tenant 'beta'") as caught:
        run_graph_in_process(save_graph(name), env(tmp_path, "beta", "r1"), {}, embedded_graph=None,
                             workflow_json=None)
    assert (caught.value.node_id, caught.value.field) == ("save", "image")
    assert not (tmp_path / "beta").exists()  # nothing written for the refused run


def test_the_image_to_image_example_runs_on_an_uploaded_image(tmp_path: Path, tiny_registry) -> None:
    import io
    import json

    from PIL import Image

    from helpers import REPO_ROOT
    from invokeai_provider.compiler.dags import load_compiled
    from invokeai_provider.execution.task_runtime import run_task
    from invokeai_provider.execution.usage import UsageMeter
    from invokeai_provider.storage.library.images import read_chunks

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 220)).save(buffer, format="PNG")
    library = ImageLibrary(LocalArtifactBackend(tmp_path), "acme")
    name = library.upload(buffer.getvalue())["image_name"]
    document = json.loads((REPO_ROOT / "dags" / "workflows" / "sd15-image-to-image.json").read_text())
    compiled = load_compiled(document, model_names=None)
    [task] = compiled.plan.tasks
    environment = TaskEnvironment(
        dag_id="sd15-image-to-image", run_id="r1", task_id=task.task_id, artifact_root=tmp_path.as_uri(),
        model_root=tiny_registry.root.as_uri(), tenant="acme", usage=UsageMeter(),
        params={"image": name, "model": "tiny-sd1", "denoise_steps": 2, "strength": 0.5})
    output, _ = run_task(compiled, environment)
    [record] = output["images"]
    assert (record["width"], record["height"]) == (64, 48)  # the noise took the uploaded image's size
    made = read_chunks(library.read_image(record["image_name"]))
    assert made["graph"]["nodes"]["image"]["image"] == {"image_name": name}
    assert made["metadata"]["strength"] == 0.5


def test_a_board_the_tenant_does_not_have_is_refused_and_a_real_one_gets_the_image(tmp_path: Path) -> None:
    from invokeai_provider.storage.library.boards import Boards

    name = uploaded(tmp_path, "acme")
    graph = save_graph(name)
    graph["nodes"]["save"]["board"] = {"board_id": "0b5e1c9e-1111-4222-8333-444455556666"}
    with pytest.raises(ArtifactReferenceError, match="node save field board: board '0b5e1c9e-1111-4222-8333-"
                                                     "444455556666' not found in tenant 'acme'"):
        run_graph_in_process(graph, env(tmp_path, "acme", "r1"), {}, embedded_graph=None, workflow_json=None)
    library = ImageLibrary(LocalArtifactBackend(tmp_path), "acme")
    board = Boards(library).create("keep")
    graph["nodes"]["save"]["board"] = {"board_id": board["board_id"]}
    state = run_graph_in_process(graph, env(tmp_path, "acme", "r2"), {}, embedded_graph=None, workflow_json=None)
    assert library.get(state.outputs_of("save")[0].image.image_name)["board_id"] == board["board_id"]
