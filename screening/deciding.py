"""Carrying out a claimed decision from async code (the decide view, automatic decisions).

The PBX request runs in the PBX pool and the record in the database pool (screening/runtime.py),
so database threads never wait on the network. Once claimed, a decision is carried out even if
whoever asked goes away (a browser closing mid-request cancels the view): a claimed call left
unsent would sit *deciding* until the PBX routed it by itself.
"""

from __future__ import annotations

import asyncio

from screening import actions
from screening.models import Call
from screening.runtime import run_blocking, run_pbx, spawn


async def carry_out(call: Call) -> actions.DecideResult:
    """Send the claimed ``call``'s decision to the PBX and record the answer."""
    answer = await run_pbx(actions.ask_pbx, call, call.decision)
    return await run_blocking(actions.finish, call, answer)


async def carry_out_shielded(call: Call) -> actions.DecideResult:
    """``carry_out`` in a task of its own: cancelling the caller does not cancel it."""
    return await asyncio.shield(spawn(carry_out(call), f"decide-{call.pk}"))
