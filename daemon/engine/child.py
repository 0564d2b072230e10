"""`python -m daemon.engine.child`: one message handled in a process of its own, under the limits
daemon.engine.isolate sets out (the parent side, Isolation, starts it and reads its one JSON line).

An entry point like the CLI, so a module of its own: it builds an App (daemon.app), and the App
is built from the engine's services, Isolation among them. The limits are set before the
daemon's modules are imported; CHILD_STARTUP pays for the imports.
"""

from __future__ import annotations

import json
import math
import pickle
import resource
import sys

import peewee

from daemon.engine.isolate import CHILD_MEMORY, Job, MessageTimeout, budget


def _limit(resource_id: int, soft: int) -> None:
    hard = resource.getrlimit(resource_id)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource_id, (soft, hard))


def main() -> int:
    """Read the job, set the limits, handle the message, write one JSON line."""
    job: Job = pickle.loads(sys.stdin.buffer.read())
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(used.ru_utime + used.ru_stime + job.budget + 1)
    _limit(resource.RLIMIT_CPU, cpu)                # SIGXCPU if the in-process budget is ever bypassed
    _limit(resource.RLIMIT_AS, CHILD_MEMORY)        # MemoryError instead of the host's OOM killer

    from daemon import log
    from daemon.app import build
    from daemon.clock import FixedClock
    from daemon.engine.apply import ConcurrentChange

    cfg = job.config
    log.setup(cfg.logging.level, cfg.logging.format, cfg.logging.file)
    app = build(cfg, clock=FixedClock(job.now))
    try:
        with budget(job.budget):
            handled = app.ingest.handle(job.item, job.raw_hash)
        answer = {"result": "done", "folder": handled.folder.value, "ref": handled.ref}
    except ConcurrentChange as exc:
        answer = {"result": "race", "error": str(exc)}
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        answer = {"result": "unavailable", "error": f"{type(exc).__name__}: {exc}"}
    except MessageTimeout as exc:
        answer = {"result": "failed", "error": str(exc)}
    except Exception as exc:  # the child's per-message boundary: report, the parent charges it
        answer = {"result": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        app.db.close()
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
