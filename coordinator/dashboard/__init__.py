"""The operator's web dashboard: a client of the operator API (``oversight dashboard``).

Each signed-in user's bearer token is forwarded on every call, so the pages show and do only
what the operator API allows that credential; the dashboard holds no authority of its own.
"""
