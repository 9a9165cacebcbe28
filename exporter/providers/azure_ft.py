"""Azure OpenAI fine-tuning through the `openai` SDK's `AzureOpenAI` client: the same jobs
API as OpenAI, under `{endpoint}/openai/...?api-version=...` with an `api-key` header."""

from __future__ import annotations

import openai

from exporter.providers.base import JobInfo
from exporter.providers.openai_ft import OpenAIFineTuning
from exporter.providers.serving import ServedModel
from tuneloop.errors import ConfigError, ProviderUnsupported


class AzureFineTuning(OpenAIFineTuning):
    name = "azure"

    def deploy(self, job: JobInfo) -> ServedModel:
        raise ProviderUnsupported(
            f"Azure serves a fine-tuned model only once it is deployed in your resource "
            f"(Azure portal or the management API, not the data-plane API this key opens): "
            f"deploy {job.fine_tuned_model or job.id}, then promote the deployment's name with "
            f"--provider azure")


def azure_fine_tuning(api_key: str, endpoint: str, api_version: str, *,
                      timeout: float = 60.0, max_retries: int = 2) -> AzureFineTuning:
    try:
        client = openai.AzureOpenAI(api_key=api_key, azure_endpoint=endpoint,
                                    api_version=api_version, timeout=timeout,
                                    max_retries=max_retries)
    except openai.OpenAIError as exc:
        raise ConfigError(f"cannot reach Azure OpenAI fine-tuning: {exc}") from exc
    return AzureFineTuning(client)
