"""What travels over NATS: a task message says only "task X, generation G is ready"
(docs/architecture.md, "The invariants", 1); the database decides everything else. Subjects,
consumer names and the doorbell subject are named here."""

from __future__ import annotations

import json
from dataclasses import dataclass

from nats.aio.msg import Msg

from core.errors import InvalidInput
from core.priority import Bucket, subject_for

__all__ = [
    "DOORBELL_SUBJECT",
    "Msg",
    "Published",
    "Pulled",
    "TaskMessage",
    "consumer_name",
    "subject_of_consumer",
]

DOORBELL_SUBJECT = "switchyard.doorbell"


@dataclass(frozen=True)
class TaskMessage:
    task_id: str
    generation: int
    subject: str

    @property
    def msg_id(self) -> str:
        return f"{self.task_id}:{self.generation}"

    def encode(self) -> bytes:
        return json.dumps({"task_id": self.task_id, "generation": self.generation}).encode()

    @staticmethod
    def decode(msg: Msg) -> "TaskMessage":
        try:
            body = json.loads(msg.data)
            return TaskMessage(str(body["task_id"]), int(body["generation"]), msg.subject)
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(f"malformed task message on {msg.subject}") from None


@dataclass(frozen=True)
class Published:
    message: TaskMessage
    stream_seq: int


@dataclass(frozen=True)
class Pulled:
    messages: list[Msg]
    exhausted: bool


def consumer_name(category: str, phase: str, bucket: Bucket | str) -> str:
    return f"{category}_{phase}_{Bucket(bucket).value}"


def subject_of_consumer(name: str) -> str:
    category, phase, bucket = name.rsplit("_", 2)
    return subject_for(category, phase, bucket)


def stream_sequence(msg: Msg) -> int | None:
    """The message's sequence in the stream (None for a message that is not JetStream's)."""
    try:
        return msg.metadata.sequence.stream
    except Exception:  # no reply metadata
        return None
