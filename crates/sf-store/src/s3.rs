//! `s3://bucket/prefix` through aws-sdk-s3.
//!
//! Conditions are the server's: `If-None-Match: *` for create-only writes and `If-Match` for
//! compare-and-swap (both answered with 412, or 409 when two conditional writes race; either means
//! "not written, read again"). Each write sends the sha256 as the full-object checksum
//! (`x-amz-checksum-sha256`), which S3 verifies before the object becomes visible, and stores it as
//! `x-amz-meta-sha256` so a later publish can skip unchanged content with one HEAD.

use anyhow::{anyhow, Context, Result};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use sf_aws::AwsSettings;
use sf_core::exit::bad_input;
use sf_core::layout::Destination;

use crate::{
    base64, Body, Condition, ETag, Listed, Object, ObjectInfo, PutMeta, PutOutcome, SHA256_METADATA,
};

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

/// The HTTP status of a failed request, when the server answered.
fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3Store {
    /// Connect, check credentials and the bucket.
    pub async fn open(bucket: &str, prefix: &str, aws: &AwsSettings) -> Result<Self> {
        let sdk = aws.load().await?;
        sf_aws::require_credentials(&sdk).await?;
        let client = aws.s3_client(&sdk);
        let store = S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        };
        store.check_bucket(aws).await?;
        Ok(store)
    }

    /// A store over an existing client (tests share one client across stores).
    pub fn with_client(client: Client, bucket: &str, prefix: &str) -> Self {
        S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn check_bucket(&self, aws: &AwsSettings) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Err(bad_input(format!(
                "bucket {:?} does not exist{}",
                self.bucket,
                aws.endpoint_url
                    .as_deref()
                    .map(|u| format!(" at {u}"))
                    .unwrap_or_default()
            ))),
            Err(e) if status(&e) == Some(403) => Err(bad_input(format!(
                "access to bucket {:?} is denied with these credentials: {}",
                self.bucket,
                DisplayErrorContext(&e)
            ))),
            Err(e) => Err(anyhow!(
                "checking bucket {:?}: {}",
                self.bucket,
                DisplayErrorContext(&e)
            )),
        }
    }

    pub fn destination(&self) -> Destination {
        Destination::S3 {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(o) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: o.content_length().unwrap_or(0).max(0) as u64,
                etag: ETag(o.e_tag().unwrap_or_default().to_string()),
                sha256: o.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned(),
                content_type: o.content_type().map(str::to_string),
                cache_control: o.cache_control().map(str::to_string),
            })),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(anyhow!("HEAD: {}", DisplayErrorContext(&e))),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Object>> {
        let o = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(anyhow!("GET: {}", DisplayErrorContext(&e))),
        };
        let info = ObjectInfo {
            key: key.to_string(),
            size: o.content_length().unwrap_or(0).max(0) as u64,
            etag: ETag(o.e_tag().unwrap_or_default().to_string()),
            sha256: o.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned(),
            content_type: o.content_type().map(str::to_string),
            cache_control: o.cache_control().map(str::to_string),
        };
        let bytes = o
            .body
            .collect()
            .await
            .context("reading the object body")?
            .into_bytes()
            .to_vec();
        Ok(Some(Object {
            info: ObjectInfo {
                size: bytes.len() as u64,
                ..info
            },
            bytes,
        }))
    }

    pub async fn put(
        &self,
        key: &str,
        body: Body,
        meta: &PutMeta,
        cond: &Condition,
    ) -> Result<PutOutcome> {
        let sha = hex::decode(&meta.sha256)
            .map_err(|_| anyhow!("sha256 {:?} is not hex", meta.sha256))?;
        let (stream, len) = match body {
            Body::Bytes(b) => {
                let len = b.len() as i64;
                (ByteStream::from(b), len)
            }
            Body::File(p) => {
                let len = std::fs::metadata(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .len() as i64;
                (
                    ByteStream::from_path(&p)
                        .await
                        .with_context(|| format!("opening {}", p.display()))?,
                    len,
                )
            }
        };
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(stream)
            .content_length(len)
            .content_type(&meta.content_type)
            .cache_control(&meta.cache_control)
            .checksum_sha256(base64(&sha))
            .metadata(SHA256_METADATA, &meta.sha256);
        req = match cond {
            Condition::Always => req,
            Condition::CreateOnly => req.if_none_match("*"),
            Condition::IfMatch(e) => req.if_match(&e.0),
        };
        match req.send().await {
            Ok(o) => Ok(PutOutcome::Written(ETag(
                o.e_tag().unwrap_or_default().to_string(),
            ))),
            Err(e) if matches!(status(&e), Some(412) | Some(409)) && *cond != Condition::Always => {
                Ok(PutOutcome::PreconditionFailed)
            }
            Err(e) => Err(anyhow!("PUT: {}", DisplayErrorContext(&e))),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let full = self.full(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| anyhow!("LIST: {}", DisplayErrorContext(&e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if k.len() > strip {
                        out.push(Listed {
                            key: k[strip..].to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
