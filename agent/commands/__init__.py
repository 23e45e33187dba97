"""One module per family of `fabpass` commands; each command calls into the library."""
