"""An SD3.5 workflow on the local cluster: the example SD3.5 text-to-image DAG, with the tiny SD3.5 model installed
into the cluster's S3 model root as `demo --family sd3` installs it, triggered over REST; its segment runs on the gpu
worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

from cluster_client import ClusterClient, run_example_on_gpu_runtime

DAG = "sd3-text-to-image"


def test_sd3_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    conf = {"prompt": "a lighthouse in a storm", "seed": 5, "steps": 2, "cfg_scale": 4.0, "width": 48,
            "height": 48, "tenant": "acme"}
    metadata = run_example_on_gpu_runtime(cluster, "sd3", DAG, conf)
    assert {k: metadata[k] for k in ("generation_mode", "seed", "steps", "cfg_scale", "width", "height",
                                     "positive_prompt")} == {
        "generation_mode": "sd3_txt2img", "seed": 5, "steps": 2, "cfg_scale": 4.0, "width": 48, "height": 48,
        "positive_prompt": "a lighthouse in a storm"}
