"""The header that names a client's session: the Ray ingress routes by it (session affinity) and
the router learns which model follows which within one (router/followers.py). Its own module so
that the light Ray ingress can read it without the server's heavier imports."""

SESSION_HEADER = "x-session-id"
