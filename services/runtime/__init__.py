"""Plumbing every service uses: settings, event store wiring, auth, logging, the HTTP app
factory. It knows no service."""
