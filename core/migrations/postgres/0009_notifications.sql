-- control plane (public schema only; see core.postgres.CONTROL_MARK)
-- Notifications (policy/notifications.py): subscriptions that send a tenant's events to a
-- destination integration, the record of each delivery, and each destination's health.

CREATE TABLE notification_subscriptions (
    subscription_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    integration_id text NOT NULL REFERENCES integrations (integration_id) ON DELETE CASCADE,
    display_name text NOT NULL,
    -- event_types, tags, asset_types, qualified_name_prefix, min_severity
    filter jsonb NOT NULL,
    template text NOT NULL,
    paused boolean NOT NULL,
    -- the last pause: events between the two are not sent
    paused_at timestamptz,
    resumed_at timestamptz,
    max_attempts integer NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX notification_subscriptions_tenant
    ON notification_subscriptions (tenant_id, subscription_id);

-- A delivery outlives its subscription (what was sent stays on record).
CREATE TABLE notification_deliveries (
    delivery_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    subscription_id text NOT NULL,
    integration_id text NOT NULL,
    event_type text NOT NULL,
    asset_id text NOT NULL,
    status text NOT NULL,
    generation integer NOT NULL,
    attempts integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- the rest of the record (event ids, title, the destination's answer, ...)
    body jsonb NOT NULL,
    -- the notification as sent (adapters.spec.Notification, JSON)
    notification bytea NOT NULL
);
CREATE INDEX notification_deliveries_tenant
    ON notification_deliveries (tenant_id, created_at DESC, delivery_id DESC);
CREATE INDEX notification_deliveries_subscription
    ON notification_deliveries (tenant_id, subscription_id, status, created_at);

CREATE TABLE notification_destinations (
    integration_id text PRIMARY KEY REFERENCES integrations (integration_id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    healthy boolean NOT NULL,
    consecutive_failures integer NOT NULL,
    unhealthy_since timestamptz,
    last_error text NOT NULL,
    last_success_at timestamptz,
    updated_at timestamptz NOT NULL
);
