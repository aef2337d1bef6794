//! Which secrets a sweep looks at, and whose they are (SPEC section 12,
//! "ours only, however listed").
//!
//! Two listings, each secret in one of them: every secret under the retrain
//! prefix, and every secret tagged `managed-by=p1-key-broker` outside it (a
//! negated name filter, so a fleet under the prefix is not listed twice);
//! then the configured train and deploy targets that neither listed. Every
//! one, however found, is checked for ownership before it is read: a
//! `p1:secret_key_secret` tag naming another secret key is another stack's
//! (`foreign`). A secret marked `p1:renewal-stopped` is `stopped`, and one
//! that Secrets Manager rotates is left to its rotation; neither is read.
//!
//! The listing hands what it found to the reads in batches of 20 as it goes
//! (a channel), so that a fleet's reads overlap its listing; a listing cut
//! short by the deadline or a throttled page keeps what it found.

use std::collections::HashSet;

use tokio::sync::mpsc::Sender;

use super::super::{Broker, MANAGED_TAG, OWNER_TAG, Ports, STOPPED_TAG};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::secret_id;
use crate::secrets::{ListFilter, ListedSecret, SecretStore, StoreError};

/// BatchGetSecretValue's most ids per call: the size of a batch handed on.
pub(super) const READ_BATCH: usize = 20;

/// A secret to read: how to name it, and what it is called.
#[derive(Debug, Clone)]
pub(super) struct Managed {
    /// Its ARN when listed, else the configured id.
    pub id: String,
    pub name: String,
}

/// What the listing found besides the secrets it handed on.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// Secrets Manager rotates them: their rotation renews them.
    pub rotated: Vec<String>,
    /// Another stack's (another secret key): never read or written.
    pub foreign: Vec<String>,
    /// (name, mark) of the secrets whose renewal stopped for good.
    pub stopped: Vec<(String, String)>,
    /// Every secret handed on to be read.
    pub handed_on: usize,
    /// False when the deadline or a failing page cut the listing short.
    pub complete: bool,
    /// ListSecrets pages received.
    pub pages: usize,
}

/// How one listed secret is taken.
enum Verdict {
    Read,
    Rotated,
    Foreign,
    Stopped(String),
    Skip,
}

impl<P: Ports> Broker<P> {
    /// Lists the managed secrets and hands them on to `reads`, 20 at a
    /// time, within `phase`. Fails only when a listing is refused outright
    /// (no permission, a bad filter); a slow or throttled page ends the
    /// listing with what it has.
    pub(super) async fn list_managed(
        &self,
        reads: Sender<Vec<Managed>>,
        phase: &Deadline,
    ) -> Result<Listing, Error> {
        let prefix = self.config.retrain_secret_prefix.clone();
        let mut out = Listing {
            complete: true,
            ..Listing::default()
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut batch: Vec<Managed> = Vec::new();
        let filters = [
            ListFilter {
                name_prefix: Some(prefix.clone()),
                ..ListFilter::default()
            },
            ListFilter {
                tag: Some((MANAGED_TAG.0.into(), MANAGED_TAG.1.into())),
                exclude_name_prefix: Some(prefix.clone()),
                ..ListFilter::default()
            },
        ];
        'listing: for filter in &filters {
            let mut next: Option<String> = None;
            loop {
                if !phase.can_start() {
                    out.complete = false;
                    break 'listing;
                }
                let page = match phase.work(self.store.list(filter, next.as_deref())).await {
                    Ok(page) => page,
                    Err(e) if transient(&e) => {
                        tracing::warn!(error = %e, "sweep: listing cut short; what was listed is swept, the rest waits for the next sweep");
                        out.complete = false;
                        break 'listing;
                    }
                    Err(e) => return Err(super::cannot("list the managed secrets", e)),
                };
                out.pages += 1;
                for s in page.secrets {
                    // ListSecrets matches loosely (case, prefixes of tags):
                    // keep what is exactly this listing's.
                    let exact = match &filter.tag {
                        Some((k, v)) => s.tags.get(k) == Some(v) && !s.name.starts_with(&prefix),
                        None => s.name.starts_with(&prefix),
                    };
                    if !exact || !seen.insert(s.arn.clone()) {
                        continue;
                    }
                    self.take(&s, &mut out, &mut batch, &reads).await;
                }
                next = page.next_token;
                if next.is_none() {
                    break;
                }
            }
        }
        // The configured targets neither listing found (created by someone
        // else, untagged): DescribeSecret tells their rotation and tags.
        for target in [&self.config.train_secret_id, &self.config.deploy_secret_id] {
            if seen.iter().any(|arn| secret_id::same_secret(target, arn)) || !phase.can_start() {
                continue;
            }
            match phase.work(self.store.describe(target)).await {
                Ok(d) if seen.contains(&d.arn) => {}
                Ok(d) => {
                    seen.insert(d.arn.clone());
                    let listed = ListedSecret {
                        arn: d.arn,
                        name: secret_id::name_of(target).to_string(),
                        tags: d.tags,
                        rotation_enabled: d.rotation_enabled,
                    };
                    self.take(&listed, &mut out, &mut batch, &reads).await;
                }
                Err(StoreError::NotFound(_)) => {}
                Err(e) if transient(&e) => out.complete = false,
                Err(e) => return Err(super::cannot("describe a configured target", e)),
            }
        }
        if !batch.is_empty() {
            out.handed_on += batch.len();
            let _ = reads.send(batch).await;
        }
        if !out.rotated.is_empty() {
            tracing::info!(
                rotated = out.rotated.len(),
                "sweep: secrets that Secrets Manager rotates are left to their rotation"
            );
        }
        Ok(out)
    }

    /// Sorts one listed secret: read it (handed on in batches of 20), or
    /// leave it (rotated, another stack's, stopped, the secret key).
    async fn take(
        &self,
        s: &ListedSecret,
        out: &mut Listing,
        batch: &mut Vec<Managed>,
        reads: &Sender<Vec<Managed>>,
    ) {
        match self.verdict(s) {
            Verdict::Skip => {}
            Verdict::Rotated => out.rotated.push(s.arn.clone()),
            Verdict::Foreign => out.foreign.push(s.name.clone()),
            Verdict::Stopped(mark) => out.stopped.push((s.name.clone(), mark)),
            Verdict::Read => {
                batch.push(Managed {
                    id: s.arn.clone(),
                    name: s.name.clone(),
                });
                if batch.len() == READ_BATCH {
                    out.handed_on += batch.len();
                    // The reads stopped early (out of time): nothing to do.
                    let _ = reads.send(std::mem::take(batch)).await;
                }
            }
        }
    }

    fn verdict(&self, s: &ListedSecret) -> Verdict {
        // Never the secret key, whatever lists it.
        if self.config.is_secret_key_secret(&s.arn) || self.config.is_secret_key_secret(&s.name) {
            return Verdict::Skip;
        }
        // Whose first: another stack's secret is not even read.
        if s.tags
            .get(OWNER_TAG)
            .is_some_and(|o| *o != self.config.owner_tag_value())
        {
            return Verdict::Foreign;
        }
        // Secrets Manager's own rotation renews it: one renewer each.
        if s.rotation_enabled {
            return Verdict::Rotated;
        }
        match s.tags.get(STOPPED_TAG) {
            Some(mark) => Verdict::Stopped(mark.clone()),
            None => Verdict::Read,
        }
    }
}

/// A failure that the next page, or the next sweep, may not meet: the
/// sweep goes on with what it has.
pub(super) fn transient(e: &StoreError) -> bool {
    e.outcome_unknown() || matches!(e, StoreError::Throttled(_))
}
