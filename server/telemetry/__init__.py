"""Statistics (and later metrics and traces): written by the data plane, read by the API."""
