"""Raw sources -> the lurm_lite behaviour-log contract (docs/architecture.md, section 1)."""
