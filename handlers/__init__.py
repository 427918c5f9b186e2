"""One module per concern, each with an attach(...) function or a handler object with attach()."""
