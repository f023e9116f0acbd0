"""Packaging: the provider entry point, the package layout, and parse-time import weight."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points

# What DAG parsing must never import: libraries that only invoke() and the loaders need.
HEAVY = ("torch", "diffusers", "transformers", "numpy", "PIL", "safetensors", "compel", "dynamicprompts",
         "invokeai_provider.models.testing.tiny")


def test_importing_operators_and_loading_every_node_family_imports_no_heavy_library():
    code = (
        "import sys, invokeai_provider, invokeai_provider.operators\n"
        "from invokeai_provider.core.registry import InvocationRegistry\n"
        "from invokeai_provider.graph.workflow import parse_workflow\n"
        "assert len(InvocationRegistry.invocation_classes()) > 90\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_provider_entry_point_matches_the_distribution():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("invokeai_provider")]
    info = ep.load()()
    assert info["package-name"] == distribution("airflow-provider-invokeai").metadata["Name"]
    assert {"gpu_queue", "artifact_root", "default_tenant"} <= set(info["config"]["invokeai"]["options"])


def test_airflow_discovers_the_provider():
    code = (
        "from airflow.providers_manager import ProvidersManager\n"
        "pm = ProvidersManager()\n"
        "print('airflow-provider-invokeai' in pm.providers)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip().splitlines()[-1] == "True", result.stderr[-2000:]


def test_generic_folder_names_are_not_importable():
    code = "import importlib.util as u; print([n for n in ('provider', 'operators', 'models') if u.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert result.stdout.strip() == "[]"


def test_custom_node_packs_load_from_the_entry_point_group(tmp_path, monkeypatch):
    """A pack registered under `invokeai_provider.nodes` joins the registry without touching our code, and packs
    written against the flat layout's import paths still load."""
    pack = tmp_path / "my_pack"
    pack.mkdir()
    (pack / "__init__.py").write_text(
        # the import paths of the flat layout that published packs use
        "from invokeai_provider.invocation import BaseInvocation, InputField, invocation\n"
        "from invokeai_provider.operators.primitives import StringOutput\n"
        "@invocation('my_pack_shout', version='1.0.0')\n"
        "class Shout(BaseInvocation):\n"
        "    text: str = InputField(default='')\n"
        "    def invoke(self, context) -> StringOutput:\n"
        "        return StringOutput(value=self.text.upper())\n"
    )
    dist = tmp_path / "my_pack-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pack\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[invokeai_provider.nodes]\nmy_pack = my_pack\n")
    code = (
        "from invokeai_provider.core.registry import InvocationRegistry\n"
        "cls = InvocationRegistry.get_invocation_class('my_pack_shout')\n"
        "print(cls.UIConfig.node_pack)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "my_pack", result.stderr[-2000:]
