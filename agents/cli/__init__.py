"""Command-line entry points (``rims-train``, ``rims-compare``, ``rims-evaluate``, ``rims-visualize``)."""
