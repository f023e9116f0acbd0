"""A CogView4 workflow on the local cluster: the example CogView4 text-to-image DAG, with the tiny CogView4 model
installed into the cluster's S3 model root as `demo --family cogview4` installs it, triggered over REST; its
segment runs on the gpu worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

from cluster_client import ClusterClient, run_example_on_gpu_runtime

DAG = "cogview4-text-to-image"


def test_cogview4_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    conf = {"prompt": "a red fox in the snow", "negative_prompt": "blurry", "seed": 5, "steps": 2, "width": 96,
            "height": 64, "tenant": "acme"}
    metadata = run_example_on_gpu_runtime(cluster, "cogview4", DAG, conf)
    assert (metadata["seed"], metadata["positive_prompt"], metadata["negative_prompt"]) == (
        5, "a red fox in the snow", "blurry")
    assert (metadata["width"], metadata["height"], metadata["generation_mode"]) == (96, 64, "cogview4_txt2img")
