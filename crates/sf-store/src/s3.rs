//! `s3://bucket/prefix` through aws-sdk-s3.
//!
//! Conditions are the server's: `If-None-Match: *` for create-only writes and `If-Match` for
//! compare-and-swap (both answered with 412, or 409 when two conditional writes race; either means
//! "not written, read again"). Each write sends the sha256 as the full-object checksum
//! (`x-amz-checksum-sha256`), which S3 verifies before the object becomes visible, and stores it as
//! `x-amz-meta-sha256` so a later publish can skip unchanged content with one HEAD.
//!
//! Files from [`Transfer::multipart_threshold`] up go as multipart uploads: parts streamed from
//! disk and sent concurrently (memory does not grow with part size or file size), each with its
//! CRC64NVME, and the whole object's CRC64NVME (combined from the parts') given at completion as a
//! full-object checksum the server checks against what it assembled. Conditions apply to the
//! completion. Any failure aborts the upload, so no parts are left behind and nothing becomes
//! visible. A run killed mid-upload cannot abort its own: the next upload of the same key does,
//! once the key holds its object (see `abort_older`).

use anyhow::{anyhow, Context, Result};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::Client;

use sf_aws::{sdk_error_text, AwsSettings};
use sf_core::exit::bad_input;
use sf_core::layout::Destination;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};

use crate::{
    base64, Body, Condition, ETag, Gate, Listed, Object, ObjectInfo, PutMeta, PutOutcome,
    SHA256_METADATA,
};

/// How large files are moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Files of this size and larger go as multipart uploads.
    pub multipart_threshold: u64,
    /// Bytes per part (S3 needs at least 5 MiB for all but the last, at most 10,000 parts).
    pub part_size: u64,
    /// Parts in flight at once.
    pub concurrency: usize,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            concurrency: 8,
        }
    }
}

/// Read size when streaming a part from disk.
const PART_READ_BUFFER: usize = 256 << 10;

/// S3's bounds on parts.
const MIN_PART: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    transfer: Transfer,
    /// Bytes the server has taken so far (whole objects and multipart parts), for progress.
    sent: Arc<AtomicU64>,
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
            transfer: Transfer::default(),
            sent: Arc::default(),
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
            transfer: Transfer::default(),
            sent: Arc::default(),
        }
    }

    /// Use other multipart settings.
    pub fn with_transfer(mut self, transfer: Transfer) -> Self {
        self.transfer = transfer;
        self
    }

    /// Bytes sent so far by this store and its clones.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
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
                sdk_error_text(&e)
            ))),
            Err(e) => Err(anyhow!(
                "checking bucket {:?}: {}",
                self.bucket,
                sdk_error_text(&e)
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
            Err(e) => Err(anyhow!("HEAD: {}", sdk_error_text(&e))),
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
            Err(e) => return Err(anyhow!("GET: {}", sdk_error_text(&e))),
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

    /// See [`crate::Store::read_range`]: a ranged GET under `If-Match`.
    pub async fn read_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        etag: &ETag,
    ) -> Result<Option<Vec<u8>>> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .if_match(&etag.0)
            .send()
            .await;
        match got {
            Ok(o) => Ok(Some(
                o.body
                    .collect()
                    .await
                    .context("reading the object body")?
                    .into_bytes()
                    .to_vec(),
            )),
            // 412: another ETag; 416: the object is shorter now.
            Err(e) if matches!(status(&e), Some(412 | 416)) => Ok(None),
            Err(e) => Err(anyhow!("GET: {}", sdk_error_text(&e))),
        }
    }

    pub async fn put(
        &self,
        key: &str,
        body: Body,
        meta: &PutMeta,
        cond: &Condition,
        gate: Option<Gate>,
    ) -> Result<PutOutcome> {
        let sha = hex::decode(&meta.sha256)
            .map_err(|_| anyhow!("sha256 {:?} is not hex", meta.sha256))?;
        if let Body::File(p) = &body {
            let len = std::fs::metadata(p)
                .with_context(|| format!("reading {}", p.display()))?
                .len();
            if len >= self.transfer.multipart_threshold {
                return self.put_multipart(key, p, len, meta, cond, gate).await;
            }
        }
        // A single PUT is visible the moment it succeeds: it waits for the gate before it starts.
        if let Some(g) = &gate {
            g.pass().await?;
        }
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
        let sent = req.send().await;
        if sent.is_ok() {
            self.sent.fetch_add(len as u64, Ordering::Relaxed);
        }
        match sent {
            Ok(o) => Ok(PutOutcome::Written(ETag(
                o.e_tag().unwrap_or_default().to_string(),
            ))),
            Err(e) if matches!(status(&e), Some(412) | Some(409)) && *cond != Condition::Always => {
                Ok(PutOutcome::PreconditionFailed)
            }
            Err(e) => Err(anyhow!("PUT: {}", sdk_error_text(&e))),
        }
    }

    /// A multipart upload of a file; aborted on any failure.
    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        len: u64,
        meta: &PutMeta,
        cond: &Condition,
        gate: Option<Gate>,
    ) -> Result<PutOutcome> {
        let full = self.full(key);
        // Parts grow past the configured size when the file would need more than S3's 10,000.
        let part_size = self
            .transfer
            .part_size
            .max(MIN_PART)
            .max(len.div_ceil(MAX_PARTS));
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .content_type(&meta.content_type)
            .cache_control(&meta.cache_control)
            .metadata(SHA256_METADATA, &meta.sha256)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .map_err(|e| anyhow!("starting a multipart upload: {}", sdk_error_text(&e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| anyhow!("the server gave no upload id"))?
            .to_string();
        let result = self
            .send_parts(&full, &upload_id, path, len, part_size, meta, cond, gate)
            .await;
        match result {
            Ok(PutOutcome::Written(etag)) => Ok(PutOutcome::Written(etag)),
            other => {
                // Whatever went wrong, leave no parts behind (they cost money and never expire).
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(e) = aborted {
                    let msg = format!(
                        "aborting multipart upload {upload_id} of {full}: {}",
                        sdk_error_text(&e)
                    );
                    return Err(match other {
                        Err(orig) => orig.context(msg),
                        Ok(_) => anyhow!(msg),
                    });
                }
                other
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        full: &str,
        upload_id: &str,
        path: &Path,
        len: u64,
        part_size: u64,
        meta: &PutMeta,
        cond: &Condition,
        gate: Option<Gate>,
    ) -> Result<PutOutcome> {
        let parts = len.div_ceil(part_size).max(1);
        let sem = Arc::new(tokio::sync::Semaphore::new(
            self.transfer.concurrency.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        for n in 0..parts {
            let permit = sem.clone().acquire_owned().await?;
            let (client, bucket, key, id, path, sent) = (
                self.client.clone(),
                self.bucket.clone(),
                full.to_string(),
                upload_id.to_string(),
                path.to_path_buf(),
                self.sent.clone(),
            );
            tasks.spawn(async move {
                let offset = n * part_size;
                let size = part_size.min(len - offset);
                // Streamed from the file, not held in memory: buffered parts cost far more than
                // part size x concurrency once freed buffers piled up in the allocator, and the
                // SDK hashed an in-memory body once more for the signature (a streamed one is
                // sent as UNSIGNED-PAYLOAD; the part's CRC64NVME, checked by the server, covers it).
                let p = path.clone();
                let crc = tokio::task::spawn_blocking(move || crc64_of(&p, offset, size)).await??;
                let body = ByteStream::read_from()
                    .path(&path)
                    .offset(offset)
                    .length(Length::Exact(size))
                    .buffer_size(PART_READ_BUFFER)
                    .build()
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(n as i32 + 1)
                    .content_length(size as i64)
                    .checksum_crc64_nvme(base64(&crc.to_be_bytes()))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow!(
                            "uploading part {} of {}: {}",
                            n + 1,
                            path.display(),
                            sdk_error_text(&e)
                        )
                    })?;
                sent.fetch_add(size, Ordering::Relaxed);
                drop(permit);
                Ok::<_, anyhow::Error>((
                    CompletedPart::builder()
                        .part_number(n as i32 + 1)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_string))
                        .build(),
                    crc,
                    size,
                ))
            });
            // Collect finished parts as we go, and stop launching as soon as one failed.
            while let Some(part) = tasks.try_join_next() {
                done.push(part??);
            }
        }
        while let Some(part) = tasks.join_next().await {
            done.push(part??);
        }
        // Every part is there; the upload becomes the object only once its checks passed (the
        // caller aborts it otherwise).
        if let Some(g) = &gate {
            g.pass().await?;
        }
        done.sort_by_key(|(p, _, _)| p.part_number());
        // The whole object's CRC64NVME, from the parts' CRCs (no second read of the file).
        let whole = combine_crc64(done.iter().map(|&(_, crc, size)| (crc, size)));
        let done: Vec<CompletedPart> = done.into_iter().map(|(p, _, _)| p).collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc64_nvme(base64(&whole.to_be_bytes()))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            );
        req = match cond {
            Condition::Always => req,
            Condition::CreateOnly => req.if_none_match("*"),
            Condition::IfMatch(e) => req.if_match(&e.0),
        };
        // Ours is still open here, so its place in the listing says which uploads of this key
        // are older (see `older_uploads`).
        let older = self.older_uploads(full, upload_id).await;
        match req.send().await {
            Ok(o) => {
                self.abort_older(full, older).await;
                Ok(PutOutcome::Written(ETag(
                    o.e_tag().unwrap_or_default().to_string(),
                )))
            }
            Err(e) => {
                // The completion may have happened though this answer says otherwise: a retried
                // completion (its first answer lost) meets the object it made itself and fails its
                // condition, or the answer is lost or unreadable (a dropped connection; some
                // S3-compatible servers answer with another XML root). The object says whose it
                // is, by its size and our sha256.
                let refused =
                    matches!(status(&e), Some(412) | Some(409)) && *cond != Condition::Always;
                match self.object_at(full, len, meta).await {
                    Some((etag, true)) => {
                        self.abort_older(full, older).await;
                        // The same content may also be another publisher's, our upload still
                        // open: abort it (when it was ours that completed, nothing is found).
                        self.abort_quietly(full, [upload_id.to_string()]).await;
                        Ok(PutOutcome::Written(etag))
                    }
                    // Another's object holds the key: nothing was written (the caller aborts
                    // our upload).
                    Some((_, false)) if refused => {
                        self.abort_older(full, older).await;
                        Ok(PutOutcome::PreconditionFailed)
                    }
                    // A 409 (a racing conditional write not finished yet) or no answer: not
                    // written by us, as far as we can tell.
                    None if refused => Ok(PutOutcome::PreconditionFailed),
                    _ => Err(anyhow!(
                        "completing the multipart upload: {}",
                        sdk_error_text(&e)
                    )),
                }
            }
        }
    }

    /// The object at `full`, when there is one (a failed HEAD counts as none): its ETag, and
    /// whether it holds our content, by its size and our sha256.
    async fn object_at(&self, full: &str, len: u64, meta: &PutMeta) -> Option<(ETag, bool)> {
        let h = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .ok()?;
        let ours = h.content_length() == Some(len as i64)
            && h.metadata().and_then(|m| m.get(SHA256_METADATA)) == Some(&meta.sha256);
        Some((ETag(h.e_tag().unwrap_or_default().to_string()), ours))
    }

    /// The open multipart uploads of exactly `full` started before ours (`upload_id`, still
    /// open): S3 lists one key's uploads in the order they were started, so those listed before
    /// ours are older, whatever the clocks say (servers may give coarse or fixed `Initiated`
    /// times). A listing that fails is the error to warn about later; it never fails the write.
    async fn older_uploads(&self, full: &str, upload_id: &str) -> Result<Vec<String>> {
        // The prefix is the whole key: only this key's uploads and those of longer keys come,
        // and the latter are dropped by the exact match below.
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut ids = Vec::new();
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(full)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| {
                    anyhow!(
                        "listing the open multipart uploads of {full}: {}",
                        sdk_error_text(&e)
                    )
                })?;
            for u in page.uploads() {
                if u.key() != Some(full) {
                    continue;
                }
                match u.upload_id() {
                    Some(id) if id == upload_id => return Ok(ids),
                    Some(id) => ids.push(id.to_string()),
                    None => {}
                }
            }
            if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
        // Ours was not listed (a server that lists no uploads): no order to go by, abort nothing.
        Ok(Vec::new())
    }

    /// Once the key holds its object, abort the older uploads of it: parts left by runs that were
    /// killed mid-upload (nothing else ever aborts those, and they are billed until then) or by
    /// publishers that lost the race for the same key (their completion could only fail or
    /// replace the object with an older start). Best effort: the bucket's lifecycle rule
    /// (AbortIncompleteMultipartUpload, docs/s3-bucket.md) is the backstop, so a failure here is
    /// a warning, not a failed write.
    async fn abort_older(&self, full: &str, older: Result<Vec<String>>) {
        let ids = match older {
            Ok(ids) => ids,
            Err(e) => {
                eprintln!("warning: {e:#}; the bucket's lifecycle rule will abort any left open");
                return;
            }
        };
        self.abort_quietly(full, ids).await;
    }

    /// Abort uploads of `full` that may be gone already (finished, or aborted by their own
    /// publisher meanwhile); failures are warnings, for the same reason as in `abort_older`.
    async fn abort_quietly(&self, full: &str, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&id)
                .send()
                .await;
            match aborted {
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => eprintln!(
                    "warning: aborting the multipart upload {id} of {full}: {}; the bucket's lifecycle rule will abort it",
                    sdk_error_text(&e)
                ),
                Ok(_) => {}
            }
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
            let page = page.map_err(|e| anyhow!("LIST: {}", sdk_error_text(&e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if k.len() > strip {
                        out.push(Listed {
                            key: k[strip..].to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            modified: o
                                .last_modified()
                                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The CRC64NVME of consecutive pieces, from each piece's CRC64NVME and length, in order.
fn combine_crc64(pieces: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    use crc_fast::CrcAlgorithm::Crc64Nvme;
    pieces
        .into_iter()
        .fold(crc_fast::checksum(Crc64Nvme, &[]), |acc, (crc, len)| {
            crc_fast::checksum_combine(Crc64Nvme, acc, crc, len)
        })
}

/// CRC64NVME of a file range, streamed; the range must be there whole.
fn crc64_of(path: &Path, offset: u64, size: u64) -> Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = f.read(&mut buf[..left.min(1 << 20) as usize])?;
        if n == 0 {
            anyhow::bail!(
                "{} ended {left} bytes short of {}: did it change during the upload?",
                path.display(),
                offset + size
            );
        }
        d.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(d.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_crcs_combine_into_the_whole_files_crc() {
        use crc_fast::CrcAlgorithm::Crc64Nvme;
        let data: Vec<u8> = (0..100_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let part = 7_919u64;
        let pieces: Vec<(u64, u64)> = (0..(data.len() as u64).div_ceil(part))
            .map(|n| {
                let size = part.min(data.len() as u64 - n * part);
                (crc64_of(&path, n * part, size).unwrap(), size)
            })
            .collect();
        assert_eq!(combine_crc64(pieces), crc_fast::checksum(Crc64Nvme, &data));
        assert_eq!(
            combine_crc64([(crc_fast::checksum(Crc64Nvme, &data), data.len() as u64)]),
            crc_fast::checksum(Crc64Nvme, &data)
        );
        // A range past the end is an error, not a short checksum.
        let e = crc64_of(&path, 100_000, 10).unwrap_err();
        assert!(e.to_string().contains("did it change"), "{e}");
    }
}
