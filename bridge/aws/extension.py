"""The AWS feature: which of its extensions (SQS source, SNS notifier, SQS mirror) the config asks for."""

from collections.abc import Iterable

from bridge.aws.clients import AwsContext
from bridge.aws.mirror import SqsMirror
from bridge.aws.sns import SnsNotifier
from bridge.aws.sqs import SqsSource
from bridge.config.aws import AwsSettings
from bridge.config.rules import RuleBase
from bridge.extension import Extension


def aws_extensions(settings: AwsSettings | None, rules: Iterable[RuleBase]) -> list[Extension]:
    """SQS source, SNS notifier and SQS mirror, each only when configured; none without AWS use."""
    rules = list(rules)
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
