"""``ip_adapter_output``: what InvokeAI's IP-Adapter nodes (the SD ``ip_adapter`` and ``flux_ip_adapter``) give a
denoise, kept apart from either node so both register the one output type."""

from __future__ import annotations

from invokeai_provider.core.fields import IPAdapterField
from invokeai_provider.core.invocation import BaseInvocationOutput, OutputField, invocation_output


@invocation_output("ip_adapter_output")
class IPAdapterOutput(BaseInvocationOutput):
    """An IP-Adapter, its image prompt and how it acts."""

    ip_adapter: IPAdapterField = OutputField(description="IP-Adapter to apply", title="IP-Adapter")
