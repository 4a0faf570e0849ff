"""Shared fixtures. Server fixtures live in tests/support/ and are imported here."""

from tests.support.elasticsearch import *  # noqa: F403
from tests.support.mqtt import *  # noqa: F403
from tests.support.nats import *  # noqa: F403
from tests.support.redis import *  # noqa: F403
from tests.support.workers_run import *  # noqa: F403
