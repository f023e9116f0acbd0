"""A FLUX.2 Klein workflow on the local cluster: the example FLUX.2 Klein text-to-image DAG, with the tiny Klein model
installed into the cluster's S3 model root as `demo --family flux2-klein` installs it, triggered over REST; its
segment runs on the gpu worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

from cluster_client import ClusterClient, run_example_on_gpu_runtime

DAG = "flux2-klein-text-to-image"


def test_flux2_klein_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    conf = {"prompt": "a red fox in the snow", "seed": 5, "steps": 2, "cfg_scale": 1.0, "width": 64, "height": 64,
            "tenant": "acme"}
    metadata = run_example_on_gpu_runtime(cluster, "flux2-klein", DAG, conf)
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "cfg_scale", "width", "height",
                                     "positive_prompt")} == {
        "generation_mode": "flux2_txt2img", "seed": 5, "steps": 2, "cfg_scale": 1.0, "width": 64, "height": 64,
        "positive_prompt": "a red fox in the snow"}
