"""`manage.py soak`: the scale-out setup under load and faults for minutes, then its invariants.

``bots`` are operators that behave like the dashboard (snapshot, sequence gaps, reconnects,
decisions over HTTP); ``faults`` drives the simulator's fault knobs; ``invariants`` checks the
database against the simulator's own record; ``runner`` starts the processes and ties it together.
The tests in ``tests/e2e/test_scaleout.py`` and ``tests/e2e/test_faults.py`` reuse the bots.
"""
