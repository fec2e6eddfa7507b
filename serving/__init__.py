"""What the gunicorn master loads: the JSON log format, the way of listening and the worker class.

Kept outside the `app` package on purpose: the master must never import `app`, so that a HUP,
which forks fresh workers from the master, has them import every module of `app` anew from disk
(new code). Changes to this package itself need a full restart (or USR2)."""
