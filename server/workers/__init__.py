"""`inferd serve --workers N`: a supervisor and N server processes sharing one port (docs/operations.md, Workers)."""
