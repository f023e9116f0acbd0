"""``invokeai-airflow demo`` and ``run``: a document compiled into a DAG and run once through an embedded Airflow
(SQLite home, local artifact store); the demo runs an example workflow (SD1.5, SDXL or FLUX.1) with a tiny model
built here."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from invokeai_provider.cli.conf_check import ParamValueError, check_conf
from invokeai_provider.cli.demo_inputs import InputPath, resolve_input, set_argument
from invokeai_provider.cli.embedded import quiet_asset_warnings, tasks_run_on_their_queue
from invokeai_provider.cli.overrides import parse_set
from invokeai_provider.cli.run_output import print_run
from invokeai_provider.errors import InvokeAIProviderError, RunConfError

WORKFLOWS = Path(__file__).resolve().parents[2] / "dags" / "workflows"


# The node inputs the demo sets, found in each workflow (`demo_inputs`): a Param name differs between workflows.
DEMO_INPUTS: dict[str, InputPath] = {
    "model": InputPath("denoise_latents", "unet", ("model",)),
    "prompt": InputPath("denoise_latents", "positive_conditioning", ("prompt",)),
    "seed": InputPath("noise", "seed"),
    "steps": InputPath("denoise_latents", "steps"),
    "width": InputPath("noise", "width"),
    "height": InputPath("noise", "height"),
}


def denoise_inputs(node: str, prompt: str = "positive_conditioning", steps: str = "steps") -> dict[str, InputPath]:
    """The demo's inputs for a family without a noise node: its denoise node takes the seed and size itself."""
    return {"model": InputPath(node, "transformer", ("model",)), "prompt": InputPath(node, prompt, ("prompt",)),
            "seed": InputPath(node, "seed"), "steps": InputPath(node, steps), "width": InputPath(node, "width"),
            "height": InputPath(node, "height")}


FLUX_DEMO_INPUTS = denoise_inputs("flux_denoise", "positive_text_conditioning", "num_steps")
SD3_DEMO_INPUTS = denoise_inputs("sd3_denoise")
COGVIEW4_DEMO_INPUTS = denoise_inputs("cogview4_denoise")
FLUX2_DEMO_INPUTS = denoise_inputs("flux2_denoise", "positive_text_conditioning", "num_steps")
Z_IMAGE_DEMO_INPUTS = denoise_inputs("z_image_denoise_meta")


@dataclass(frozen=True)
class DemoFamily:
    """A demo: the example workflow it runs, the base (and variant, when not the base's usual tiny one) of the tiny
    main model it installs, its default size and steps (small: the demo runs in well under a minute on two CPU
    cores) and where in the workflow it sets them."""

    workflow: str
    base: str
    size: int
    steps: int
    inputs: dict[str, InputPath] = dataclass_field(default_factory=lambda: DEMO_INPUTS)
    variant: Optional[str] = None


DEMO_FAMILIES: dict[str, DemoFamily] = {
    "sd15": DemoFamily("sd15-text-to-image.json", "sd-1", size=128, steps=12),
    "sdxl": DemoFamily("sdxl-text-to-image.json", "sdxl", size=128, steps=4),
    # the tiny FLUX.1 dev model (a diffusers folder: its own T5, CLIP-L and VAE); sizes are multiples of 16
    "flux": DemoFamily("flux-text-to-image.json", "flux", size=64, steps=4, inputs=FLUX_DEMO_INPUTS),
    # the tiny CogView4 model (a CogView4Pipeline folder: its own GLM encoder and VAE); sizes are multiples of 32
    "cogview4": DemoFamily("cogview4-text-to-image.json", "cogview4", size=64, steps=4, inputs=COGVIEW4_DEMO_INPUTS),
    # the tiny SD3.5 model (a StableDiffusion3Pipeline folder: its own CLIP-L, CLIP-G, T5 and VAE); multiples of 16
    "sd3": DemoFamily("sd3-text-to-image.json", "sd-3", size=64, steps=4, inputs=SD3_DEMO_INPUTS),
}
# the tiny FLUX.2 Klein 4B model (a Flux2KleinPipeline folder: its own Qwen3 encoder and VAE); multiples of 16
DEMO_FAMILIES["flux2-klein"] = DemoFamily("flux2-klein-text-to-image.json", "flux2", size=64, steps=4,
                                          inputs=FLUX2_DEMO_INPUTS)
# the tiny Z-Image Turbo model (a ZImagePipeline folder: its own Qwen3 encoder and VAE); sizes are multiples of 16
# the tiny FLUX.2 [dev] model (a Flux2Pipeline folder: its own Mistral Small 3.1-shaped encoder and VAE)
DEMO_FAMILIES["flux2-dev"] = DemoFamily("flux2-dev-text-to-image.json", "flux2", size=64, steps=4,
                                        inputs=FLUX2_DEMO_INPUTS, variant="dev")
DEMO_FAMILIES["z-image"] = DemoFamily("z-image-text-to-image.json", "z-image", size=64, steps=4,
                                      inputs=Z_IMAGE_DEMO_INPUTS)
DEMO_MODEL = "tiny-sd15"  # the sd15 demo's model (the cluster installs it)
DEMO_WORKFLOW = WORKFLOWS / DEMO_FAMILIES["sd15"].workflow


def ensure_demo_model(model_root: Optional[str], family: str = "sd15") -> str:
    """Builds and installs the family's tiny random-weight main model unless it is registered already (the
    same helper as ``models install-tiny main``); returns its name."""
    from invokeai_provider.models.model_manager.registry import ModelRegistry
    from invokeai_provider.models.testing.tiny_install import install_tiny

    demo = DEMO_FAMILIES[family]
    done = install_tiny(ModelRegistry(model_root), "main", demo.base, variant=demo.variant,
                        log=lambda message: print(message, file=sys.stderr))
    return done.config.name


def demo_sets(workflow: Path, values: dict[str, Any],
              inputs: Optional[dict[str, InputPath]] = None) -> list[str]:
    """``run --set`` arguments that give the workflow's prompt, model, seed, steps and size these values, found
    through ``inputs`` (default: the SD workflows' `DEMO_INPUTS`)."""
    from invokeai_provider.compiler.params import param_specs
    from invokeai_provider.graph.workflow import load_document

    document = load_document(workflow.read_text(), str(workflow))
    specs = param_specs(document, model_names=lambda node_type, field: [])  # names only: no registry needed
    paths = DEMO_INPUTS if inputs is None else inputs
    return [set_argument(resolve_input(document, specs, paths[key]), value) for key, value in values.items()]


def cmd_demo(args: argparse.Namespace) -> int:
    """Text to image through Airflow: an example workflow's DAG with its tiny model, one dag.test() run."""
    family = DEMO_FAMILIES[args.family]
    workflow = WORKFLOWS / family.workflow
    if not workflow.is_file():
        raise InvokeAIProviderError(f"the demo workflow {workflow} is missing (run the demo from a clone)")
    model = ensure_demo_model(args.model_root, args.family)
    size = family.size if args.size is None else args.size
    values = {"model": model, "prompt": args.prompt, "seed": args.seed,
              "steps": family.steps if args.steps is None else args.steps, "width": size, "height": size}
    run_args = argparse.Namespace(file=str(workflow), set=demo_sets(workflow, values, family.inputs),
                                  artifacts=args.artifacts,
                                  model_root=args.model_root, home=args.home, dag_id=None, granularity="segment",
                                  json=False)
    return cmd_run(run_args)


def _split_sets(assignments: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, str, Any]]]:
    """``NAME=VALUE`` sets a DAG Param (run conf); ``NODE_ID.FIELD=VALUE`` edits the document itself."""
    conf: dict[str, Any] = {}
    node_sets = []
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name:
            raise InvokeAIProviderError(f"--set {assignment!r}: expected PARAM=VALUE or NODE_ID.FIELD=VALUE")
        if "." in name:
            node_sets.extend(parse_set([assignment]))
            continue
        try:
            conf[name] = json.loads(raw)
        except json.JSONDecodeError:
            conf[name] = raw
    return conf, node_sets


def _node_types(raw: Any) -> dict[str, Any]:
    """Node id -> type of a graph, a saved workflow or a batch document."""
    graph = (raw["batch"].get("graph") or {}) if isinstance(raw.get("batch"), dict) else raw
    nodes = graph.get("nodes")
    if isinstance(nodes, list):  # a saved workflow
        return {str(node.get("id")): (node.get("data") or {}).get("type") for node in nodes}
    return {str(node_id): node.get("type") for node_id, node in (nodes or {}).items() if isinstance(node, dict)}


def bind_model_sets(raw: Any, node_sets: list[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """``NODE_ID.FIELD=NAME`` on a model field becomes the registered model's identifier, as `graph run` binds
    it; other edits are kept as they are (the document's own validation judges them)."""
    from invokeai_provider.core.registry import InvocationRegistry
    from invokeai_provider.models.model_manager.binding import bind_model_value, model_fields_of

    types = _node_types(raw)
    registry = None
    bound = []
    for node_id, field, value in node_sets:
        node_type = types.get(node_id)
        if (value is not None and isinstance(node_type, str) and InvocationRegistry.has_type(node_type)
                and field in model_fields_of(node_type)):
            if registry is None:
                from invokeai_provider.models.model_manager.registry import ModelRegistry

                registry = ModelRegistry()  # [invokeai] model_root
            value = bind_model_value(node_id, node_type, field, value, registry)
        bound.append((node_id, field, value))
    return bound


def cmd_run(args: argparse.Namespace) -> int:
    """Compiles the document into a DAG and runs it once through Airflow (SQLite, local artifact store)."""
    from invokeai_provider.cluster.local_airflow import (
        migrate_database,
        patch_document,
        prepare_home,
        run_dag,
        write_dag_file,
    )
    from invokeai_provider.compiler.dags import dag_id_for, load_compiled
    from invokeai_provider.compiler.run_conf import check_run_conf

    if args.artifacts:
        os.environ["AIRFLOW__INVOKEAI__ARTIFACT_ROOT"] = args.artifacts
    if args.model_root:
        os.environ["AIRFLOW__INVOKEAI__MODEL_ROOT"] = args.model_root
    home = prepare_home(Path(args.home or os.environ.get("INVOKEAI_AIRFLOW_HOME") or ".airflow"))
    quiet_asset_warnings()  # read when Airflow is first imported
    source = Path(args.file)
    dag_id = args.dag_id or dag_id_for(source)
    conf, node_sets = _split_sets(args.set or [])
    if getattr(args, "tenant", None):
        conf["tenant"] = args.tenant  # the DAG's tenant Param: Airflow validates it before the run exists
    if node_sets:
        raw = json.loads(source.read_text())
        patched = patch_document(raw, bind_model_sets(raw, node_sets))
        source = home / "documents" / f"{dag_id}.json"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(json.dumps(patched, indent=1))
    compiled = load_compiled(source, granularity=args.granularity)  # a broken document fails here, clearly
    schemas = _param_schemas(compiled)
    try:  # what each compiled task would refuse (Airflow accepts any key)
        check_run_conf(conf, schemas)
    except RunConfError as exc:
        raise RunConfError(f"{exc} (--set NAME=VALUE sets a Param, NODE_ID.FIELD=VALUE a node's input)") from None
    try:  # one line naming the Param, before Airflow (which would print the whole schema) is started
        check_conf(schemas, conf)
    except ParamValueError as exc:
        raise ParamValueError(f"DAG {dag_id!r}: no run was started: {exc}") from None
    write_dag_file(home, source, dag_id, args.granularity)
    migrate_database(home)
    print(f"running DAG {dag_id!r} through Airflow (home {home})", file=sys.stderr)
    with _stdout_to_stderr(), tasks_run_on_their_queue():  # Airflow logs to stdout; stdout is for the result
        try:
            result = run_dag(home, dag_id, conf)
        except InvokeAIProviderError as exc:  # Airflow's refusal ends with the whole schema: keep its first part
            raise InvokeAIProviderError(str(exc).split("\n\n", 1)[0]) from None
    print_run(result, as_json=args.json, out=sys.stdout, err=sys.stderr)
    return 0 if result.state == "success" else 1


def _param_schemas(compiled: Any) -> dict[str, Any]:
    """The DAG's Params by name, as Airflow validates them: the workflow's, then ``tenant``."""
    from invokeai_provider.compiler.tenant_param import tenant_schema
    from invokeai_provider.config import settings
    from invokeai_provider.execution.tenants import TENANT_PARAM

    return {**{spec.name: spec.schema for spec in compiled.param_specs},
            TENANT_PARAM: tenant_schema(settings().default_tenant)}


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Sends everything written to file descriptor 1 (including by child loggers) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``demo`` and ``run``."""
    demo = sub.add_parser("demo", help="text to image through Airflow with a tiny model built on this machine")
    demo.add_argument("--family", choices=sorted(DEMO_FAMILIES), default="sd15",
                      help="sd15: dags/workflows/sd15-text-to-image.json with tiny-sd15; sdxl: "
                           "sdxl-text-to-image.json with tiny-sdxl; flux: flux-text-to-image.json with tiny-flux; "
                           "sd3: sd3-text-to-image.json with tiny-sd3; cogview4: cogview4-text-to-image.json with "
                           "tiny-cogview4; flux2-klein: flux2-klein-text-to-image.json with tiny-flux2; flux2-dev: "
                           "flux2-dev-text-to-image.json with tiny-flux2-dev; z-image: "
                           "z-image-text-to-image.json with tiny-z-image (default: sd15)")
    demo.add_argument("--prompt", default="a lighthouse on a cliff at sunset, oil painting")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--steps", type=int, help="denoising steps (default: 12 for sd15, 4 for sdxl, flux, sd3 and "
                                                "cogview4)")
    demo.add_argument("--size", type=int, help="width and height in pixels, a multiple of 8, of 16 for flux and "
                                               "sd3, of 32 for cogview4 (default: 128, 64 for flux, sd3 and "
                                               "cogview4)")
    demo.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    demo.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")
    demo.add_argument("--home", metavar="DIR", help="Airflow home for the embedded run (default: ./.airflow)")
    demo.set_defaults(func=cmd_demo)

    run_cmd = sub.add_parser("run", help="compile a graph or workflow into a DAG and run it once through Airflow")
    run_cmd.add_argument("file", help="graph or workflow JSON file")
    run_cmd.add_argument("--set", action="append", metavar="PARAM=VALUE",
                         help="a DAG Param (trigger form field) for the run conf, or NODE_ID.FIELD=VALUE to edit the "
                              "document; VALUE is parsed as JSON when possible; repeatable")
    run_cmd.add_argument("--dag-id", help="DAG id (default: the file name)")
    run_cmd.add_argument("--granularity", choices=("segment", "node"), default="segment")
    run_cmd.add_argument("--home", metavar="DIR", help="Airflow home (default: $INVOKEAI_AIRFLOW_HOME or ./.airflow)")
    run_cmd.add_argument("--artifacts", metavar="URI", help="artifact root (default: [invokeai] artifact_root)")
    run_cmd.add_argument("--model-root", metavar="URI", help="model root (default: [invokeai] model_root)")
    run_cmd.add_argument("--json", action="store_true", help="print the whole run (tasks, records, asset events)")
    run_cmd.add_argument("--tenant", help="the run's tenant Param: its storage prefix (default: [invokeai] "
                                          "default_tenant)")
    run_cmd.set_defaults(func=cmd_run)
