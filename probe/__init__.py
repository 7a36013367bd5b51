"""kalshi-probe: asks a real Kalshi exchange, read-only and in under a minute, every question the
protocol leaves open (``docs/protocol.md`` §9), and writes the answers with the raw frames that
show them.

``script`` (the fixed conversation, sans-I/O) -> ``runner`` (asyncio shell: sockets, deadlines,
pacing) -> ``transcript`` (every frame) -> ``answers`` (each question derived from the frames) ->
``report`` (JSON + table). ``simulator.profile`` maps a report back to simulator switches.
"""
