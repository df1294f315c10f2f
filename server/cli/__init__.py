"""The `inferd` command: serve, client commands (through the SDK), generate, build."""
