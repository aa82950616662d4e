"""Generic webhooks as a destination of notifications, signed per the Standard Webhooks
specification (webhook-id, webhook-timestamp, webhook-signature), with the integration's
webhook secret (Lily makes it, whsec_...; while a rotation's grace lasts, each message is
signed with the new secret and the old, so receivers can switch at their pace)."""

from adapters.spec import AdapterType
from adapters.webhook.config import WebhookSettings
from adapters.webhook.sink import WebhookSink

ADAPTER = AdapterType(
    name="webhook",
    role="integration_notify",
    settings=WebhookSettings,
    sink=WebhookSink(),
    signs=True,
)
