"""A FLUX workflow on the local cluster: the example FLUX text-to-image DAG, with the tiny FLUX model installed into
the cluster's S3 model root as `demo --family flux` installs it, triggered over REST; its segment runs on the gpu
worker's runtime, the image lands in S3 with InvokeAI's metadata."""

from __future__ import annotations

from cluster_client import ClusterClient, run_example_on_gpu_runtime

DAG = "flux-text-to-image"


def test_flux_text_to_image_runs_on_the_gpu_worker(cluster: ClusterClient) -> None:
    conf = {"prompt": "a red fox in the snow", "seed": 5, "steps": 2, "width": 64, "height": 64, "tenant": "acme"}
    metadata = run_example_on_gpu_runtime(cluster, "flux", DAG, conf)
    assert metadata["seed"] == 5 and metadata["positive_prompt"] == "a red fox in the snow"
