"""Annotations → JSON schema helpers (the schema of whole fields is tested through param_specs in test_params)."""

from __future__ import annotations

from invokeai_provider.compiler.param_schema import scheduler_label


def test_scheduler_labels():
    assert scheduler_label("dpmpp_2m_sde_k") == "DPM++ 2M SDE Karras"
    assert scheduler_label("kdpm_2_a") == "KDPM 2 Ancestral"
    assert scheduler_label("unipc_k") == "UniPC Karras"
