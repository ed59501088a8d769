"""The lab: a local registry and workload, for the demo and the tests."""
