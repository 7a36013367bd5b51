"""Shared test support (nothing here is a test): the one segment builder (``segments``), the
equivalence oracles (``oracles``), a loader that stops mid-load for kill tests
(``blocking_loader``), the one ``wait_for`` (``wait``), the simulator fixtures (``sim``), live
files as a crash leaves them (``live``) and the wire vocabulary of the fuzz suites (``frames``)."""
