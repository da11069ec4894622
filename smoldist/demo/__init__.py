"""The offline demo: a recipe, conversations and a tokenizer shipped inside the package."""
