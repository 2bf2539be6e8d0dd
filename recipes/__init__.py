"""Recipes: tasks with their corpora, training, evaluation, commands and models, outside the library.

Each recipe is a plugin package registered like a built-in (``diffuspeech.recipes.<name>``).
"""
