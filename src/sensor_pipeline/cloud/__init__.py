"""AWS: provisioning, EMR Serverless job runs and the deploy steps of make deploy."""
