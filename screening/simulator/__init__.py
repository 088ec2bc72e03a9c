"""A faithful fake Yeastar P-Series PBX: REST API, event WebSocket and webhooks on one port.

It serves the demo, operator training and the tests, so it ships with the product; production
code never imports it. It knows nothing of pbxscreen's models: it speaks only the PBX's wire
format (``docs/pbx.md``), so it can stand in for a real PBX at ``PBX_BASE_URL``.

- ``server``: the PBX itself (``PbxSimulator``) and ``SimulatorThread`` to run it beside a test;
- ``generator``: simulated callers and what each call does while it is held;
- ``control``: the ``/_sim/`` control API (inject calls, read the request log, fault knobs).
"""

from screening.simulator.server import PbxSimulator, SimulatorThread

__all__ = ["PbxSimulator", "SimulatorThread"]
