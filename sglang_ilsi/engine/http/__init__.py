"""Request side (the HTTP server / Engine process): hooks that read the request's
plan, run the samples and tool loops, and report."""
