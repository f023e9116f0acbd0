"""A hand-written Airflow DAG built from InvokeAI's per-node operators: SD1.5 text to image.

Where ``invokeai_workflows.py`` compiles saved workflows, this dag wires the nodes by hand, one Airflow
task per node: each operator takes its node's inputs as keyword arguments (literals, Jinja templates over
the trigger form's Params, or another task's output field such as ``loader.output["unet"]``). Model
fields take a model name; it is looked up in the model registry when the task runs. GPU nodes (prompt
encoding, denoising, decoding) go to the ``[invokeai] gpu_queue`` queue, the others to the default queue.

Templates render to strings; the node's field types turn ``"42"`` back into ``42``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from invokeai_provider.operators import (CompelOperator, CoreMetadataOperator, DenoiseLatentsOperator,
                                         LatentsToImageOperator, MainModelLoaderOperator, NoiseOperator)

CFG_SCALE = 7.5
SCHEDULER = "dpmpp_2m_k"

with DAG(
    dag_id="handwritten_text_to_image",
    description="SD1.5 text to image, one task per InvokeAI node",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["invokeai", "text2image", "sd1.5"],
    params={
        "prompt": Param("a lighthouse on a cliff at sunset, oil painting", type="string", minLength=1,
                        title="Prompt", format="multiline", section="Prompt"),
        "negative_prompt": Param("blurry, low quality", type="string", title="Negative prompt", format="multiline",
                                 section="Prompt"),
        "model": Param("tiny-sd15", type="string", minLength=1, title="Model",
                       description="Name of an installed SD1.x main model", section="Settings"),
        "seed": Param(42, type="integer", minimum=0, maximum=4294967295, title="Seed", section="Settings"),
        "steps": Param(30, type="integer", minimum=1, maximum=100, title="Steps", section="Settings"),
        "width": Param(512, type="integer", minimum=64, maximum=2048, multipleOf=8, title="Width",
                       section="Settings"),
        "height": Param(512, type="integer", minimum=64, maximum=2048, multipleOf=8, title="Height",
                        section="Settings"),
    },
    doc_md=__doc__,
) as dag:
    loader = MainModelLoaderOperator(task_id="model", model="{{ params.model }}")
    positive = CompelOperator(task_id="positive_prompt", prompt="{{ params.prompt }}", clip=loader.output["clip"])
    negative = CompelOperator(task_id="negative_prompt", prompt="{{ params.negative_prompt }}",
                              clip=loader.output["clip"])
    noise = NoiseOperator(task_id="noise", seed="{{ params.seed }}", width="{{ params.width }}",
                          height="{{ params.height }}", use_cpu=True)
    denoise = DenoiseLatentsOperator(
        task_id="denoise",
        unet=loader.output["unet"],
        positive_conditioning=positive.output["conditioning"],
        negative_conditioning=negative.output["conditioning"],
        noise=noise.output["noise"],
        steps="{{ params.steps }}",
        cfg_scale=CFG_SCALE,
        scheduler=SCHEDULER,
    )
    metadata = CoreMetadataOperator(
        task_id="metadata",
        generation_mode="txt2img",
        positive_prompt="{{ params.prompt }}",
        negative_prompt="{{ params.negative_prompt }}",
        model="{{ params.model }}",
        seed="{{ params.seed }}",
        steps="{{ params.steps }}",
        cfg_scale=CFG_SCALE,
        scheduler=SCHEDULER,
        width="{{ params.width }}",
        height="{{ params.height }}",
    )
    decode = LatentsToImageOperator(task_id="decode", latents=denoise.output["latents"], vae=loader.output["vae"],
                                    metadata=metadata.output["metadata"])
