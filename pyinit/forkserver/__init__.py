"""The sandboxes' fork server: one per caller process and identity (client.py starts it, server.py is it,
wire.py is their messages).

A package of its own, beside sandbox/ rather than inside it: the server process imports
pyinit.forkserver.server, and importing anything under pyinit.sandbox runs pyinit/sandbox/__init__.py,
the public API, which starts a fork server of its own on import. The server must load only what a
launcher and its init load. Empty on purpose, for the same reason.
"""
