"""Shared test support: the one segment builder (``segments``), the equivalence oracles
(``oracles``); nothing here is a test."""
