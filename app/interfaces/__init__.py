"""Interfaces: API blueprints, FHIR, pages, CLI commands, the worker, schemas and identity.

They parse, call a service and answer; they import every layer below."""
