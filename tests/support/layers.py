"""The package's layers, bottom to top (docs/development.md's module map): a module may import
its own layer and the layers below it."""

LAYERS = ("core", "llm", "roles", "analysis", "stages", "presentation", "operations")
