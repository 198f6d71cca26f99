"""Support triage, the second main job: ``python -m examples.support_triage --help``.

Generated tickets from three tenants; classify (a classical model), retrieve from the
tenant's knowledge base and draft a grounded, cited answer (an LLM), route by policy
(auto-send, human, deny) with personal data redacted before any model; an agent with tools
handles tickets about orders. See docs/guides/support-triage.md.
"""
