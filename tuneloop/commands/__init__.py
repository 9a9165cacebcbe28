"""Groups of `tuneloop` subcommands, one module per area; `tuneloop.cli` registers them."""
