"""Memory benchmark: resident set of a web worker and of a queue worker under load."""
