"""``kalshi``: one command for every job of the project (``kalshi record``, ``kalshi
materialize``, ...). Each subcommand is the very ``main`` of an existing script
(``kalshi-recorder``, ``kalshi-materialize``, ...), which keeps working unchanged; the table is
``cli.__main__.COMMANDS``.
"""
