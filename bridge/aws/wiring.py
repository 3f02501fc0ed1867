"""Which AWS extensions the configuration asks for."""

from typing import TYPE_CHECKING

from bridge.aws.clients import AwsContext
from bridge.aws.mirror import SqsMirror
from bridge.aws.settings import AwsSettings
from bridge.aws.sns import SnsNotifier
from bridge.aws.sqs import SqsSource
from bridge.extensions import Extension

if TYPE_CHECKING:
    from bridge.daemon import Bridge


def aws_extensions(bridge: "Bridge") -> list[Extension]:
    """SQS source, SNS notifier and SQS mirror, each only when configured; none without AWS use."""
    settings = bridge.settings.aws
    rules = bridge.rules.values()
    wants_sns = any(rule.sns for rule in rules)
    wants_mirror = any(rule.mirror_to_sqs for rule in rules)
    if settings is None and not (wants_sns or wants_mirror):
        return []
    context = AwsContext(settings or AwsSettings())
    extensions: list[Extension] = []
    # The notifier also carries SNS replies of SQS jobs, so it runs whenever queues do.
    if wants_sns or context.settings.queues:
        extensions.append(SnsNotifier(context))
    if wants_mirror:
        extensions.append(SqsMirror(context))
    if context.settings.queues:
        extensions.append(SqsSource(context))
    return extensions
