"""The agency directory: who an agency is, its kind, jurisdiction and services (HSDS in and out)."""
