"""`llm2mqtt check --live` for AWS: are the queues, buckets and topics reachable?"""

import asyncio

from bridge.aws.clients import AwsClients, AwsError
from bridge.config.aws import AwsSettings
from bridge.config.rules import RuleBase


def aws_problems(settings: AwsSettings | None, rules: tuple[RuleBase, ...]) -> list[str]:
    """Reach every queue, bucket and topic the configuration names; one line per problem."""
    queues = list(settings.queues) if settings else []
    queues += [rule.mirror_to_sqs for rule in rules if rule.mirror_to_sqs]
    topics = sorted({target.topic_arn for rule in rules for target in rule.sns})
    buckets = list(settings.buckets) if settings else []
    if not (queues or topics or buckets):
        return []
    return asyncio.run(_reach(settings or AwsSettings(), queues, buckets, topics))


async def _reach(
    settings: AwsSettings, queues: list[str], buckets: list[str], topics: list[str]
) -> list[str]:
    aws = await asyncio.to_thread(AwsClients, settings)
    problems: list[str] = []
    checks = (
        [(f"SQS queue {url}", aws.sqs.get_queue_attributes, {"QueueUrl": url}) for url in queues]
        + [(f"S3 bucket {name}", aws.s3.head_bucket, {"Bucket": name}) for name in buckets]
        + [(f"SNS topic {arn}", aws.sns.get_topic_attributes, {"TopicArn": arn}) for arn in topics]
    )
    try:
        for what, method, kwargs in checks:
            try:
                await aws.call(method, **kwargs)
            except AwsError as exc:
                problems.append(f"{what} is not reachable: {exc}")
            else:
                print(f"{what}: reachable")
    finally:
        aws.close()
    return problems
