"""The control plane: repository, config loader, manager, registry and routing, slots, loader, shadow."""
