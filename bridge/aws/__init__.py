"""AWS: SQS as a job source, S3 images, SNS notifications and an outbound SQS mirror."""
