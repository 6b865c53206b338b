//! Carrying out a plan on CloudFront: find an invalidation this change list already made (by its
//! caller reference: among those in progress, which are read anyway to count what is in flight;
//! a finished one CloudFront itself returns when asked to create it again), wait while the
//! distribution has too many paths or wildcards in flight (as counted, or as CloudFront answers
//! when parallel jobs filled it first), create each batch, and optionally wait for completion.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aws_sdk_cloudfront::config::http::HttpResponse;
use aws_sdk_cloudfront::error::SdkError;
use aws_sdk_cloudfront::operation::get_invalidation::{
    GetInvalidationError, GetInvalidationOutput,
};
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_sdk_cloudfront::Client;
use serde::Serialize;
use sf_aws::sdk_error_text;
use sf_core::bad_input;

use crate::plan::{Batch, MAX_PATHS_IN_FLIGHT, MAX_WILDCARDS_IN_FLIGHT};

/// How many recent invalidations are listed to count what is in flight.
const RECENT: i32 = 100;

/// One batch's invalidation.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub status: String,
    pub caller_reference: String,
    pub paths: usize,
    /// True when a previous run already created it (same caller reference).
    pub reused: bool,
}

/// Timing knobs.
#[derive(Clone, Copy, Debug)]
pub struct Waiting {
    /// Wait for every invalidation to complete before returning.
    pub wait: bool,
    pub timeout: Duration,
    pub poll: Duration,
}

/// Paths and wildcards of the distribution's invalidations in progress, one of ours if found
/// among them, and what the list showed (to tell a created invalidation from one found again).
struct Recent {
    in_flight_paths: usize,
    in_flight_wildcards: usize,
    ours: Option<(String, String)>,
    listed: HashSet<String>,
    /// Create time (seconds) of the oldest invalidation listed.
    oldest: Option<i64>,
}

impl Recent {
    /// Whether the invalidation CloudFront answered a create with existed before this run asked:
    /// CloudFront answers a caller reference it already has with that invalidation. One made
    /// now is newer than everything listed before; an existing one is listed, or older than
    /// every listed one when there were more than the list holds.
    fn existed(&self, id: &str, create_time: i64) -> bool {
        self.listed.contains(id) || self.oldest.is_some_and(|t| create_time < t)
    }
}

/// What GetInvalidation tells beyond the list: fixed once the invalidation exists, so each is
/// read once per run. Statuses come from the list, which has them for every item.
struct Details {
    caller_reference: String,
    paths: Vec<String>,
}

/// A distribution's invalidations as this run has seen them.
struct Cdn<'a> {
    client: &'a Client,
    distribution: &'a str,
    details: HashMap<String, Details>,
}

/// CloudFront says `Completed`; some S3-compatible stand-ins say `COMPLETED`.
pub fn is_completed(status: &str) -> bool {
    status.eq_ignore_ascii_case("completed")
}

/// What to say when CloudFront refuses a call for want of rights, with the rights to give.
fn denied_text<E: std::error::Error + 'static>(
    distribution: &str,
    what: &str,
    e: &SdkError<E, HttpResponse>,
) -> String {
    format!(
        "the AWS credentials may not {what} on distribution {distribution} (give the role cloudfront:ListInvalidations, GetInvalidation and CreateInvalidation): {}",
        sdk_error_text(e)
    )
}

/// A denial while deciding what to create: a set-up problem like missing credentials, exit 2.
/// (A denial while waiting for an invalidation that exists is a failure instead, see
/// [`Cdn::wait_done`]; so is any exit-2 error after this run made one, see `lib.rs`.)
fn denied<E: std::error::Error + 'static>(
    distribution: &str,
    what: &str,
    e: &SdkError<E, HttpResponse>,
) -> anyhow::Error {
    bad_input(denied_text(distribution, what, e))
}

impl Cdn<'_> {
    /// One GetInvalidation call. Its errors are left to the caller: a denial means something
    /// different before this run made its invalidation than while it waits for it.
    async fn get_invalidation(
        &self,
        id: &str,
    ) -> std::result::Result<GetInvalidationOutput, SdkError<GetInvalidationError>> {
        self.client
            .get_invalidation()
            .distribution_id(self.distribution)
            .id(id)
            .send()
            .await
    }

    async fn details(&mut self, id: &str) -> Result<Option<&Details>> {
        if !self.details.contains_key(id) {
            // Read to decide what to create: credentials that may not read invalidations are a
            // set-up problem, bad input like a denied list or create call.
            let got = self.get_invalidation(id).await.map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_access_denied()) {
                    denied(self.distribution, "read invalidations", &e)
                } else {
                    anyhow!("reading invalidation {id}: {}", sdk_error_text(&e))
                }
            })?;
            let Some(batch) = got.invalidation().and_then(|i| i.invalidation_batch()) else {
                return Ok(None);
            };
            let d = Details {
                caller_reference: batch.caller_reference().to_string(),
                paths: batch
                    .paths()
                    .map(|p| p.items().to_vec())
                    .unwrap_or_default(),
            };
            self.details.insert(id.to_string(), d);
        }
        Ok(self.details.get(id))
    }

    /// What is in flight, and ours if it is among the invalidations in progress. Details are read
    /// only for those, each at most once per run: a finished one of ours needs no search, since
    /// CloudFront answers a create with the same caller reference and paths with it. (Searching
    /// the finished ones cost up to 100 reads per run, with dozens of matrix jobs at once.)
    async fn recent(&mut self, reference: &str) -> Result<Recent> {
        let distribution = self.distribution;
        let list = self.client.list_invalidations().distribution_id(distribution).max_items(RECENT).send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_distribution()) {
                bad_input(format!("CloudFront distribution {distribution} does not exist (or these credentials cannot see it)"))
            } else if e.as_service_error().is_some_and(|s| s.is_access_denied()) {
                denied(distribution, "list invalidations", &e)
            } else {
                anyhow!("listing the invalidations of {distribution}: {}", sdk_error_text(&e))
            }
        })?;
        let mut items: Vec<(String, String, i64)> = list
            .invalidation_list()
            .map(|l| {
                l.items()
                    .iter()
                    .map(|s| {
                        (
                            s.id().to_string(),
                            s.status().to_string(),
                            s.create_time().secs(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Newest first: a retried step's invalidation is among the latest.
        items.sort_by_key(|i| std::cmp::Reverse(i.2));
        let mut r = Recent {
            in_flight_paths: 0,
            in_flight_wildcards: 0,
            ours: None,
            listed: items.iter().map(|i| i.0.clone()).collect(),
            oldest: items.iter().map(|i| i.2).min(),
        };
        for (id, status, _) in items.iter().filter(|i| !is_completed(&i.1)) {
            let Some(d) = self.details(id).await? else {
                continue;
            };
            r.in_flight_paths += d.paths.len();
            r.in_flight_wildcards += d.paths.iter().filter(|p| p.ends_with('*')).count();
            if d.caller_reference == reference && r.ours.is_none() {
                r.ours = Some((id.clone(), status.clone()));
            }
        }
        Ok(r)
    }

    /// Poll one invalidation until it completes or the deadline passes.
    async fn wait_done(&self, id: &str, deadline: Instant, poll: Duration) -> Result<String> {
        loop {
            // Every error here, a denial too, is exit 1: the invalidation exists by now (made or
            // found by this run, and named in its outputs) and goes on in CloudFront, so this is
            // a failure to watch the work, not bad input that changed nothing (exit 2).
            let got = self.get_invalidation(id).await.map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_access_denied()) {
                    anyhow!(
                        "reading invalidation {id}: {}",
                        denied_text(self.distribution, "read invalidations", &e)
                    )
                } else {
                    anyhow!("reading invalidation {id}: {}", sdk_error_text(&e))
                }
            })?;
            let status = got
                .invalidation()
                .map(|i| i.status().to_string())
                .unwrap_or_default();
            if is_completed(&status) {
                return Ok(status);
            }
            if Instant::now() + poll > deadline {
                return Err(anyhow!("invalidation {id} is still {status} at the timeout; it goes on in CloudFront, run again with a longer --timeout to wait for it"));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Create (or find again) each batch's invalidation, pushing each to `out` as soon as it exists,
/// so a timeout or failure later still reports the ones made.
pub async fn execute(
    client: &Client,
    distribution: &str,
    batches: &[Batch],
    waiting: Waiting,
    log: &dyn Fn(&str),
    out: &mut Vec<Outcome>,
) -> Result<()> {
    let deadline = Instant::now() + waiting.timeout;
    let mut cdn = Cdn {
        client,
        distribution,
        details: HashMap::new(),
    };
    for (i, batch) in batches.iter().enumerate() {
        let label = format!("batch {}/{}", i + 1, batches.len());
        let outcome = loop {
            let r = cdn.recent(&batch.caller_reference).await?;
            if let Some((id, status)) = r.ours {
                log(&format!("{label}: invalidation {id} already exists for this change list ({status}); not creating another"));
                break Outcome {
                    id,
                    status,
                    caller_reference: batch.caller_reference.clone(),
                    paths: batch.paths.len(),
                    reused: true,
                };
            }
            let fits = r.in_flight_paths + batch.paths.len() <= MAX_PATHS_IN_FLIGHT
                && r.in_flight_wildcards + batch.wildcards <= MAX_WILDCARDS_IN_FLIGHT;
            if !fits {
                if Instant::now() + waiting.poll > deadline {
                    return Err(anyhow!(
                        "{label}: {distribution} still has {} paths and {} wildcards in flight at the timeout (limits {MAX_PATHS_IN_FLIGHT} / {MAX_WILDCARDS_IN_FLIGHT})",
                        r.in_flight_paths,
                        r.in_flight_wildcards
                    ));
                }
                log(&format!(
                    "{label}: waiting, {} paths and {} wildcards already in flight on {distribution}; with this batch's {} paths ({} wildcards) that would pass CloudFront's limits of {MAX_PATHS_IN_FLIGHT} and {MAX_WILDCARDS_IN_FLIGHT}",
                    r.in_flight_paths, r.in_flight_wildcards, batch.paths.len(), batch.wildcards
                ));
                tokio::time::sleep(waiting.poll).await;
                continue;
            }
            let paths = Paths::builder()
                .quantity(batch.paths.len() as i32)
                .set_items(Some(batch.paths.clone()))
                .build()
                .context("building the path list")?;
            let ib = InvalidationBatch::builder()
                .paths(paths)
                .caller_reference(&batch.caller_reference)
                .build()
                .context("building the batch")?;
            let created = match client
                .create_invalidation()
                .distribution_id(distribution)
                .invalidation_batch(ib)
                .send()
                .await
            {
                Ok(created) => created,
                // Other jobs count and create too: between our count and this call they may
                // have taken the room. Like no room yet, wait and count again.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_too_many_invalidations_in_progress()) =>
                {
                    if Instant::now() + waiting.poll > deadline {
                        return Err(anyhow!(
                            "{label}: CloudFront still refuses it at the timeout, too many invalidations in progress on {distribution}; run again later or with a longer --timeout ({})",
                            sdk_error_text(&e)
                        ));
                    }
                    log(&format!(
                        "{label}: waiting, CloudFront has too many invalidations in progress on {distribution} (other jobs took the room); trying again in {}",
                        humantime::format_duration(waiting.poll)
                    ));
                    tokio::time::sleep(waiting.poll).await;
                    continue;
                }
                Err(e) => {
                    let svc = e.as_service_error();
                    return Err(if svc.is_some_and(|s| s.is_no_such_distribution()) {
                        bad_input(format!(
                            "CloudFront distribution {distribution} does not exist"
                        ))
                    } else if svc.is_some_and(|s| s.is_access_denied()) {
                        denied(distribution, "create invalidations", &e)
                    } else if svc.is_some_and(|s| s.is_invalid_argument() || s.is_batch_too_large())
                    {
                        bad_input(format!(
                            "CloudFront refused the paths of {label}: {}",
                            sdk_error_text(&e)
                        ))
                    } else {
                        anyhow!(
                            "creating the invalidation for {label}: {}",
                            sdk_error_text(&e)
                        )
                    });
                }
            };
            let inv = created
                .invalidation()
                .ok_or_else(|| anyhow!("CloudFront's answer has no invalidation"))?;
            let reused = r.existed(inv.id(), inv.create_time().secs());
            if reused {
                log(&format!(
                    "{label}: invalidation {} already exists for this change list ({}); CloudFront returned it instead of creating another",
                    inv.id(),
                    inv.status()
                ));
            } else {
                log(&format!(
                    "{label}: invalidation {} created for {} paths ({} wildcards), {}",
                    inv.id(),
                    batch.paths.len(),
                    batch.wildcards,
                    inv.status()
                ));
            }
            // Ours from now on: no need to read it back while counting what is in flight.
            cdn.details.insert(
                inv.id().to_string(),
                Details {
                    caller_reference: batch.caller_reference.clone(),
                    paths: batch.paths.clone(),
                },
            );
            break Outcome {
                id: inv.id().to_string(),
                status: inv.status().to_string(),
                caller_reference: batch.caller_reference.clone(),
                paths: batch.paths.len(),
                reused,
            };
        };
        out.push(outcome);
        let outcome = out.last_mut().expect("just pushed");
        // Later batches wait for this one, so ours never pass the in-flight limits together.
        let last = i + 1 == batches.len();
        if (waiting.wait || !last) && !is_completed(&outcome.status) {
            if !last {
                log(&format!("{label}: waiting for {} to complete before the next batch (CloudFront's in-flight limits)", outcome.id));
            }
            outcome.status = cdn.wait_done(&outcome.id, deadline, waiting.poll).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_older_than_the_list_existed_before() {
        let r = Recent {
            in_flight_paths: 0,
            in_flight_wildcards: 0,
            ours: None,
            listed: ["I1".to_string(), "I2".to_string()].into(),
            oldest: Some(1_000),
        };
        // Listed before the create: CloudFront returned it for our caller reference.
        assert!(r.existed("I2", 1_500));
        // Past the 100 listed, older than all of them: found again too.
        assert!(r.existed("I0", 999));
        // Made now: not listed, newer than what was.
        assert!(!r.existed("I3", 2_000));
        assert!(!r.existed("I3", 1_000));
        let empty = Recent {
            listed: HashSet::new(),
            oldest: None,
            ..r
        };
        assert!(!empty.existed("I1", 0));
    }
}
