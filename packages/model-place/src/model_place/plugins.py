"""model-place's hook implementations (thin adapters over the placer functions)."""
