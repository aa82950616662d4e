"""Lily's domain: plain Python types and rules, no I/O."""
