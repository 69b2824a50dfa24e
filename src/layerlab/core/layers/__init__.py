"""Layer declarations, one module per group of product.md §2."""
