"""The live recorder: lifecycle-driven capture of complete Kalshi market lives."""

__version__ = "0.1.0"
