"""Transport security and access control (docs/security.md): TLS, authentication, authorization, rate limits,
audit. Imports only ``server.core`` and ``server.telemetry``; ``server/app.py`` and ``server/cli`` wire it."""
