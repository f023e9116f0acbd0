"""A Z-Image workflow on the local cluster: the example Z-Image text-to-image DAG, with the tiny Z-Image model
installed into the cluster's S3 model root as `demo --family z-image` installs it, triggered over REST; its segment
runs on the gpu worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

from cluster_client import ClusterClient, run_example_on_gpu_runtime

DAG = "z-image-text-to-image"


def test_z_image_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    conf = {"prompt": "a red fox in the snow", "seed": 5, "steps": 2, "width": 64, "height": 32, "tenant": "acme"}
    metadata = run_example_on_gpu_runtime(cluster, "z-image", DAG, conf)
    assert (metadata["seed"], metadata["positive_prompt"], metadata["steps"]) == (5, "a red fox in the snow", 2)
    assert (metadata["width"], metadata["height"], metadata["generation_mode"]) == (64, 32, "z_image_txt2img")
    assert metadata["model"]["name"] == "tiny-z-image"
