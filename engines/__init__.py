"""Inference engines behind one protocol; backends are imported lazily by name."""
