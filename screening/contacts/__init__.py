"""Contacts: who may call, from files (``import_contacts``) and from the PBX (``sync_contacts``).

A package of its own rather than part of ``screening.calls``: the call's life only *reads*
contacts (``screening.calls.context`` at intake), while filling them in is bulk work on files and
on the PBX that never runs inside a call. Both ways in share one writer (``store``), which keeps
each source's rows to itself (``Contact.source`` + ``external_id``) and writes only what changed.
"""
