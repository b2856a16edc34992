"""Provenance: which code, data and params made a version, and the safety nets around releases (registry,
lineage, preflight, release, triage, reproduce, rollback, loading a released model)."""
