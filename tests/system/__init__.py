"""
The real-process tests: each starts something outside the test's own
process (twistd or twist, HAProxy, systemd-socket-activate, podman, xinetd,
the benchmark's load generators, pip and build, sphinx-build) and talks to
it over loopback or the network namespaces it makes, every wait bounded.
The unit tests, in memory, are the modules directly under C{tests/}.
"""
