"""One module per command: compose the config, call the part that does the work, exit."""
