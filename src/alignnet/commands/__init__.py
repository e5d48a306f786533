"""CLI subcommands that are thin layers over the library (explain, compare)."""
