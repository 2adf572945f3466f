"""One module per command; each turns options into settings and calls one core function."""
