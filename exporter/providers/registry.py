"""The fine-tuning providers by name (`--provider openai|together|fireworks|azure`), built
from the settings: keys from their usual variables, base URLs from settings (overridable, as
tests do to reach their fakes). A missing key is a ConfigError naming the variable."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from exporter.finetune import JobProvider
from tuneloop.config import Settings
from tuneloop.errors import ConfigError

PROVIDERS = ("openai", "together", "fireworks", "azure")
SERVABLE_CHECKPOINTS = frozenset({"openai", "azure"})
"""Providers whose jobs' checkpoints are models a route can serve (`checkpoints()`); the
others raise ProviderUnsupported, so `[evaluate] checkpoints` is refused with them."""


def _secret(value: SecretStr | None, variable: str, provider: str) -> str:
    if value is None or not value.get_secret_value():
        raise ConfigError(f"--provider {provider} needs an API key: set {variable}")
    return value.get_secret_value()


def make_provider(name: str, settings: Settings) -> JobProvider:
    """The provider called `name`, ready to use."""
    if name == "openai":
        from exporter.providers.openai_ft import OpenAIFineTuning

        openai_key = settings.openai_api_key
        return OpenAIFineTuning(api_key=openai_key.get_secret_value() if openai_key else None)
    if name == "together":
        from exporter.providers.together_ft import TogetherFineTuning

        return TogetherFineTuning(_secret(settings.together_api_key, "TOGETHER_API_KEY", name),
                                  settings.together_base_url)
    if name == "fireworks":
        from exporter.providers.fireworks_ft import FireworksFineTuning

        fireworks_key = _secret(settings.fireworks_api_key, "FIREWORKS_API_KEY", name)
        if not settings.fireworks_account_id:
            raise ConfigError("--provider fireworks needs your account id: set "
                              "FIREWORKS_ACCOUNT_ID")
        return FireworksFineTuning(fireworks_key, settings.fireworks_account_id,
                                   settings.fireworks_base_url, settings.fireworks_inference_url,
                                   deploy_timeout_s=settings.fireworks_deploy_timeout_s,
                                   deploy_poll_s=settings.fireworks_deploy_poll_s)
    if name == "azure":
        from exporter.providers.azure_ft import azure_fine_tuning

        azure_key = _secret(settings.azure_openai_api_key, "AZURE_OPENAI_API_KEY", name)
        if not settings.azure_openai_endpoint:
            raise ConfigError("--provider azure needs your resource's endpoint: set "
                              "AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com)")
        return azure_fine_tuning(azure_key, settings.azure_openai_endpoint,
                                 settings.azure_openai_api_version)
    raise ConfigError(f"unknown provider {name!r}; use one of {', '.join(PROVIDERS)}")


def provider_of(record: dict[str, Any], settings: Settings,
                override: str | None = None) -> JobProvider:
    """The provider a recorded job runs at (`override` when given)."""
    return make_provider(override or str(record.get("provider") or "openai"), settings)
