"""`manage.py bench`: latency of the screening loop, measured over loopback against real processes.

``management/commands/bench.py`` prepares a throw-away database and runs ``worker`` in a child
process pointed at it; the worker starts the PBX simulator and a real ``manage.py serve``, connects
logged-in operator WebSockets (``clients``), drives calls through them (``scenario``) and reports
(``report``).
"""
