"""A model from outside the fashionbench suite (examples/mymodel/README.md)."""
