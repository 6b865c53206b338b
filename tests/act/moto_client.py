#!/usr/bin/env python3
"""What scripts/checks/act.sh asks of the local AWS server (moto) from outside the workflow, with
boto3 (a client that is not ours): make the bucket and the CloudFront distribution the rehearsal
publishes to, then read back what landed.

    moto_client.py URL bucket NAME
    moto_client.py URL distribution BUCKET         -> prints the distribution id
    moto_client.py URL keys BUCKET                 -> every key, one a line
    moto_client.py URL get BUCKET KEY FILE
    moto_client.py URL invalidations DIST          -> every invalidated path, one a line
"""
import sys

import boto3


def client(url, service):
    # moto accepts any credentials; these never reach the workflow, which mints its own via OIDC.
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def main():
    url, cmd, *args = sys.argv[1:]
    s3 = client(url, "s3")
    if cmd == "bucket":
        s3.create_bucket(Bucket=args[0])
    elif cmd == "distribution":
        cf = client(url, "cloudfront")
        d = cf.create_distribution(DistributionConfig={
            "CallerReference": f"act-check-{args[0]}",
            "Comment": "act rehearsal",
            "Enabled": True,
            "Origins": {"Quantity": 1, "Items": [{
                "Id": "bucket", "DomainName": f"{args[0]}.s3.amazonaws.com",
                "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
            "DefaultCacheBehavior": {
                "TargetOriginId": "bucket", "ViewerProtocolPolicy": "redirect-to-https",
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0}, "MinTTL": 0},
        })
        print(d["Distribution"]["Id"])
    elif cmd == "keys":
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args[0]):
            for o in page.get("Contents", []):
                print(o["Key"])
    elif cmd == "get":
        s3.download_file(args[0], args[1], args[2])
    elif cmd == "invalidations":
        cf = client(url, "cloudfront")
        for item in cf.list_invalidations(DistributionId=args[0])["InvalidationList"].get("Items", []):
            inv = cf.get_invalidation(DistributionId=args[0], Id=item["Id"])["Invalidation"]
            for path in inv["InvalidationBatch"]["Paths"].get("Items", []):
                print(path)
    else:
        sys.exit(f"error: unknown command {cmd!r}; valid: bucket, distribution, keys, get, invalidations")


if __name__ == "__main__":
    main()
