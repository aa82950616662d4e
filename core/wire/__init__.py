"""Shared wire code: what every gRPC service of Lily does with lily.v1 messages.

- context: who the call is from (its principal, tenant and write context);
- validation: input limits and checks, as google.rpc.BadRequest field violations;
- common: common.proto messages <-> domain types;
- status: Lily's errors as google.rpc.Status, for every RPC (the interceptor).

Each service converts its own messages in its mapping.py (core/metadata, core/lineage,
policy/) on top of these."""
