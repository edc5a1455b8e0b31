"""Command-line interface: one module per subcommand, each a few lines over the API."""
