"""Built-in plugins. Each sub-package registers its components through the public hooks."""
