"""The exception tree. Library errors are translated into these where they enter."""


class Llm2MqttError(Exception):
    """Base of every error the bridge raises on purpose; the message is for a person."""


class ConfigError(Llm2MqttError):
    """Configuration or rules are invalid; `problems` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class InputError(Llm2MqttError):
    """An input payload that no rule can run: wrong shape, too large, not an image."""


class BackendError(Llm2MqttError):
    """The LLM backend failed. `transient` errors are worth retrying later."""

    transient = False


class BackendUnavailable(BackendError):
    """The backend could not be reached, timed out, or is busy: worth trying again later.

    `retry_now` is False when an immediate retry would only waste time (a timeout).
    `job_fault` says whether the fault counts as one of the job's attempts: a timeout of a
    running request does; a busy server does not.
    """

    transient = True

    def __init__(self, message: str, *, retry_now: bool = True, job_fault: bool = True) -> None:
        super().__init__(message)
        self.retry_now = retry_now
        self.job_fault = job_fault


class BackendDown(BackendUnavailable):
    """Nothing answers at the backend's address (refused, unresolvable, a proxy's 502/504).

    Never the job's fault: its jobs wait, or go to another backend, without spending attempts.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_now=False, job_fault=False)


class ModelNotFound(BackendError):
    """The rule's model is not pulled on the backend."""


class AnswerError(Llm2MqttError):
    """The model's answer does not fit the handler's schema."""
